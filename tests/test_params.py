"""params.yaml (the DVC pipeline's parameters) and each incident's quick-profile defaults agree,
so `autopsy run SLUG` and `dvc repro` compute the same thing."""

import importlib
from pathlib import Path

import pytest
import yaml

from autopsy import registry

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


@pytest.mark.parametrize("slug", sorted(registry.discover()))
def test_params_match_the_defaults(slug):
    defaults = importlib.import_module(f"incidents.{slug}.investigate").DEFAULTS
    for key, value in PARAMS[slug].items():
        assert key in defaults, f"params.yaml sets {slug}.{key}, which the investigation does not read"
        assert defaults[key] == value, f"{slug}.{key}: params.yaml {value!r} vs default {defaults[key]!r}"
