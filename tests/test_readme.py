"""The README's toolkit examples run as written, in order, as one session (later ones reuse earlier names)."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TOOLKIT = README.split("## Toolkit", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"### (.+?)\n.*?```python\n(.*?)```", TOOLKIT, flags=re.DOTALL)


def test_every_tool_has_an_example():
    titles = " ".join(t for t, _ in EXAMPLES)
    for module in ("stats", "saliency", "featviz", "probes", "fairness", "counterfactual", "figures", "examine",
                   "robustness", "trained"):
        assert f"autopsy.{module}" in titles


def test_toolkit_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the figures example saves a file, as a user would
    namespace = {"__name__": "readme_example"}
    for title, code in EXAMPLES:
        exec(compile(code, f"README: {title}", "exec"), namespace)
    assert (tmp_path / "selection_rate.png").is_file()
