"""Test settings: offline, a throw-away cache, and the shared mirror standing in for the network."""

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "mirror"


@pytest.fixture(scope="session", autouse=True)
def offline_lab(tmp_path_factory):
    """Every test runs offline against the mirror, with a fresh cache for the session.

    Thread pools are sized once, to the cores free when the session starts (or $AUTOPSY_THREADS),
    and every run, notebook kernel and subprocess of the session inherits that number.
    """
    from autopsy import threads

    mirror = Path(os.environ.get("AUTOPSY_MIRROR", DEFAULT_MIRROR)).resolve()  # notebooks' kernels run elsewhere
    if not (mirror / "SHA256SUMS").is_file():
        pytest.exit(f"the asset mirror was not found at {mirror}; set AUTOPSY_MIRROR", returncode=2)
    os.environ["AUTOPSY_MIRROR"] = str(mirror)
    os.environ["AUTOPSY_OFFLINE"] = "1"
    os.environ.setdefault("AUTOPSY_CACHE", str(tmp_path_factory.mktemp("autopsy-cache")))
    os.environ[threads.ENV] = str(threads.configure())
    yield mirror


@pytest.fixture(scope="session")
def mirror(offline_lab) -> Path:
    return offline_lab


@pytest.fixture(scope="session")
def smoke_run(offline_lab, tmp_path_factory):
    """``smoke_run(slug)``: one real smoke-profile run per incident per session, shared by every test."""
    from autopsy import registry, runner

    done = {}

    def get(slug: str):
        if slug not in done:
            out = tmp_path_factory.mktemp(f"smoke-{slug}")
            incident = registry.discover()[slug]
            done[slug] = (out, runner.run(incident, incident.settings("smoke"), out_root=out))
        return done[slug]

    return get
