"""Zoom virtual background (2020): the background model that erased a Black man's head.

In September 2020 Colin Madland posted that Zoom's virtual background removed the head of a Black
faculty colleague while keeping his body. Zoom's model is not public; the same class of model is:
MediaPipe Selfie Segmentation, from Google Meet's background-replacement work (Apache-2.0), converted
from TFLite to torch (:mod:`autopsy.models.mediapipe`). The lab measures how much of each detected face
(BlazeFace) the person mask keeps, per perceived group, intervenes on lighting, skin tone and
background, and investigates the model. No AI Incident Database entry exists for Zoom itself; the
case appears in the reports of incident #103 (Twitter's crop), hence ``aiid=None``.

The first call for a researcher::

    from incidents.zoom_matting import face_coverage_of
    result = face_coverage_of(PIL.Image.open("photo.jpg"))  # mask, face box, coverage, erased flag

Heavy modules (torch) load on first use, so listing incidents stays fast.
"""

from pathlib import Path

from autopsy.registry import Incident

SLUG = "zoom_matting"


def assets(profile: str = "quick"):
    from incidents.zoom_matting import data

    return data.assets(profile)


def build_model(weights=True, variant: str = "general"):
    """MediaPipe Selfie Segmentation in torch; ``weights=None`` builds it with random parameters and
    reads no file but the architecture spec that ships with the lab."""
    from autopsy.models.mediapipe import SelfieSegmenter

    return SelfieSegmenter(variant, weights=weights).eval()


def load_data(profile: str = "quick", **options):
    from incidents.zoom_matting import data

    return data.load(profile, **options)


def investigate(out_dir, params, progress=None):
    from incidents.zoom_matting.investigate import investigate as run

    return run(out_dir, params, progress=progress)


def face_coverage_of(image, *, segmenter=None, detector=None, threshold: float = 0.5):
    """Person mask, central face and its coverage for one PIL image (see :mod:`.measure`)."""
    from incidents.zoom_matting import measure

    return measure.measure_photo(image, segmenter=segmenter, detector=detector, threshold=threshold)


INCIDENT = Incident(
    slug=SLUG,
    title="Zoom virtual background",
    date="2020-09-19",
    harm="Background replacement erased a Black man's head from the picture while keeping his body.",
    assets=assets,
    build_model=build_model,
    load_data=load_data,
    investigate=investigate,
    story=Path(__file__).parent / "story.md",
    profiles=("quick",),
    aiid=None,
    explorer="app.explorers.zoom_matting",
)
