"""Predict-then-reveal cards: will the virtual background swallow this head?

Each card shows one FairFace head-and-shoulders photo — as it is, or under-exposed by two stops
(:func:`autopsy.counterfactual.edit_exposure`, a dim room) — and reveals with the incident's own
measurement, :func:`incidents.zoom_matting.measure.measure_photo` (what the run and the explorer use):
MediaPipe Selfie Segmentation's person mask, BlazeFace's central face, and the share of the face's
box the mask keeps. Below half, the run counts the head as erased; no detected face is its own
outcome (the detector missing a face is part of the harm). The reveal shows the photo composited
on a plain virtual background.

Photos are the first adult (perceived age 20 or over) of a perceived group in the pinned set's
manifest (:data:`autopsy.data.FAIRFACE_CONTEXT`) and, when a run's ``photos.csv`` is given, the pinned photo
that run found hardest (lowest coverage): erased heads are rare, and a workshop should meet one.
They are fetched from the user's cache or mirror and checked against their SHA-256 when a card is
shown; none is in the repository.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from autopsy.workshop import Outcome, Scenario

SLUG = "zoom_matting"
CHOICES = ("The head stays", "The head is erased", "No face is found")
#: (perceived race, perceived gender, exposure change in stops) per card.
CARDS = (("Black", "Male", 0.0), ("Black", "Male", -2.0), ("White", "Female", 0.0), ("White", "Female", -2.0))
BACKGROUND = (0, 114, 178)  # Okabe-Ito blue: a plain virtual background
BOX_COLOUR = (230, 159, 0)  # Okabe-Ito orange
MINOR_AGES = ("0-2", "3-9", "10-19")  # FairFace's age bands: cards show adults only
NOTE = "Race and gender are perceived attributes annotated by FairFace's annotators, not self-identification."


def _row(race: str, gender: str) -> dict:
    from autopsy.data import FAIRFACE_CONTEXT

    return next(r for r in FAIRFACE_CONTEXT.rows
                if r["race"] == race and r["gender"] == gender and r["age"] not in MINOR_AGES)


def _row_of(file: str) -> dict:
    from autopsy.data import FAIRFACE_CONTEXT

    return next(r for r in FAIRFACE_CONTEXT.rows if r["file"] == file)


def hardest(outputs: str | Path | None) -> str | None:
    """The pinned photo with the lowest face coverage in a run's ``photos.csv`` (None without one).

    Only adults of the pinned set count: a bring-your-own run's photos stay out of the cards.
    """
    import pandas as pd

    from autopsy.data import FAIRFACE_CONTEXT

    path = Path(outputs) / "photos.csv" if outputs is not None else None
    if path is None or not path.is_file():
        return None
    try:
        table = pd.read_csv(path, usecols=["file", "coverage"])
    except (OSError, ValueError):
        return None
    pinned = {r["file"] for r in FAIRFACE_CONTEXT.rows if r["age"] not in MINOR_AGES}
    table = table[table["file"].isin(pinned) & table["coverage"].notna()]
    return None if table.empty else str(table.sort_values(["coverage", "file"]).iloc[0]["file"])


@functools.lru_cache(maxsize=8)
def _photo(file: str, stops: float):
    from autopsy.assets import fetch
    from autopsy.counterfactual import edit_exposure
    from autopsy.data import FAIRFACE_CONTEXT, load_image

    image = load_image(fetch(FAIRFACE_CONTEXT.asset(_row_of(file))))
    return edit_exposure(image, stops=stops)[0] if stops else image


@functools.lru_cache(maxsize=1)
def _models():
    """The incident's pinned segmenter and face detector, built once (what ``measure_photo`` would build)."""
    from incidents.zoom_matting import models

    return models.segmenter(), models.face_detector()


def _reveal(file: str, stops: float) -> Outcome:
    from PIL import ImageDraw

    from autopsy.counterfactual import replace_background
    from incidents.zoom_matting.measure import measure_photo

    image = _photo(file, stops)
    segmenter, detector = _models()
    result = measure_photo(image, segmenter=segmenter, detector=detector)
    measured = result.measured
    composite, _ = replace_background(image, result.mask, BACKGROUND)
    if result.face is None:
        answer = CHOICES[2]
        explanation = ("BlazeFace finds no face in this photo, so the call's face-dependent features fail and the run "
                       "counts it as a detector miss.")
    else:
        ImageDraw.Draw(composite).rectangle(result.face.box, outline=BOX_COLOUR, width=max(2, image.width // 150))
        answer = CHOICES[1] if measured.erased else CHOICES[0]
        explanation = (f"The person mask keeps {measured.coverage:.0%} of the face's box (orange) — "
                       f"{'below' if measured.erased else 'at or above'} the half the run uses as its line for an "
                       "erased head.")
    return Outcome(answer=answer, explanation=explanation, image=composite,
                   measured={"coverage": None if math.isnan(measured.coverage) else float(measured.coverage),
                             "erased": bool(measured.erased), "face_found": result.face is not None,
                             "exposure_stops": stops})


def _card(row: dict, stops: float, *, title: str | None = None) -> Scenario:
    who = f"FairFace {row['file']}, perceived {row['race'].lower()} {row['gender'].lower()}"
    if stops:
        title = "The same photo, in a dim room"
        setting = f"{who}, under-exposed by {-stops:g} stops as a dim webcam would be"
    else:
        title, setting = title or "A head and a virtual background", who
    key = Path(row["file"]).stem + (f"-{-stops:g}stops" if stops else "")
    return Scenario(
        id=f"{SLUG}/{key}", incident=SLUG, title=title,
        prompt=("The call replaces everything the model does not see as a person. "
                "Will the background swallow this head?"),
        choices=CHOICES, caption=f"{setting}. {NOTE}",
        picture=lambda: _photo(row["file"], stops), reveal=lambda: _reveal(row["file"], stops),
    )


def scenarios(outputs: str | Path | None = None) -> list[Scenario]:
    """Two photos, each as it is and then in a dim room; then, given a run's output folder, the photo
    that run found hardest."""
    cards = [_card(_row(race, gender), stops) for race, gender, stops in CARDS]
    file = hardest(outputs)
    if file is not None and all(not c.id.endswith(Path(file).stem) for c in cards):
        cards.append(_card(_row_of(file), 0.0, title="The photo your run found hardest"))
    return cards
