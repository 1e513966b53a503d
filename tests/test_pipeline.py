"""The DVC pipeline: one stage set per incident, wired to the CLI, parameters from params.yaml."""

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
def test_params_yaml_is_the_quick_profile(slug):
    """params.yaml is generated from the configs (`autopsy params > params.yaml`): defaults exist once."""
    incident = registry.discover()[slug]
    quick = incident.settings().to_dict()
    assert PARAMS[slug] == quick, (
        f"params.yaml's {slug} section differs from its quick profile; regenerate it with `autopsy params > params.yaml`")
    assert incident.settings("quick", PARAMS[slug]) == incident.settings()  # and it reads back as the same config


@pytest.mark.skipif(shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists(),
                    reason="dvc is installed with the pipeline extra")
def test_dvc_reads_the_pipeline():
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    result = subprocess.run([dvc, "stage", "list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for slug in registry.discover():
        for stage in ("fetch", "run", "report"):
            assert f"{stage}@{slug}" in result.stdout
