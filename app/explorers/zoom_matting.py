"""Zoom virtual-background explorer: the Google Meet segmentation model family on your photos.

The person mask (MediaPipe Selfie Segmentation, converted to torch) over the photo, how much of each
detected face (BlazeFace) stays in the foreground, the photo composited onto a choice of virtual
backgrounds, and exposure and skin-tone sliders that edit the photo before segmentation. The face
coverage shown is the run's own measurement (``incidents.zoom_matting.measure.measure_photo``: the
same models, the central face, the same thresholds), so the page and the report show one quantity.
"Attack this photo" changes it by at most a chosen number of pixel levels and shows whether the head
is erased (the run's own attack, :func:`incidents.zoom_matting.robustness.erase_heads`).
"""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from app import imaging, uploads

MASK_ALT = "Person mask overlay"
BOX_COLOUR = (230, 159, 0)  # Okabe-Ito orange
BACKGROUNDS = {  # generated, no photos: (top colour, bottom colour)
    "Deep blue": ((0, 114, 178), (0, 114, 178)),
    "Light grey": ((220, 220, 220), (220, 220, 220)),
    "Charcoal": ((40, 40, 40), (40, 40, 40)),
    "Bright window (sky gradient)": ((250, 250, 245), (86, 180, 233)),
    "Warm sunset gradient": ((240, 228, 66), (213, 94, 0)),
}
VARIANTS = {"General (256×256)": "general", "Landscape (144×256)": "landscape"}  # SelfieSegmentation pins
ATTACK_BUDGETS = (2, 4, 8, 12, 16, 24, 32, 48, 64)  # L-inf, whole 0-255 levels of the model input


@st.cache_resource(show_spinner="Loading MediaPipe Selfie Segmentation…")
def segmenter(variant: str):
    from incidents.zoom_matting import models

    return models.segmenter(weights=models.SelfieSegmentation[variant.upper()])


@st.cache_resource(show_spinner="Loading BlazeFace…")
def face_detector():
    from incidents.zoom_matting import models

    return models.face_detector()  # the run's pin: short range


@st.cache_data(max_entries=64, ttl=900, show_spinner="Segmenting and finding the face…")
def measured(key: str, _image: Image.Image, variant: str):
    """The run's own measurement of the photo (``measure.measure_photo``): mask, faces, the central
    face's coverage at the run's thresholds."""
    from incidents.zoom_matting import measure

    return measure.measure_photo(_image, segmenter=segmenter(variant), detector=face_detector())


@st.cache_data(max_entries=32, ttl=900, show_spinner="Editing the photo…")
def edited(key: str, _image: Image.Image, stops: float, level) -> tuple[Image.Image, list[str]]:
    from autopsy import counterfactual

    notes, image = [], _image
    if stops:
        image, record = counterfactual.edit_exposure(image, stops=stops)
        notes.append(f"exposure {stops:+g} stops (achieved {record.measured['achieved_stops']:+.2f})"
                     + (f"; {record.warning}" if record.warning else ""))
    if level != "original":
        image, record = counterfactual.edit_skin_tone(image, target=int(level))
        notes.append(f"skin tone to Monk level {level} (median ITA {record.measured['ita_before']:.0f}° → "
                     f"{record.measured['ita_after']:.0f}°)" + (f"; {record.warning}" if record.warning else ""))
    return image, notes


@st.cache_data(max_entries=16, ttl=900, show_spinner="Changing the photo by that budget…")
def attack(key: str, _image: Image.Image, box: tuple, variant: str, budget: int):
    """The run's attack at one budget (``robustness.erase_heads``, the quick profile's method) on the
    central face; cached by ``key`` and budget. Returns the erasure record (None: already erased on the
    model's grid), the change figure and the attacked mask overlay as PNG bytes."""
    import torch

    from autopsy.robustness import perturbation_figure
    from incidents.zoom_matting import robustness
    from incidents.zoom_matting.config import PROFILES

    quick, model = PROFILES["quick"], segmenter(variant)
    x = robustness.inputs(model, [_image], [box])
    (found,) = robustness.erase_heads(model, x, budgets=(budget,), mask_threshold=quick.mask_threshold,
                                      erased_below=quick.erased_below, method=quick.attack_method,
                                      steps=quick.attack_steps)
    if found is None:
        return None, b"", b""
    fig = perturbation_figure(found.original[None], found.adversarial[None], size=3.0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    shown = Image.fromarray((found.adversarial.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8))
    with torch.no_grad():
        mask = model(torch.from_numpy(found.adversarial[None]))[0, 0].clamp(0, 1).numpy()
    overlay = imaging.overlay_png(shown, mask, cmap="viridis", colorbar_label="person probability",
                                  title="Person mask of the attacked photo")
    return found, buffer.getvalue(), overlay


def background(name: str, size: tuple[int, int]) -> np.ndarray:
    top, bottom = (np.array(c, dtype=np.float32) for c in BACKGROUNDS[name])
    t = np.linspace(0, 1, size[1], dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size[1], size[0], 3)).astype(np.uint8)


