"""Every registered incident's story renders from a real smoke run: every placeholder and figure resolves.

The typed metrics record is what the story may reference; this is the check that they agree
(a synthetic dict built from the story would prove nothing).
"""

import dataclasses

import pytest

from autopsy import registry, story
from autopsy.runs import RunPaths

INCIDENTS = registry.discover()


@pytest.mark.parametrize("slug", sorted(INCIDENTS))
def test_story_renders_from_a_real_smoke_run(slug, smoke_run, tmp_path):
    out, record = smoke_run(slug)
    incident = INCIDENTS[slug]
    typed = {f.name for f in dataclasses.fields(incident.metrics)}
    assert typed <= set(record["metrics"]), "the metrics JSON lost fields of the typed record"
    paths = RunPaths(out, slug)
    resolved = story.resolve(story.parse(incident.story), story.load_run(paths.metrics), paths.outputs)
    html = story.render_html(resolved, tmp_path / f"{slug}.html").read_text()
    assert "perceived" in html.lower() and "Sources" in html
    assert [s["stage"] for s in record["stages"]] == [s.name for s in incident.stages]
