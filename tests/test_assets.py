"""Pinned assets: verified fetch from the mirror, refusal of tampered files, atomic writes."""

import shutil

import pytest

from autopsy import assets
from autopsy.assets import Asset, AssetIntegrityError, AssetUnavailableError, fetch, sha256_of

FASTGAZE = Asset(
    name="fastgaze.vxm",
    url="https://raw.githubusercontent.com/twitter-research/image-crop-analysis/"
    "d66ad3bb3881fdbd12a27e04c3e57cc8fd772dd1/bin/fastgaze.vxm",
    sha256="b76cefc218ec8969cc62b26ad0f41111800421287e7f2725d808da1d90afbdf7",
    size=489_616, licence="Apache-2.0", citation="Theis et al. 2018", source_page="https://github.com/twitter-research/image-crop-analysis",
    mirror_path="models/fastgaze.vxm",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tampered_mirror(tmp_path, mirror, monkeypatch):
    root = tmp_path / "mirror"
    (root / "models").mkdir(parents=True)
    data = bytearray((mirror / "models/fastgaze.vxm").read_bytes())
    data[1000] ^= 0xFF
    (root / "models/fastgaze.vxm").write_bytes(data)
    monkeypatch.setenv("AUTOPSY_MIRROR", str(root))
    return root


def test_fetch_from_mirror_verifies_and_caches(cache, mirror):
    path = fetch(FASTGAZE)
    assert path == cache / "models/fastgaze.vxm"
    assert sha256_of(path) == FASTGAZE.sha256
    assert path.stat().st_size == FASTGAZE.size
    # second fetch is served by the cache, even without the mirror
    (cache / "marker").write_text("")
    assert fetch(FASTGAZE) == path


def test_tampered_mirror_file_is_refused_and_not_cached(cache, tampered_mirror):
    with pytest.raises(AssetIntegrityError) as err:
        fetch(FASTGAZE)
    message = str(err.value)
    assert "fastgaze.vxm" in message and FASTGAZE.sha256 in message
    assert sha256_of(tampered_mirror / "models/fastgaze.vxm") in message
    assert str(tampered_mirror) in message
    assert not any(p.is_file() for p in cache.rglob("*")), "nothing may be left in the cache"


def test_tampered_cache_file_is_replaced_by_a_verified_copy(cache, mirror):
    path = fetch(FASTGAZE)
    path.write_bytes(b"not the model")
    assert sha256_of(fetch(FASTGAZE)) == FASTGAZE.sha256


def test_interrupted_write_leaves_no_partial_file(cache, mirror, monkeypatch):
    def copy_half_then_die(src, dst):
        with open(src, "rb") as s, open(dst, "wb") as d:
            d.write(s.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", copy_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        fetch(FASTGAZE)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_offline_without_the_file_names_asset_url_and_both_variables(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPSY_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(AssetUnavailableError) as err:
        fetch(FASTGAZE)
    message = str(err.value)
    for needle in ("fastgaze.vxm", FASTGAZE.url, "AUTOPSY_MIRROR", "AUTOPSY_CACHE"):
        assert needle in message


def test_network_failure_is_reported_as_unavailable(cache, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOPSY_MIRROR")
    monkeypatch.delenv("AUTOPSY_OFFLINE")
    unreachable = Asset(**{**FASTGAZE.to_dict(), "url": "https://127.0.0.1:9/fastgaze.vxm"})
    with pytest.raises(AssetUnavailableError, match="download failed"):
        fetch(unreachable)
    assert not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize("field,value", [("sha256", "abc"), ("url", "http://insecure.example/x")])
def test_unpinned_or_insecure_assets_are_rejected(field, value):
    with pytest.raises(ValueError):
        Asset(**{**FASTGAZE.to_dict(), field: value})


def test_is_available_sees_mirror(cache, mirror):
    assert assets.is_available(FASTGAZE)
