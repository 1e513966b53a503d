"""Twitter crop explorer: the real saliency model on your photos.

One photo: the saliency overlay with its most salient point, and the crops Twitter would show at
its standard aspect ratios. A pair: the two photos joined as the published protocol does (left |
right on a black canvas as tall as the taller), and swapped, with the face that wins each order.
A skin-tone slider applies a controlled counterfactual edit to photo A; the attribution view
shows which input pixels drive the winning point; "attack this photo" changes the winning photo of
a pair by at most a chosen number of pixel levels and shows whether the crop moves to the other face
(the run's own attack, :func:`incidents.twitter_crop.robustness.attack_pairs`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

from app import imaging, uploads

ATTRIBUTION_METHODS = {"Gradient (fast)": "gradient", "Integrated gradients (slower, 16 steps)": "integrated_gradients"}
OVERLAY_ALT = "Saliency map overlay"
ATTACK_BUDGETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # L-inf, whole 0-255 levels


def _model_module():
    from incidents.twitter_crop import model

    return model


@st.cache_resource(show_spinner="Loading Twitter's saliency model (fastgaze.vxm)…")
def saliency_model():
    """The fastgaze network, built once per process."""
    return _model_module().build_model()


@dataclass(frozen=True)
class Analysis:
    saliency: np.ndarray  # H x W at the image's resolution, for the overlay
    point: tuple[int, int]  # (x, y): the binary's salient point
    cell: tuple[int, int]  # (row, col) of that point in the score grid
    resized: tuple[int, int]  # (W', H'): what the network saw


def _analysis(grid) -> Analysis:
    return Analysis(grid.heatmap(), grid.point, grid.cell, grid.resized)


@st.cache_data(max_entries=64, ttl=900, show_spinner="Running Twitter's pipeline…")
def analyse(key: str, _image: Image.Image) -> Analysis:
    """The binary's score grid and salient point (``model.saliency_map``); cached by ``key`` (digest plus edits)."""
    return _analysis(_model_module().saliency_map(_image, model=saliency_model()))


@st.cache_data(max_entries=64, ttl=900, show_spinner="Running Twitter's pipeline on the canvas…")
def analyse_pair(key: str, _left: Image.Image, _right: Image.Image) -> tuple[Analysis, bool]:
    """The canvas exactly as the run scores it (``canvases.pair``); returns the analysis and whether left wins."""
    from incidents.twitter_crop import canvases

    grid, outcome = canvases.pair(saliency_model(), _left, _right)
    return _analysis(grid), outcome.left_wins_max


@st.cache_data(max_entries=64, ttl=900, show_spinner=False)
def overlay_png(key: str, _image: Image.Image, _analysis: Analysis, title: str = "") -> bytes:
    return imaging.overlay_png(_image, _analysis.saliency, point=_analysis.point, title=title,
                               colorbar_label="saliency (model output)")


@st.cache_data(max_entries=32, ttl=900, show_spinner="Attributing the winning point…")
def attribution(key: str, _image: Image.Image, cell: tuple[int, int], method: str) -> np.ndarray:
    """|attribution| of the score of grid ``cell`` to each input pixel, at the image's resolution."""
    from autopsy.saliency import attribute

    from incidents.twitter_crop.autopsy_steps import CanvasSaliency
    from incidents.twitter_crop.canvases import to_tensor

    row, col = cell
    kwargs = {"n_steps": 16, "internal_batch_size": 4} if method == "integrated_gradients" else {}
    maps = attribute(CanvasSaliency(saliency_model()), to_tensor(_image), target=lambda out: out[:, 0, row, col],
                     method=method, **kwargs)  # through the binary's resize: the map is on the photo's own pixels
    return np.abs(maps[0]).sum(0)


@st.cache_data(max_entries=32, ttl=900, show_spinner="Editing skin tone…")
def skin_tone_edit(key: str, _image: Image.Image, level: int) -> tuple[Image.Image, dict]:
    from autopsy import counterfactual

    edited, record = counterfactual.edit_skin_tone(_image, target=level)
    measured = getattr(record, "measured", {})
    return edited, {"ita_before": measured.get("ita_before"), "ita_after": measured.get("ita_after"),
                    "warning": getattr(record, "warning", None)}


