"""Workshop, facilitator's page: run a session, reveal cards, watch scores by section, export everything.

Start a session on an incident (participants' scenario pages follow it), reveal each card when the
room has predicted, reset to play again, and watch each participant's score per section update
live. The export is what the workshop file holds, as CSV (opens in a spreadsheet) and JSON.
Anyone who can open the app can open this page: run the app where only the room can reach it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import scenarios as scenario_page
from app.lab import Lab
from app.workshop import banks, comparison_view, open_workshop
from autopsy import workshop as ws
from autopsy.story import escape_markdown

LIVE_SECONDS = 5


def session_controls(shop: ws.Workshop, available: dict[str, str]) -> ws.Session | None:
    session = shop.current_session()
    if session is not None:
        title = available.get(session.incident, session.incident)
        st.success(f"Session running on **{title}** since {session.started_at}.", icon=":material/groups:")
    else:
        st.caption("No session is running: participants play the cards at their own pace.")
    if not available:
        st.caption("No registered incident has scenario cards.")
        return session
    left, middle, right = st.columns([3, 2, 2], vertical_alignment="bottom")
    slug = left.selectbox("Incident for the session", list(available), format_func=available.get, key="fa-incident")
    if middle.button("Start a session", type="primary", key="fa-start", icon=":material/play_arrow:"):
        shop.start_session(slug)
        st.rerun()
    if session is not None and right.button("End the session", key="fa-end", icon=":material/stop:"):
        shop.end_session()
        st.rerun()
    return session


def reveal_controls(lab: Lab, shop: ws.Workshop, session: ws.Session) -> None:
    cards = scenario_page.cards(lab, session.incident)
    revealed = shop.revealed()
    tally = shop.predictions(incident=session.incident)
    for card in cards:
        made = tally[tally["scenario_id"] == card.id]
        with st.container(border=True, key=f"fa-card-{card.id.replace('/', '-')}"):
            st.markdown(f"**{card.title}** — {card.prompt}")
            counts = made["prediction"].value_counts()
            st.caption(f"{len(made)} prediction(s): " + "; ".join(f"{c}: {counts.get(c, 0)}" for c in card.choices))
            if card.id in revealed:
                scenario_page.show_outcome(card, shop)
            elif st.button("Reveal to everyone", key=f"fa-reveal-{card.id}", icon=":material/visibility:"):
                try:
                    shop.reveal(card, scenario_page.outcome(card.id, card).answer)
                except Exception as err:  # noqa: BLE001 -- say what failed; the session goes on
                    st.error(f"The model could not be run on this card: {err}", icon=":material/error:")
                    return
                st.rerun()


def reset_controls(shop: ws.Workshop) -> None:
    with st.expander("Reset", icon=":material/restart_alt:"):
        st.markdown("**Play the cards again**: forget every prediction and reveal (answers stay). "
                    "**Start over**: forget everything in this workshop file.")
        sure = st.checkbox("I understand this cannot be undone", key="fa-reset-sure")
        left, right = st.columns(2)
        if left.button("Forget predictions and reveals", disabled=not sure, key="fa-reset-scenarios"):
            shop.reset("scenarios")
            st.rerun()
        if right.button("Forget everything", disabled=not sure, key="fa-reset-all", type="primary"):
            shop.reset("all")
            st.rerun()


def scores_table(shop: ws.Workshop, all_banks: dict[str, ws.Assessment]) -> pd.DataFrame:
    """Participants x (incident, section) share of points, for the live view."""
    scores = shop.section_scores(banks=all_banks)
    if scores.empty:
        return scores
    scores = scores.assign(incident=scores["incident"].map(lambda s: all_banks[s].title if s in all_banks else s),
                           section=scores["section"].map(ws.SECTIONS))
    wide = scores.pivot_table(index="nickname", columns=["incident", "section"], values="score", sort=False)
    wide.columns = [f"{incident} · {section}" for incident, section in wide.columns]
    return wide.reset_index()


def live_scores(shop: ws.Workshop, all_banks: dict[str, ws.Assessment]) -> None:
    participants = shop.participants()
    names = ", ".join(escape_markdown(p) for p in participants)
    st.markdown(f"**{len(participants)} participant(s):** {names or 'none yet'}")
    table = scores_table(shop, all_banks)
    if table.empty:
        st.caption("No answers yet.")
    else:  # a plain HTML table: readable on a projector and by screen readers
        shown = table.set_index("nickname").apply(lambda col: col.map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"))
        st.caption("Share of points earned per section, on the questions each participant answered.")
        st.table(shown.rename_axis("participant"))
    comparison_view(shop, all_banks, key="fa-compare")


def exports(shop: ws.Workshop, all_banks: dict[str, ws.Assessment]) -> None:
    st.markdown("Participants are identified by their nickname only. CSV files open in a spreadsheet (UTF-8).")
    tables = shop.tables(all_banks)
    columns = st.columns(3)
    for i, (name, table) in enumerate(tables.items()):
        columns[i % 3].download_button(f"{name}.csv ({len(table)} rows)", data=ws.csv_bytes(table),
                                       file_name=f"{name}.csv", mime="text/csv", on_click="ignore",
                                       key=f"fa-export-{name}", icon=":material/download:")
    st.download_button("Everything (workshop.json)", data=shop.to_json(all_banks), file_name="workshop.json",
                       mime="application/json", on_click="ignore", key="fa-export-json", icon=":material/download:")


def show(lab: Lab) -> None:
    st.title("Workshop: facilitator")
    shop = open_workshop(lab)
    if shop is None:
        return
    st.caption(f"Workshop file: `{shop.path}` (set with `--workshop PATH`); answers survive a restart of the app.")
    all_banks = banks(lab)
    available = scenario_page.incidents_with_cards(lab)
    st.header("Session", anchor="session")
    session = session_controls(shop, available)
    if session is not None and session.incident in available:
        reveal_controls(lab, shop, session)
    reset_controls(shop)
    st.header("Scores by section", anchor="scores")
    live = st.toggle("Live update", value=True, key="fa-live", help=f"Refresh the scores every {LIVE_SECONDS} s.")
    st.fragment(live_scores, run_every=LIVE_SECONDS if live else None)(shop, all_banks)
    st.header("Export", anchor="export")
    exports(shop, all_banks)
