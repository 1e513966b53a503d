"""Incident discovery, and the contract every registered incident must meet."""

import socket

import pytest

from autopsy import registry, story
from autopsy.registry import RegistryError


def test_discovery_finds_incidents_and_skips_plain_packages():
    found = registry.discover("tests.fixtures.lab_fixture")
    assert list(found) == ["alpha"]


def test_duplicate_slug_is_an_error():
    with pytest.raises(RegistryError, match="duplicate incident slug 'same'"):
        registry.discover("tests.fixtures.lab_dupes")


def test_unknown_slug_lists_known_ones():
    with pytest.raises(RegistryError, match="known incidents: alpha"):
        registry.get("nope", registry.discover("tests.fixtures.lab_fixture"))


INCIDENTS = registry.discover()


def test_the_lab_registers_its_incidents():
    assert "twitter_crop" in INCIDENTS


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a test that must be offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("slug", sorted(INCIDENTS))
def test_incident_contract(slug, no_network, tmp_path, monkeypatch):
    incident = INCIDENTS[slug]
    for profile in incident.profiles:
        for asset in incident.assets(incident.settings(profile))[:50]:
            assert asset.url.startswith("https://") and len(asset.sha256) == 64
            assert asset.licence and asset.citation and asset.source_page
    for name, pin in incident.weights.items():
        assert pin.files and pin.transforms, f"{slug}: the {name} pin must declare its input transforms"
    # every model builds with random parameters without any file: cache and mirror both empty
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOPSY_MIRROR", str(tmp_path / "mirror"))
    for name in incident.models:
        assert incident.build(name, weights=None) is not None
    parsed = story.parse(incident.story)
    assert parsed.meta["slug"] == slug
    assert {"smoke", "quick"} <= set(incident.profiles)


def test_get_imports_only_the_incident_it_names():
    from autopsy import registry

    found = registry.get("twitter_crop")
    assert found.slug == "twitter_crop" and found is registry.discover()["twitter_crop"]
    with pytest.raises(registry.RegistryError, match="no incident called 'nope'"):
        registry.get("nope")