@st.cache_data(max_entries=16, ttl=900, show_spinner="Changing the winning photo by that budget…")
def attack(key: str, _left: Image.Image, _right: Image.Image, budget: int):
    """The run's attack at one budget (``robustness.attack_pairs``, the quick profile's method); cached by
    ``key`` and budget. Returns the attacked pair and the change figure as PNG bytes."""
    from autopsy.robustness import perturbation_figure
    from incidents.twitter_crop import robustness
    from incidents.twitter_crop.config import PROFILES

    quick = PROFILES["quick"]
    (found,) = robustness.attack_pairs(saliency_model(), [(_left, _right)], budgets=(budget,),
                                       method=quick.attack_method, steps=quick.attack_steps, images=True)
    fig = perturbation_figure(found.canvas[None], found.adversarial[None], bounds=robustness.BOUNDS, size=3.0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return found, buffer.getvalue()


# --------------------------------------------------------------------------- the page


def show(lab, incident) -> None:
    st.markdown(
        "Run **Twitter's own saliency model** (`fastgaze.vxm`, ported to PyTorch) on photos of your choice. "
        "The crop is centred on the most salient point, so whichever face holds that point is the one "
        "people saw in the timeline."
    )
    try:
        saliency_model()
    except Exception as err:  # missing weights offline, or the model module not in this checkout
        st.error(f"The saliency model is not available: {err}", icon=":material/error:")
        return
    mode = st.segmented_control("Mode", ["One photo", "Pair (published protocol)"], default="One photo",
                                key="tw-mode", required=True)
    if mode == "One photo":
        photo = uploads.choose_photo("Photo A", "tw-a")
        if photo is None:
            st.info("Upload a photo or pick one from your cache to start.", icon=":material/photo_camera:")
            return
        image, key = _edited(photo, skin_tone_slider())
        single_view(image, key, photo)
    else:
        col_a, col_b = st.columns(2)
        with col_a:
            photo_a = uploads.choose_photo("Photo A", "tw-a")
        with col_b:
            photo_b = uploads.choose_photo("Photo B", "tw-b", default_index=1)
        if photo_a is None or photo_b is None:
            st.info("Choose two photos to compare.", icon=":material/photo_camera:")
            return
        image_a, key_a = _edited(photo_a, skin_tone_slider())
        pair_view(image_a, key_a, photo_b.image, photo_b.digest)


def skin_tone_slider():
    return st.select_slider(
        "Counterfactual: skin tone of photo A (Monk Skin Tone level 1 lightest to 10 darkest; 'original' = no edit)",
        options=["original", *range(1, 11)], value="original", key="tw-skin",
        help="A controlled edit of the skin pixels only, to ask: does the model's choice follow skin tone?",
    )


def _edited(photo: uploads.Photo, level) -> tuple[Image.Image, str]:
    if level == "original":
        return photo.image, photo.digest
    try:
        edited, record = skin_tone_edit(photo.digest, photo.image, int(level))
    except Exception as err:
        st.warning(f"The skin-tone edit could not be applied to this photo: {err}. Showing the original.")
        return photo.image, photo.digest
    ita = (f": median skin ITA {record['ita_before']:.0f}° → {record['ita_after']:.0f}° (lower = darker)"
           if record.get("ita_before") is not None and record.get("ita_after") is not None else "")
    st.caption(f"Photo A edited to Monk Skin Tone level {level}{ita}. Only pixels of a colour-heuristic skin mask "
               "change; that heuristic under-detects very dark and very light skin.")
    if record.get("warning"):
        st.warning(f"Skin-tone edit: {record['warning']}")
    return edited, f"{photo.digest}-mst{level}"


def single_view(image: Image.Image, key: str, photo: uploads.Photo) -> None:
    result = analyse(key, image)
    left, right = st.columns([3, 2])
    with left:
        alt = f"{OVERLAY_ALT} of {photo.name}: the most salient point is at x={result.point[0]}, y={result.point[1]}"
        st.image(overlay_png(key, image, result, "Saliency and most salient point"), alt=alt,
                 caption=f"{OVERLAY_ALT}: brighter = more salient (cividis); the + marks the most salient point.")
        working = result.resized
        scaled = (f" (scaled down from {photo.original_size[0]}×{photo.original_size[1]})"
                  if photo.original_size != photo.image.size else "")
        st.caption(f"Photo {image.width}×{image.height}{scaled}; Twitter's binary fits every image into 320×320, "
                   f"so the network sees it at {working[0]}×{working[1]} and scores one point per 16×16 pixels.")
    with right:
        st.markdown("**The crops Twitter would show** (centred on the most salient point)")
        crops_view(image, result.point)
    attribution_view(image, key, result, "the most salient point")


def crops_view(image: Image.Image, point: tuple[int, int]) -> None:
    m = _model_module()
    columns = st.columns(2)
    for i, ratio in enumerate(m.ASPECT_RATIOS):
        left, top, width, height = (int(v) for v in m.crop(image.size, point, ratio))
        with columns[i % 2]:
            st.image(image.crop((left, top, left + width, top + height)), alt=f"Crop at aspect ratio {ratio:g}",
                     caption=f"height/width {ratio:g}: {width}×{height} px")


def pair_view(image_a: Image.Image, key_a: str, image_b: Image.Image, key_b: str) -> None:
    st.markdown("The published protocol pastes the two photos side by side on a black canvas and asks which "
                "side holds the most salient point. Swapping the order shows whether position, not the face, decides.")
    orders = [("A | B", image_a, image_b, key_a, key_b, ("A", "B")), ("B | A", image_b, image_a, key_b, key_a, ("B", "A"))]
    winners = []
    columns = st.columns(2)
    from incidents.twitter_crop.canvases import join

    for column, (label, left, right, kl, kr, names) in zip(columns, orders):
        canvas, key = join(left, right), f"pair-{kl}-{kr}"
        result, left_wins = analyse_pair(key, left, right)
        winner = names[0] if left_wins else names[1]
        winners.append((winner, canvas, key, result))
        with column:
            st.image(overlay_png(key, canvas, result, f"{label}: photo {winner} wins"),
                     alt=f"{OVERLAY_ALT} of the pair {label}: photo {winner} holds the most salient point",
                     caption=f"{OVERLAY_ALT}, order {label}: the most salient point falls on photo {winner}.")
    if winners[0][0] == winners[1][0]:
        st.info(f"Photo **{winners[0][0]}** wins in both orders: the choice follows the photo, not its position.",
                icon=":material/emoji_events:")
    else:
        st.info("Each order picks a different photo: here **position**, not the face, decides.",
                icon=":material/swap_horiz:")
    winner, canvas, key, result = winners[0]
    attribution_view(canvas, key, result, f"the winning point (photo {winner}, order A | B)")
    attack_view(image_a, image_b, key, winner)


def attribution_view(image: Image.Image, key: str, result: Analysis, what: str) -> None:
    with st.expander(f"Attribution: which pixels drive {what}?", expanded=False):
        st.caption("Input attribution of the model's output at that point (Captum). Attribution maps are "
                   "evidence only where they pass the sanity checks on the About page.")
        label = st.radio("Method", list(ATTRIBUTION_METHODS), horizontal=True, key="tw-attr-method")
        if not st.toggle("Compute the attribution", key="tw-attr-on"):
            return
        method = ATTRIBUTION_METHODS[label]
        heat = attribution(key, image, result.cell, method)
        png = imaging.overlay_png(image, heat, point=result.point, title=f"{label.split(' (')[0]} attribution",
                                  colorbar_label="|attribution|, summed over colour channels", cmap="viridis")
        st.image(png, alt=f"Attribution map ({method}) for {what}",
                 caption=f"Attribution map ({label.split(' (')[0]}; viridis): brighter pixels change the output at "
                         "the + the most.")


def attack_view(left: Image.Image, right: Image.Image, key: str, winner: str) -> None:
    with st.expander(f"Attack this photo: how little it takes to crop photo {winner} out", expanded=False):
        st.caption("Changes only the photo that holds the salient point (order A | B), every pixel by at most the "
                   "budget in 0–255 levels, in the direction that most lowers its lead (the run's attack, read "
                   "through Twitter's resize and network). One or two levels are invisible to the eye.")
        budget = st.select_slider("Budget (largest change per pixel, 0–255 levels)", options=list(ATTACK_BUDGETS),
                                  value=4, key="tw-attack-budget")
        if not st.toggle("Run the attack", key="tw-attack-on"):
            return
        found, png = attack(key, left, right, int(budget))
        loser = "B" if winner == "A" else "A"
        if found.success:
            st.info(f"At {budget} level(s) per pixel the crop **moves to photo {loser}**: photo {winner} is cropped "
                    "out by a change you cannot see.", icon=":material/crop:")
        else:
            st.info(f"At {budget} level(s) per pixel photo {winner} **keeps the crop**; try a larger budget.",
                    icon=":material/shield:")
        st.image(png, alt=f"Photo {winner}'s canvas, the canvas with photo {winner} changed by at most {budget} "
                          "levels, and the change amplified",
                 caption="Left: the canvas; middle: with the winning photo changed; right: the change, amplified "
                         "(cividis).")
