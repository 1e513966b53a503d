"""Predict-then-reveal cards: two faces side by side — which one will Twitter's crop keep?

Each card joins two FairFace head-and-shoulders photos on the published protocol's canvas
(:func:`.canvases.join`: left | right on black) and reveals with Twitter's own saliency model
(:func:`.model.saliency_map`, :func:`.model.salient_point`): the photo that holds the most salient
point is the one a crop centred there keeps. The cards come in pairs, the same two photos in both
orders, so a group sees for itself whether the face or the position decides — the question the
published protocol could not answer (it never swapped sides).

Photos are the first adult (perceived age 20 or over) of each perceived group in the pinned set's
manifest (:data:`autopsy.data.FAIRFACE_CONTEXT`), fetched from the user's cache or mirror and checked
against their SHA-256 when a card is shown; none is in the repository.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from autopsy.workshop import Outcome, Scenario

SLUG = "twitter_crop"
CHOICES = ("The left face", "The right face")
#: (left, right) perceived groups of each card, as the paper's codes; each pair is also played swapped.
PAIRS = (("BF", "WM"), ("WF", "BM"))
MINOR_AGES = ("0-2", "3-9", "10-19")  # FairFace's age bands: cards show adults only
NOTE = "Race and gender are perceived attributes annotated by FairFace's annotators, not self-identification."


def _row(code: str) -> dict:
    """The manifest row of the first photo of a paper group (no file is read but the manifest)."""
    from autopsy.data import FAIRFACE_CONTEXT
    from incidents.twitter_crop.protocol import PAPER_GROUPS

    race, gender = PAPER_GROUPS[code]
    return next(r for r in FAIRFACE_CONTEXT.rows
                if r["race"] == race and r["gender"] == gender and r["age"] not in MINOR_AGES)


def _describe(code: str) -> str:
    row = _row(code)
    return f"FairFace {row['file']}, perceived {row['race'].lower()} {row['gender'].lower()}"


@functools.lru_cache(maxsize=8)
def _photo(code: str):
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT, load_image

    return load_image(fetch(FAIRFACE_CONTEXT.asset(_row(code))))


def _canvas(left: str, right: str):
    from incidents.twitter_crop.canvases import join

    return join(_photo(left), _photo(right))


def _reveal(left: str, right: str) -> Outcome:
    from matplotlib.patches import Rectangle

    from autopsy.figures import saliency_overlay
    from incidents.twitter_crop import model

    canvas = _canvas(left, right)
    saliency = model.saliency_map(canvas)
    x, y = model.salient_point(saliency)
    heat = saliency.heatmap() if hasattr(saliency, "heatmap") else np.asarray(saliency)  # grid or dense map
    seam = _photo(left).width
    side = 0 if x < seam else 1
    best = (float(np.nanmax(heat[:, :seam])), float(np.nanmax(heat[:, seam:])))  # how close the call was
    box = model.crop(canvas.size, (x, y), 1.0)  # a square thumbnail centred on the point
    fig = saliency_overlay(canvas, heat, point=(x, y), alpha=0.45, figsize=(7.0, 4.0),
                           title="Saliency (cividis), the crop's centre (+) and a square crop (dashed)")
    for colour, width, style in (("white", 2.5, "-"), ("black", 1.0, "--")):
        fig.axes[0].add_patch(Rectangle(box[:2], box[2], box[3], fill=False, edgecolor=colour, linewidth=width,
                                        linestyle=style))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    explanation = (f"The most salient point is at x = {x}, y = {y}, on the {('left', 'right')[side]} photo "
                   f"({_describe((left, right)[side])}), so a crop centred there keeps that face. Highest saliency "
                   f"on each side: left {best[0]:.2f}, right {best[1]:.2f} (the model's scores; a small gap is a "
                   "fragile choice).")
    return Outcome(answer=CHOICES[side], explanation=explanation, image=buffer.getvalue(),
                   measured={"point": [int(x), int(y)], "seam_x": int(seam), "left_best": best[0],
                             "right_best": best[1], "crop_box": [int(v) for v in box]})


def _card(left: str, right: str, *, swapped: bool) -> Scenario:
    prompt = "Twitter crops a photo around its most salient point. Which face will the crop keep?"
    if swapped:
        prompt += " You have seen these two photos the other way round: does the answer change?"
    return Scenario(
        id=f"{SLUG}/{left.lower()}-{right.lower()}", incident=SLUG,
        title="The same two photos, sides swapped" if swapped else "Two faces, one crop",
        prompt=prompt, choices=CHOICES,
        caption=f"Left: {_describe(left)}. Right: {_describe(right)}. {NOTE}",
        picture=lambda: _canvas(left, right), reveal=lambda: _reveal(left, right),
    )


def scenarios(outputs=None) -> list[Scenario]:
    """Four cards: each pair of perceived groups in :data:`PAIRS`, then the same two photos swapped.
    (``outputs``, a run's output folder, is accepted for a uniform interface and not needed here.)"""
    cards = []
    for left, right in PAIRS:
        cards += [_card(left, right, swapped=False), _card(right, left, swapped=True)]
    return cards
