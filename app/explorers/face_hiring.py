"""Face-based hiring explorer: what the face models read from a face, the score, and what changes it.

Upload a face (or pick one from your cache): the FER-2013 expression model's seven emotions, the Face
Landmarker's strongest blendshapes, and the employability score of the lab's reproduced scorer, with
the features that move it most. A skin-tone slider edits the face (Monk Skin Tone scale) and scores
it again; a beta slider picks the simulated recruiters' bias the scorer learnt from. Everything runs
through the investigation's own functions (``incidents.face_hiring.explore``); the scorer's labels
are simulated historical decisions, never real ones.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from PIL import Image

from app import uploads

BETAS = (0.0, 0.5, 1.0)


@st.cache_resource(show_spinner="Loading the expression, gender and landmark models…")
def models():
    from incidents.face_hiring.perception import PerceptionModels

    return PerceptionModels.load()


@st.cache_resource(show_spinner="Perceiving reference candidates and training the scorer…")
def reference():
    from incidents.face_hiring import explore

    return explore.reference(models())


@st.cache_resource(show_spinner=False)
def scorer(beta: float):
    return reference().scorer(beta)


@st.cache_data(max_entries=32, ttl=900, show_spinner="Reading the face…")
def read(key: str, _image: Image.Image):
    from incidents.face_hiring import explore

    return explore.read_face(models(), _image)


@st.cache_data(max_entries=32, ttl=900, show_spinner="Editing skin tone…")
def skin_tone_edit(key: str, _image: Image.Image, level: int):
    from autopsy import counterfactual

    edited, record = counterfactual.edit_skin_tone(_image, target=level)
    return edited, record.measured["ita_before"], record.measured["ita_after"], record.warning


def show(lab, incident) -> None:
    st.markdown("Run the **face models a hiring scorer reads** (the FER-2013 expression model, MediaPipe Face "
                "Landmarker's 52 blendshapes) on a face, and the lab's **reproduced scorer** trained on "
                "*simulated* historical decisions. Race and gender are never its inputs.")
    photo = uploads.choose_photo("Face", "fh")
    if photo is None:
        st.info("Upload a photo of a face or pick one from your cache to start.", icon=":material/photo_camera:")
        return
    c1, c2 = st.columns(2)
    level = c1.select_slider("Counterfactual: skin tone (Monk level 1 lightest to 10 darkest; 'original' = no edit)",
                             options=["original", *range(1, 11)], value="original", key="fh-skin")
    beta = c2.select_slider("Simulated recruiters' bias β the scorer learnt from (0: none; 1: Bertrand & "
                            "Mullainathan's callback gap)", options=list(BETAS), value=1.0, key="fh-beta")
    try:
        row, face, found = read(photo.digest, photo.image)
        model = scorer(float(beta))
    except Exception as err:  # missing weights offline, a photo the models cannot read
        st.error(f"The face models are not available: {err}", icon=":material/error:")
        return
    if not found:
        st.warning("BlazeFace found no face; the whole photo is read as if it were a face crop.")
    shown, row_shown, note = face, row, None
    if level != "original":
        try:
            shown, before, after, warning = skin_tone_edit(photo.digest, face, int(level))
            row_shown = read(f"{photo.digest}-mst{level}", shown)[0]
            note = (f"Edited to Monk Skin Tone level {level}: median skin ITA {before:.0f}° → {after:.0f}° (lower = "
                    "darker). Only pixels of a colour-heuristic skin mask change." + (f" {warning}" if warning else ""))
        except Exception as err:
            st.warning(f"The skin-tone edit could not be applied to this face: {err}. Showing the original.")
    result(shown, row, row_shown, model, float(beta), note)


def result(face: Image.Image, original: pd.DataFrame, row: pd.DataFrame, model, beta: float, note) -> None:
    from incidents.face_hiring import explore
    from incidents.face_hiring.perception import BLENDSHAPE_COLUMNS, EMOTION_COLUMNS

    left, right = st.columns([2, 3])
    score, base = float(model.probability(row)[0]), float(model.probability(original)[0])
    advanced = bool(model.decide(row)[0])
    with left:
        verdict = "advanced" if advanced else "not advanced"
        st.image(face, alt=f"The face as the models read it: {verdict} by the scorer",
                 caption="The face crop the models read.")
        if note:
            st.caption(note)
        delta = None if row is original else f"{100 * (score - base):+.1f} points vs the unedited face"
        st.metric("Employability score (simulated-history scorer)", f"{100 * score:.1f}", delta=delta)
        st.caption(f"β = {beta:g}: the scorer **{'advances' if advanced else 'does not advance'}** this face "
                   "(its threshold advances the same share of candidates its training history did). "
                   f"Face presence {float(row['face_presence'].iloc[0]):.2f}.")
    with right:
        emotions = pd.Series(row[list(EMOTION_COLUMNS)].iloc[0].to_numpy(float),
                             index=[c.removeprefix("emotion_") for c in EMOTION_COLUMNS], name="probability")
        st.markdown("**Expression model (FER-2013): emotion probabilities**")
        st.bar_chart(emotions, horizontal=True)
        top = row[list(BLENDSHAPE_COLUMNS)].iloc[0].sort_values(ascending=False).head(8)
        st.markdown("**Strongest blendshapes (Face Landmarker)**")
        st.dataframe(pd.DataFrame({"blendshape": [c.removeprefix("bs_") for c in top.index], "score": top.to_numpy()}),
                     hide_index=True)
    st.markdown("**What moves this score most** (weight × standardised input: `xf_…` are the expression model's "
                "own features, `bs_…` the blendshapes)")
    st.dataframe(explore.contributions(model, row), hide_index=True)
