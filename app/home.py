"""Home: one card per registered incident (title, date, one-line harm, status of the local run)."""

from __future__ import annotations

import streamlit as st

from app.lab import Lab, run_status

STATUS_ICON = {"ready": ":material/task_alt:", "not run": ":material/hourglass_empty:", "broken": ":material/warning:"}


def show(lab: Lab, pages: dict) -> None:
    st.title("AI Autopsy")
    st.markdown(
        "A laboratory that **re-runs public AI incidents and investigates them**: pinned public data and "
        "weights, the published protocol, then saliency, statistics and counterfactual edits — "
        "told as a story you can present and export, with explorers for your own photos."
    )
    if lab.error:
        st.error(lab.error)
    if not lab.incidents:
        st.warning("No incidents are registered in this checkout yet.")
        return
    columns = st.columns(min(3, len(lab.incidents)))
    for i, (slug, incident) in enumerate(lab.incidents.items()):
        status = run_status(lab, slug)
        with columns[i % len(columns)].container(border=True, key=f"card-{slug}"):
            st.subheader(incident.title, anchor=False)
            meta = incident.date + (f" · [AIID #{incident.aiid}](https://incidentdatabase.ai/cite/{incident.aiid})"
                                    if incident.aiid else "")
            st.caption(meta)
            st.markdown(f"**Harm:** {incident.harm}")
            st.markdown(f"{STATUS_ICON.get(status.state, '')} {status.message}")
            st.page_link(pages[slug], label="Open the story and explorer", icon=":material/arrow_forward:")
