"""Story parsing, placeholder resolution and the self-contained HTML report."""

import base64
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from autopsy import story
from autopsy.story import StoryError

FIXTURE = Path(__file__).parent / "fixtures/lab_fixture/alpha/story.md"
RUN = {
    "slug": "alpha", "profile": "quick", "created": "2026-01-01T00:00:00+00:00", "lab_version": "0.1.0",
    "git_commit": None, "params": {"seed": 1},
    "provenance": [{"name": "fixture-set", "count": 3, "sha256": "ab" * 32, "url": "https://example.org/",
                    "licence": "CC0", "citation": "Nobody 2020", "source_page": "https://example.org/"}],
    "metrics": {"n_images": 540, "rate": {"value": 0.58, "low": 0.55, "high": 0.61, "n": 1000,
                                           "test": "Wilson 95%", "level": 0.95, "warning": None, "p_value": 0.001}},
    "tables": {"groups": [{"group": "A", "rate": 0.5}, {"group": "B", "rate": 0.25}]},
}


@pytest.fixture
def outputs(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(["A", "B"], [0.5, 0.25])
    fig.savefig(tmp_path / "rate.png")
    plt.close(fig)
    return tmp_path


def test_parse_reads_front_matter_and_sections():
    parsed = story.parse(FIXTURE)
    assert parsed.meta["title"] == "Alpha incident" and parsed.meta["aiid"] == 1


def test_parse_rejects_missing_section(tmp_path):
    bad = tmp_path / "story.md"
    bad.write_text(FIXTURE.read_text().replace("## Limits\n", ""))
    with pytest.raises(StoryError, match="sections must be exactly"):
        story.parse(bad)


def test_parse_rejects_missing_front_matter_key(tmp_path):
    bad = tmp_path / "story.md"
    bad.write_text(FIXTURE.read_text().replace("harms:\n  - a test harm\n", ""))
    with pytest.raises(StoryError, match="harms"):
        story.parse(bad)


def test_resolve_formats_estimates_tables_and_figures(outputs):
    resolved = story.resolve(story.parse(FIXTURE), RUN, outputs)
    text = "".join(b.text for b in resolved.blocks if b.kind == "markdown")
    assert "We ran 540 images." in text
    assert "0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%; p = 0.001)" in text
    assert "58.0%" in text
    assert "| group | rate |" in text
    figures = [b for b in resolved.blocks if b.kind == "figure"]
    assert len(figures) == 1 and figures[0].section == "What the simulation shows"


def test_unresolved_placeholder_names_it(outputs):
    run = {**RUN, "metrics": {"rate": RUN["metrics"]["rate"]}}
    with pytest.raises(StoryError, match=r"metrics\.n_images"):
        story.resolve(story.parse(FIXTURE), run, outputs)


def test_missing_table_names_it(outputs):
    with pytest.raises(StoryError, match="groups"):
        story.resolve(story.parse(FIXTURE), {**RUN, "tables": {}}, outputs)


def test_missing_figure_names_it(tmp_path):
    with pytest.raises(StoryError, match="rate.png"):
        story.resolve(story.parse(FIXTURE), RUN, tmp_path)


def test_render_html_is_self_contained(outputs, tmp_path):
    resolved = story.resolve(story.parse(FIXTURE), RUN, outputs)
    page = story.render_html(resolved, tmp_path / "report.html").read_text()
    assert "<h1>Alpha incident</h1>" in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0][0])[:4] == b"\x89PNG"
    assert 'src="http' not in page and "<link" not in page  # nothing fetched at view time
    assert "Sources and licences" in page and "CC0" in page and "@media print" in page
    assert "perceived attributes" in page
    assert "<table>" in page
