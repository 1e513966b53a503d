"""The contributor's guide runs as written."""

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_adding_an_incident_example_runs(tmp_path, monkeypatch):
    text = (REPO / "docs" / "adding_an_incident.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the guide lost its example"
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("AUTOPSY_INCIDENTS", "tests.fixtures.lab_fixture")
    for code in blocks:
        exec(compile(code, "adding_an_incident.md", "exec"), {})
    assert os.environ["AUTOPSY_INCIDENTS"] == "tests.fixtures.lab_fixture"


def test_the_fixture_incident_stays_small():
    lines = (REPO / "tests/fixtures/lab_fixture/alpha/__init__.py").read_text().splitlines()
    assert len(lines) < 150
