"""Workshop, predict-then-reveal: guess what the incident's model will do, then see what it does.

In a facilitated session (started on the facilitator's page) everyone sees the session's incident
and the facilitator reveals each card; without one, participants play at their own pace and reveal
a card to themselves once they have predicted. Outcomes come from the incident's own model on the
pinned photos (from your cache or mirror), computed once per card and shared by all sessions.
"""

from __future__ import annotations

import streamlit as st

from app.lab import Lab
from app.workshop import open_workshop, participant
from autopsy import workshop as ws

CHECK_SECONDS = 4  # how often a facilitated session's page looks for the facilitator's reveals


@st.cache_resource(show_spinner=False)
def _cards(slug: str, outputs: str, stamp: float) -> list[ws.Scenario]:
    return ws.scenarios_for(slug, outputs=outputs)


def cards(lab: Lab, slug: str) -> list[ws.Scenario]:
    """The incident's cards; rebuilt when its latest run changes (some cards come from the run's results)."""
    outputs = lab.paths(slug).outputs
    metrics = lab.paths(slug).metrics
    return _cards(slug, str(outputs), metrics.stat().st_mtime if metrics.is_file() else 0.0)


@st.cache_resource(max_entries=32, show_spinner="Loading the photos…")
def picture(scenario_id: str, _card: ws.Scenario):
    return _card.picture()


@st.cache_resource(max_entries=32, show_spinner="Running the model…")
def outcome(scenario_id: str, _card: ws.Scenario) -> ws.Outcome:
    """The model's answer for a card, computed once per process and shared by every session."""
    return _card.reveal()


def incidents_with_cards(lab: Lab) -> dict[str, str]:
    """slug -> title of the registered incidents that have scenario cards (a broken module is reported)."""
    found = {}
    for slug, incident in lab.incidents.items():
        try:
            if cards(lab, slug):
                found[slug] = incident.title
        except Exception as err:  # noqa: BLE001 -- one incident's cards must not hide the others'
            st.error(f"The scenarios of {incident.title} could not be loaded: {err}", icon=":material/error:")
    return found


def show_outcome(card: ws.Scenario, shop: ws.Workshop | None = None, prediction: str | None = None) -> None:
    try:
        result = outcome(card.id, card)
    except Exception as err:  # noqa: BLE001 -- a missing photo or model is a message, not a crash
        st.error(f"The model could not be run on this card: {err}", icon=":material/error:")
        return
    if prediction is not None:
        verdict = "You predicted it." if prediction == result.answer else f"You predicted: {prediction}."
        st.success(f"**{result.answer}.** {verdict}", icon=":material/visibility:")
    else:
        st.success(f"**{result.answer}.**", icon=":material/visibility:")
    st.markdown(result.explanation)
    if result.image is not None:
        st.image(result.image, alt=f"What the model did: {result.answer}. {result.explanation}",
                 caption="What the model did")
    if shop is not None:
        tally = shop.tally(incident=card.incident)
        row = tally[tally["scenario_id"] == card.id]
        if not row.empty and row.iloc[0]["revealed"]:
            r = row.iloc[0]
            st.caption(f"{r['correct']} of {r['revealed']} participant(s) predicted the model's choice.")


def card_view(card: ws.Scenario, shop: ws.Workshop, nickname: str, *, facilitated: bool, revealed: dict) -> None:
    mine = shop.predictions(nickname=nickname)
    mine = mine[mine["scenario_id"] == card.id]
    prediction = mine.iloc[0]["prediction"] if not mine.empty else None
    own_outcome = mine.iloc[0]["outcome"] if not mine.empty else None
    is_revealed = card.id in revealed or own_outcome is not None
    with st.container(border=True, key=f"card-{card.id.replace('/', '-')}"):
        st.subheader(card.title, anchor=False)
        try:
            st.image(picture(card.id, card), caption=card.caption, alt=card.caption)
        except Exception as err:  # noqa: BLE001
            st.error(f"The photos of this card are not available: {err}. `autopsy fetch {card.incident}` copies them "
                     "from the mirror into your cache.", icon=":material/broken_image:")
            return
        key = f"sc-{card.id}"

        def save():
            choice = st.session_state.get(key)
            if choice is not None:
                try:
                    shop.record_prediction(nickname, card, choice)
                except ws.WorkshopError as err:
                    st.session_state[f"{key}-error"] = str(err)

        index = card.choices.index(prediction) if prediction in card.choices else None
        st.radio(card.prompt, card.choices, index=index, key=key, on_change=save, disabled=is_revealed)
        if st.session_state.get(f"{key}-error"):
            st.warning(st.session_state.pop(f"{key}-error"))
        if is_revealed:
            show_outcome(card, shop, prediction)
        elif facilitated:
            st.caption("Your prediction is saved. The facilitator reveals the answer." if prediction
                       else "Make your prediction; the facilitator reveals the answer.")
        elif st.button("Reveal", key=f"reveal-{card.id}", disabled=prediction is None, icon=":material/visibility:",
                       help="Predict first, then reveal."):
            try:
                shop.reveal_for(nickname, card, outcome(card.id, card).answer)
            except Exception as err:  # noqa: BLE001
                st.error(f"The model could not be run on this card: {err}", icon=":material/error:")
                return
            st.rerun()


def show(lab: Lab) -> None:
    st.title("Workshop: predict, then reveal")
    st.markdown("Each card shows what the system was given. **Predict** what the incident's model will do, then "
                "**reveal** what it does — the model runs on the photos in front of you.")
    shop = open_workshop(lab)
    if shop is None:
        return
    available = incidents_with_cards(lab)
    if not available:
        st.warning("No registered incident has scenario cards (incidents/<slug>/scenarios.py) in this checkout.")
        return
    nickname = participant(shop)
    if nickname is None:
        return
    session = shop.current_session()
    facilitated = session is not None and session.incident in available
    if facilitated:
        slug = session.incident
        st.info(f"Facilitated session on **{available[slug]}**: the facilitator reveals each card; this page "
                f"checks for reveals every {CHECK_SECONDS} s.", icon=":material/groups:")
        if st.button("Check for reveals now", icon=":material/refresh:", key="sc-refresh"):
            st.rerun()
    else:
        slug = st.selectbox("Incident", list(available), format_func=available.get, key="sc-incident")
        st.caption("No facilitated session is running: play at your own pace and reveal each card after predicting.")

    def deck():
        revealed = shop.revealed()
        for card in cards(lab, slug):
            card_view(card, shop, nickname, facilitated=facilitated, revealed=revealed)

    st.fragment(deck, run_every=CHECK_SECONDS if facilitated else None)()
