"""Streamlit renderer of a resolved story: the same blocks as the HTML report (autopsy.story).

Markdown blocks go to ``st.markdown``, figure blocks to ``st.image`` with the story's alt text
as both the image's alt attribute and its caption.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from autopsy import story as storylib
from autopsy.data import PERCEIVED_LABELS_NOTE
from autopsy.runs import MixedRunError, check_outputs_belong


def resolved_story(story_path: Path, paths) -> storylib.ResolvedStory:
    """Parse and resolve an incident's story against its latest run (raises StoryError)."""
    run = storylib.load_run(paths.metrics)
    try:
        check_outputs_belong(run, paths.outputs)
    except MixedRunError as err:
        raise storylib.StoryError(str(err)) from err
    return storylib.resolve(storylib.parse(story_path), run, paths.outputs)


def blocks(resolved: storylib.ResolvedStory) -> None:
    for block in resolved.blocks:
        if block.kind == "figure":
            st.image(str(block.path), caption=block.text, alt=block.text)
        else:
            st.markdown(block.text)


def perceived_labels_note() -> None:
    st.info(PERCEIVED_LABELS_NOTE, icon=":material/info:")


def run_line(run: dict) -> str:
    """'Run: quick profile, 22 Nov 2026 07:36 UTC · lab 0.1.0 · commit `3d8fbdfd86dc`'."""
    import datetime as dt

    created = run.get("created", "?")
    try:
        created = dt.datetime.fromisoformat(created).strftime("%d %b %Y %H:%M UTC")
    except (TypeError, ValueError):
        pass
    parts = [f"Run: {run.get('profile', '?')} profile, {created}"]
    if run.get("lab_version"):
        parts.append(f"lab {run['lab_version']}")
    if run.get("git_commit"):
        parts.append(f"commit `{run['git_commit'][:12]}`")
    return " · ".join(parts)


def report_bytes(resolved: storylib.ResolvedStory, paths) -> bytes:
    """The HTML report: the exported file if it is newer than the run, else rendered now (in a temp dir)."""
    report, metrics = Path(paths.report), Path(paths.metrics)
    if report.is_file() and report.stat().st_mtime >= metrics.stat().st_mtime:
        return report.read_bytes()
    with tempfile.TemporaryDirectory(prefix="autopsy-report-") as tmp:
        return storylib.render_html(resolved, Path(tmp) / "report.html").read_bytes()


def provenance(run: dict) -> None:
    rows = run.get("provenance") or []
    if not rows:
        st.caption("This run lists no pinned artefacts.")
        return
    st.dataframe(
        [{"artefact": r.get("name"), "files": r.get("count"), "licence": r.get("licence"),
          "SHA-256": r.get("sha256"), "citation": r.get("citation"), "source": r.get("source_page") or r.get("url")}
         for r in rows],
        hide_index=True,
        column_config={"source": st.column_config.LinkColumn("source")},
    )


