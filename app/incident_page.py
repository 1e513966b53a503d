"""One page per incident: its story from the latest run, its explorer, and the run record."""

from __future__ import annotations

import json
import traceback

import streamlit as st

from app import explorers, render
from app.lab import Lab, run_status
from autopsy import runner
from autopsy.story import StoryError

VIEWS = ("Story", "Explorer", "Run record")


def show(lab: Lab, incident) -> None:
    st.title(incident.title)
    aiid = f" · [AI Incident Database #{incident.aiid}](https://incidentdatabase.ai/cite/{incident.aiid})" if incident.aiid else ""
    st.caption(f"{incident.date}{aiid}")
    st.markdown(f"**Harm:** {incident.harm}")
    has_explorer = explorers.module_name(incident) is not None
    views = [v for v in VIEWS if has_explorer or v != "Explorer"]
    # Lazy tabs: only the open one runs (the explorer's models are not touched while reading the story).
    tabs = st.tabs(views, key="view", bind="query-params")
    for view, tab in zip(views, tabs):
        if tab.open is False:
            continue
        with tab:
            {"Story": story_view, "Explorer": explorer_view, "Run record": record_view}[view](lab, incident)


def story_view(lab: Lab, incident) -> None:
    paths = lab.paths(incident.slug)
    status = run_status(lab, incident.slug)
    if status.state != "ready":
        st.info(f"**{incident.title}** has not been run here yet: the story is told from a run's numbers "
                f"and figures. {status.message}.", icon=":material/hourglass_empty:")
        offer_run(lab, incident)
        return
    try:
        resolved = render.resolved_story(incident.story, paths)
    except StoryError as err:
        st.error(f"The story cannot be told from this run: {err}", icon=":material/error:")
        offer_run(lab, incident, again=True)
        return
    st.caption(render.run_line(resolved.run))
    st.download_button(
        "Download report (HTML)", data=lambda: render.report_bytes(resolved, paths),
        file_name=f"{incident.slug}-report.html", mime="text/html", on_click="ignore",
        icon=":material/download:", key=f"download-{incident.slug}",
    )
    render.perceived_labels_note()
    render.blocks(resolved)


def explorer_view(lab: Lab, incident) -> None:
    try:
        module = explorers.load(incident)
    except Exception as err:
        st.error(f"The explorer for {incident.slug} could not be loaded: {err}", icon=":material/error:")
        with st.expander("Details"):
            st.code("".join(traceback.format_exception(err)))
        return
    module.show(lab, incident)


def record_view(lab: Lab, incident) -> None:
    paths = lab.paths(incident.slug)
    status = run_status(lab, incident.slug)
    st.markdown(status.message)
    if status.state == "ready":
        run = json.loads(paths.metrics.read_text())
        st.markdown(f"Lab version {run.get('lab_version', '?')}, commit `{(run.get('git_commit') or 'unknown')[:12]}`; "
                    f"metrics in `{paths.metrics}`, figures in `{paths.outputs}`.")
        st.subheader("Pinned artefacts used", anchor=False)
        render.provenance(run)
        if run.get("stages"):
            st.subheader("Stages", anchor=False)
            st.dataframe(run["stages"], hide_index=True)
        if isinstance(run.get("carbon"), dict) and "measured" in run["carbon"]:
            from autopsy.carbon import comparison_rows

            st.subheader("Energy and emissions of this run", anchor=False)
            st.dataframe(comparison_rows(run["carbon"]), hide_index=True)
            st.caption(run["carbon"].get("note", ""))
        st.subheader("Parameters", anchor=False)
        st.json(run.get("params", {}))
        with st.expander("All metrics (JSON)"):
            st.json(run.get("metrics", {}), expanded=1)
    offer_run(lab, incident, again=status.state == "ready")


def offer_run(lab: Lab, incident, *, again: bool = False) -> None:
    """A button that runs the quick profile here, with a progress bar."""
    label = "Run the quick profile again" if again else "Run the quick profile now"
    st.caption("The quick profile runs offline from your mirror or cache, in minutes on two CPU cores "
               f"(same as `autopsy run {incident.slug} --out {lab.out}`). Keep this page open while it runs.")
    if not st.button(label, type="secondary" if again else "primary", key=f"run-{incident.slug}",
                     icon=":material/play_arrow:"):
        return
    bar = st.progress(0.0, text="Starting the quick profile…")

    def progress(fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        bar.progress(fraction, text=message or f"{fraction:.0%}")

    try:
        with st.spinner("Running…"):
            runner.run(incident, incident.settings(), out_root=lab.out, progress=progress)
    except runner.RunError as err:  # another run holds the lock, or a stage broke the contract
        bar.empty()
        st.warning(str(err), icon=":material/hourglass_empty:")
        return
    except Exception as err:
        bar.empty()
        st.error(f"The run failed: {err}", icon=":material/error:")
        with st.expander("Details"):
            st.code("".join(traceback.format_exception(err)))
        return
    bar.progress(1.0, text="Done")
    st.rerun()
