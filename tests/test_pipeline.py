"""The DVC pipeline: one stage set per incident, wired to the CLI, parameters from params.yaml."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autopsy import registry

REPO = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_incident_has_fetch_run_and_report_stages():
    for stage in ("fetch", "run", "report"):
        assert set(PIPELINE["stages"][stage]["foreach"]) == set(registry.discover())


def test_every_incident_has_its_parameters():
    for slug in registry.discover():
        assert slug in PARAMS


@pytest.mark.parametrize("slug", sorted(registry.discover()))
def test_params_match_the_quick_profile_defaults(slug):
    """So that `autopsy run SLUG` and `dvc repro` compute the same thing."""
    defaults = importlib.import_module(f"incidents.{slug}.investigate").DEFAULTS
    for key, value in PARAMS[slug].items():
        assert key in defaults, f"params.yaml sets {slug}.{key}, which the investigation does not read"
        assert defaults[key] == value, f"{slug}.{key}: params.yaml {value!r} vs default {defaults[key]!r}"


@pytest.mark.skipif(shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists(),
                    reason="dvc is installed with the pipeline extra")
def test_dvc_reads_the_pipeline():
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    result = subprocess.run([dvc, "stage", "list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for slug in registry.discover():
        for stage in ("fetch", "run", "report"):
            assert f"{stage}@{slug}" in result.stdout
