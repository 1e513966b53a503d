"""Workshop, participant's page: a nickname, an incident's assessment with its evidence, scores by section.

Answers are saved to the workshop database (``--workshop``, default ``<out>/workshop.sqlite``) the
moment they are chosen, so they survive a restart of the app. Each question shows the evidence in
the latest run it is about; after an answer, its points and why. The comparison at the bottom puts
your section scores beside other participants' and the incidents side by side.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pandas as pd
import streamlit as st

from app.lab import Lab, run_status
from autopsy import workshop as ws
from autopsy.story import escape_markdown

NICKNAME_KEY = "workshop-nickname"


@st.cache_resource(show_spinner=False)
def _opened(path: str) -> ws.Workshop:
    return ws.Workshop.open(path)  # creates the file and its tables once per process, not on every rerun


def open_workshop(lab: Lab) -> ws.Workshop | None:
    """The workshop database, or None with the reason on the page."""
    path = str(lab.workshop or lab.out / "workshop.sqlite")
    try:
        if not Path(path).is_file():  # first use, or the file was removed while the app ran
            _opened.clear()
        return _opened(path)
    except (ws.WorkshopError, OSError) as err:
        st.error(f"The workshop file cannot be opened: {err}", icon=":material/error:")
        return None


def banks(lab: Lab) -> dict[str, ws.Assessment]:
    """Question banks of the registered incidents that have one; a broken bank is reported, not fatal."""
    found = {}
    for slug, incident in lab.incidents.items():
        path = ws.assessment_path(incident)
        if not path.is_file():
            continue
        try:
            found[slug] = ws.load_assessment(path)
        except ws.AssessmentError as err:
            st.error(f"The assessment of {incident.title} cannot be used: {err}", icon=":material/error:")
    return found


def participant(shop: ws.Workshop) -> str | None:
    """The nickname of this browser session (asked once, shared by the workshop pages), or None."""
    name = st.session_state.get(NICKNAME_KEY)
    if name:
        left, right = st.columns([4, 1])
        left.markdown(f"You take part as **{escape_markdown(name)}**.")
        if right.button("Change nickname", key="workshop-leave", icon=":material/logout:"):
            del st.session_state[NICKNAME_KEY]
            st.rerun()
        return name
    with st.form("workshop-join", border=True):
        typed = st.text_input("Your nickname", max_chars=30, key="workshop-nickname-input",
                              help="A nickname only: no name, no e-mail. Use the same one to come back to "
                                   "your answers.")
        joined = st.form_submit_button("Join the workshop", type="primary", icon=":material/login:")
    st.caption("The workshop keeps your nickname and your answers in one file on the facilitator's machine, "
               "nothing else.")
    if joined:
        try:
            st.session_state[NICKNAME_KEY] = shop.join(typed)
        except ws.WorkshopError as err:
            st.error(str(err), icon=":material/badge:")
            return None
        st.rerun()
    return None


def choice_order(question: ws.Question) -> list[str]:
    """Choice ids in a fixed shuffled order per question (the same for everyone, so the best answer is
    not always in the same place)."""
    ids = [c.id for c in question.choices]
    random.Random(question.id).shuffle(ids)
    return ids


def load_run(lab: Lab, slug: str) -> dict | None:
    if run_status(lab, slug).state != "ready":
        return None
    try:
        return json.loads(lab.paths(slug).metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


PROVENANCE_COLUMNS = ["name", "count", "licence"]
NARROW_TABLE = 4  # columns; wider tables go below the question, at full width


def show_evidence(ref: str, run: dict | None, outputs, *, wide: bool = False) -> bool:
    """One piece of evidence, formatted as the report formats it (estimates with interval, n and test).

    Returns False, showing nothing, for a table too wide for the side column unless ``wide``.
    """
    from autopsy.story import StoryError, format_estimate, format_number, markdown_table

    evidence = ws.resolve_evidence(ref, run, outputs)
    if evidence.kind in ("value", "estimate"):
        text = evidence.text() if evidence.kind == "estimate" or not isinstance(evidence.value, str) \
            else escape_markdown(evidence.value)
        st.markdown(f"`{ref}` — {text}")
    elif evidence.kind == "figure":
        st.image(str(evidence.path), caption=evidence.caption, alt=evidence.caption)
    elif evidence.kind == "table":
        rows = [r for r in evidence.value if isinstance(r, dict)]
        columns = PROVENANCE_COLUMNS if ref == "provenance" else None
        if not wide and len(columns or (rows[0] if rows else ())) > NARROW_TABLE:
            return False
        try:
            st.markdown(f"`{ref}`\n\n" + markdown_table(rows, columns, name=ref))
        except StoryError as err:
            st.caption(f"`{ref}`: {err}")
    elif evidence.kind == "group":  # a few named values, one per line
        lines = []
        for key, value in evidence.value.items():
            if isinstance(value, dict) and ws.resolve_evidence("v", {"v": value}).kind == "estimate":
                lines.append(f"- {escape_markdown(key)}: {format_estimate(value, markdown=True)}")
            elif isinstance(value, (int, float, str, bool)):
                shown = format_number(value) if isinstance(value, (int, float)) else escape_markdown(value)
                lines.append(f"- {escape_markdown(key)}: {shown}")
        st.markdown(f"`{ref}`\n\n" + ("\n".join(lines) or "(nested values: see the run record)"))
    else:
        st.caption(f"`{ref}`: {evidence.caption}.")
    return True


def _save(shop: ws.Workshop, nickname: str, bank: ws.Assessment, question: ws.Question, key: str) -> None:
    choice = st.session_state.get(key)
    if choice is not None:
        shop.record_answer(nickname, bank, question.id, choice)


def section_line(row) -> str:
    questions = row.get("questions")
    total = "" if questions is None or pd.isna(questions) else f" of {int(questions)}"
    return (f"Section score: **{row['points']:g} / {row['max_points']:g} points ({row['score']:.0%})** on "
            f"{int(row['answered'])}{total} question(s) answered")


def assessment(shop: ws.Workshop, nickname: str, lab: Lab, bank: ws.Assessment) -> None:
    slug = bank.incident
    run = load_run(lab, slug)
    outputs = lab.paths(slug).outputs
    if run is None:
        st.info(f"{bank.title} has not been run here yet, so the evidence beside each question is missing. "
                f"The facilitator can run it from the incident's page (or `autopsy run {slug}`).",
                icon=":material/hourglass_empty:")
    from autopsy.data import PERCEIVED_LABELS_NOTE

    st.caption(PERCEIVED_LABELS_NOTE)
    answered = shop.answers(nickname=nickname, incident=slug).set_index("question_id")["answer"].to_dict()
    scores = shop.section_scores(incident=slug, nickname=nickname, banks={slug: bank}).set_index("section")
    for section in bank.sections:
        st.subheader(ws.SECTIONS[section], anchor=f"{slug}-{section}")
        for question in bank.in_section(section):
            key = f"ws-{slug}-{question.id}"
            order = choice_order(question)
            stored = answered.get(question.id)
            with st.container(border=True, key=f"q-{slug}-{question.id}"):
                left, right = st.columns([3, 2])
                with left:
                    texts = {c.id: c.text for c in question.choices}
                    st.radio(question.text, order, index=order.index(stored) if stored in order else None,
                             format_func=texts.get, key=key, on_change=_save,
                             args=(shop, nickname, bank, question, key))
                    chosen = st.session_state.get(key) or stored
                    if chosen is not None:
                        points = question.choice(chosen).points
                        st.markdown(f"**{points:g} / {question.max_points:g} points.** {question.explanation}")
                with right:
                    if run is None:
                        st.caption("Evidence, once the incident has run: "
                                   + ", ".join(f"`{ref}`" for ref in question.evidence))
                    else:
                        st.caption("Evidence from the run")
                        wide = [ref for ref in question.evidence if not show_evidence(ref, run, outputs)]
                        for ref in wide:
                            st.caption(f"`{ref}`: the table is below.")
                if run is not None:
                    for ref in wide:
                        with st.expander(f"Evidence: {ref}", icon=":material/table:"):
                            show_evidence(ref, run, outputs, wide=True)
        if section in scores.index:
            st.markdown(section_line(scores.loc[section]))
        else:
            st.caption("Answer a question of this section to see its score.")


def comparison_view(shop: ws.Workshop, all_banks: dict[str, ws.Assessment], nickname: str | None = None,
                    key: str = "ws-compare") -> None:
    """Scores by section across incidents (means over participants, with intervals) and across participants."""
    scores = shop.section_scores(banks=all_banks)
    if scores.empty:
        st.caption("No answers yet.")
        return
    titles = {slug: bank.title for slug, bank in all_banks.items()}
    by = st.segmented_control("Compare", ["By incident", "By participant"], default="By incident", key=key,
                              required=True)
    if by == "By incident":
        table = ws.comparison(scores, by="incident")
        table["group"] = table["group"].map(lambda s: titles.get(s, s))
        label, title = "incident", "Mean share of points per section, by incident (95% bootstrap intervals)"
    else:
        table = ws.comparison(scores, by="nickname")
        label, title = "participant", "Each participant's share of points per section, all incidents answered"
    fig = ws.comparison_figure(table, title=title, group_label=label)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    groups = ", ".join(dict.fromkeys(table["group"]))
    st.image(buffer.getvalue(), alt=f"Grouped bar chart: share of points per section for {groups}; the table below "
                                    "holds the same numbers.", caption=title)
    shown = table.assign(section=table["section"].map(ws.SECTIONS))
    if nickname and by == "By participant":
        st.caption(f"You are **{escape_markdown(nickname)}**.")
    st.dataframe(shown, hide_index=True, column_config={
        "group": label, "value": st.column_config.NumberColumn("score", format="percent"),
        "low": st.column_config.NumberColumn(format="percent"),
        "high": st.column_config.NumberColumn(format="percent")})


def show(lab: Lab) -> None:
    st.title("Workshop: assess an incident")
    st.markdown("Answer questions about an incident, section by section — data and consent, bias and fairness, "
                "explainability, robustness, privacy, environment — with the run's own evidence beside each one. "
                "Your score per section, and how it compares, are at the bottom.")
    shop = open_workshop(lab)
    if shop is None:
        return
    all_banks = banks(lab)
    if not all_banks:
        st.warning("No registered incident has an assessment (incidents/<slug>/assessment.yaml) in this checkout.")
        return
    nickname = participant(shop)
    if nickname is None:
        return
    slugs = list(all_banks)
    wanted = st.query_params.get("incident")  # a facilitator can hand out a link to one incident: ?incident=SLUG
    slug = st.selectbox("Incident", slugs, index=slugs.index(wanted) if wanted in slugs else 0,
                        format_func=lambda s: all_banks[s].title, key="ws-incident")
    assessment(shop, nickname, lab, all_banks[slug])
    st.header("Compare by section", anchor="compare")
    comparison_view(shop, all_banks, nickname)