def show(lab, incident) -> None:
    st.markdown("Run the **Google Meet segmentation model family** (MediaPipe Selfie Segmentation, converted "
                "to PyTorch) on a photo and see what a virtual background keeps of the person — and of the face.")
    photo = uploads.choose_photo("Photo", "zm")
    if photo is None:
        st.info("Upload a photo or pick one from your cache to start.", icon=":material/photo_camera:")
        return
    c1, c2, c3 = st.columns(3)
    variant = VARIANTS[c1.radio("Segmentation model", list(VARIANTS), key="zm-variant")]
    stops = c2.slider("Exposure (stops)", -3.0, 3.0, 0.0, 0.5, key="zm-stops",
                      help="A camera-like exposure change before segmentation: under-exposed webcams are common.")
    level = c3.select_slider("Skin tone (Monk level; 'original' = no edit)", options=["original", *range(1, 11)],
                             value="original", key="zm-skin")
    image, key = photo.image, photo.digest
    if stops or level != "original":
        try:
            image, notes = edited(f"{key}-{stops}-{level}", photo.image, stops, level)
            key = f"{key}-{stops}-{level}"
            st.caption("Edited before segmentation: " + "; ".join(notes) + ".")
        except Exception as err:
            st.warning(f"The edit could not be applied to this photo: {err}. Showing the original.")
    try:
        result = measured(f"{key}-{variant}", image, variant)
    except Exception as err:
        st.error(f"The MediaPipe models are not available: {err}", icon=":material/error:")
        return
    choice = st.selectbox("Virtual background", list(BACKGROUNDS), key="zm-background")
    from autopsy.counterfactual import replace_background

    mask, boxes = result.mask, [d.box for d in result.faces]
    composite, _ = replace_background(image, mask, background(choice, image.size))
    left, right = st.columns(2)
    with left:
        outlined = image.copy()
        draw = ImageDraw.Draw(outlined)
        for box in boxes:
            draw.rectangle(box, outline=BOX_COLOUR, width=max(2, image.width // 200))
        st.image(imaging.overlay_png(outlined, mask, cmap="viridis", colorbar_label="person probability",
                                     title="Person mask (viridis) and faces found"),
                 alt=f"{MASK_ALT}: {mask.mean():.0%} of the photo is kept as person; {len(boxes)} face(s) boxed",
                 caption=f"{MASK_ALT}: bright = kept as person; orange boxes = faces found by BlazeFace.")
    with right:
        st.image(composite, alt=f"The photo on the virtual background '{choice}'",
                 caption=f"What the call shows: the photo on '{choice}'.")
    if result.face is None:
        st.info("BlazeFace found no face in this photo, so face coverage cannot be measured; the run counts such "
                "photos as detector misses, per group.")
        return
    from incidents.zoom_matting.measure import ERASED_BELOW, MASK_THRESHOLD

    m = result.measured
    st.metric("Face coverage: share of the central face's box kept as person", f"{m.coverage:.0%}",
              help=f"The run's measure: pixels of the box of the face nearest the photo's centre with person "
                   f"probability ≥ {MASK_THRESHOLD:g}. Low values are the incident's harm: the face disappears into "
                   "the virtual background.")
    st.caption(f"Soft coverage (mean probability) {m.soft_coverage:.0%}; eyes, nose and mouth kept "
               f"{m.keypoints_kept:.0%}; {'head erased' if m.erased else 'head kept'} by the run's rule "
               f"(coverage below {ERASED_BELOW:.0%}). {len(boxes)} face(s) found; the run measures the central one.")
    attack_view(image, key, result.face.box, variant)


def attack_view(image: Image.Image, key: str, box, variant: str) -> None:
    with st.expander("Attack this photo: how little it takes to erase the head", expanded=False):
        st.caption("Changes every pixel of the photo as the model sees it (256×256) by at most the budget in 0–255 "
                   "levels, in the direction that most lowers the face's person score (the run's attack). The "
                   "head counts as erased when less than half of the face box stays person, on the model's grid.")
        budget = st.select_slider("Budget (largest change per pixel, 0–255 levels)", options=list(ATTACK_BUDGETS),
                                  value=16, key="zm-attack-budget")
        if not st.toggle("Run the attack", key="zm-attack-on"):
            return
        found, change, overlay = attack(f"{key}-{variant}", image, tuple(box), variant, int(budget))
        if found is None:
            st.info("On the model's own grid this head is already erased: there is nothing left to attack.")
            return
        verdict = "the head is **erased**" if found.success else "the head **stays**; try a larger budget"
        st.info(f"At {budget} level(s) per pixel {verdict}: the face box kept as person goes from "
                f"{found.coverage_before:.0%} to {found.coverage_after:.0%}.",
                icon=":material/person_off:" if found.success else ":material/shield:")
        left, right = st.columns(2)
        left.image(change, alt=f"The photo, the photo changed by at most {budget} levels, and the change amplified",
                   caption="The photo as the model sees it, attacked, and the change (amplified, cividis).")
        right.image(overlay, alt=f"Person mask of the attacked photo: face box kept {found.coverage_after:.0%}",
                    caption="What the background model keeps of the attacked photo (viridis).")
