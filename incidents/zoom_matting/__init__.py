"""Zoom virtual background (2020): the background model that erased a Black man's head.

In September 2020 Colin Madland posted that Zoom's virtual background removed the head of a Black
faculty colleague while keeping his body. Zoom's model is not public; the same class of model is:
MediaPipe Selfie Segmentation, from Google Meet's background-replacement work (Apache-2.0), converted
from TFLite to torch (:mod:`autopsy.models.mediapipe`). The lab measures how much of each detected face
(BlazeFace) the person mask keeps, per perceived group, intervenes on lighting, skin tone and
background, and investigates the model. No AI Incident Database entry exists for Zoom itself; the
case appears in the reports of incident #103 (Twitter's crop), hence ``aiid=None``.

The package: :mod:`.models` (the pinned models), :mod:`.config` (settings and profiles),
:mod:`.data`, :mod:`.measure` (the observable), :mod:`.groups`, :mod:`.interventions` and
:mod:`.simulate`, :mod:`.autopsy_steps`, :mod:`.figures`, :mod:`.metrics` and :mod:`.stages`.
The first call for a researcher::

    from incidents.zoom_matting.measure import measure_photo
    result = measure_photo(PIL.Image.open("photo.jpg"))  # mask, faces, the central one, its coverage
"""

from pathlib import Path

from autopsy.contract import Incident
from incidents.zoom_matting import data, models
from incidents.zoom_matting.config import PROFILES, ZoomConfig
from incidents.zoom_matting.metrics import ZoomMetrics
from incidents.zoom_matting.stages import STAGES

INCIDENT = Incident(
    slug="zoom_matting",
    title="Zoom virtual background",
    date="2020-09-19",
    harm="Background replacement erased a Black man's head from the picture while keeping his body.",
    story=Path(__file__).parent / "story.md",
    config=ZoomConfig,
    profiles=PROFILES,
    stages=STAGES,
    metrics=ZoomMetrics,
    assets=data.assets,
    models={"segmenter": models.segmenter, "detector": models.face_detector},
    weights={"segmenter": models.SelfieSegmentation.GENERAL.value, "detector": models.FaceDetection.SHORT_RANGE.value},
    aiid=None,
    explorer="app.explorers.zoom_matting",
)
