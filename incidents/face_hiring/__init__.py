"""Face-based hiring (HireVue, 2019-2021; AIID #95 and #37): how bias enters a face-based hiring score.

HireVue scored video interviews with facial movements among the inputs ("facial action units can
make up 29% of a score", Washington Post, Nov 2019) and dropped facial analysis in January 2021
(AI Incident Database #95); Amazon's CV model learnt to penalise women from its own hiring history
without gender as an input (#37). The lab rebuilds such a scorer from public parts and separates the
two ways bias enters it: the **perception models** (what they read from a face) and the **labels**
(the historical decisions it imitates, simulated here with a recruiter-bias strength beta).

The package: :mod:`.data` (candidates, First Impressions labels), :mod:`.perception` (the three face
models per face), :mod:`.audit` (Rhue 2018's matched-smile design, Gender Shades), :mod:`.labels`,
:mod:`.simulate` (the historical decisions), :mod:`.scorer` (trained by the lab, with provenance),
:mod:`.failure`, :mod:`.autopsy_steps`, :mod:`.mitigation`, :mod:`.plots`, :mod:`.explore` (one face),
:mod:`.config`, :mod:`.metrics`, :mod:`.stages` and :mod:`.record`. The first call for a researcher::

    from incidents.face_hiring import PerceptionModels, perceive
    row = perceive(PerceptionModels.load(), [PIL.Image.open("face.jpg")], face="detect")  # emotions, blendshapes
"""

from pathlib import Path

from autopsy.contract import Incident, Stage
from autopsy.models.face_landmarker import FACE_LANDMARKER_V2, FaceLandmarker
from autopsy.models.keras_h5 import FER2013_EMOTION, IMDB_GENDER, emotion_mini_xception, gender_mini_xception
from incidents.face_hiring import data, record, robustness, stages
from incidents.face_hiring.config import PROFILES, HiringConfig
from incidents.face_hiring.metrics import HiringMetrics
from incidents.face_hiring.perception import PerceptionModels, perceive  # noqa: F401 - the public entry points


def face_landmarker(*, weights=FACE_LANDMARKER_V2) -> FaceLandmarker:
    """MediaPipe Face Landmarker v2 with 52 blendshapes in torch; ``weights=None``: random parameters, no file read."""
    return FaceLandmarker(weights=weights)


INCIDENT = Incident(
    slug="face_hiring",
    title="Face-based hiring",
    date="2019-11-06",
    harm="Job candidates were scored from their faces; bias can enter through the face models and the past decisions.",
    story=Path(__file__).parent / "story.md",
    config=HiringConfig,
    profiles=PROFILES,
    stages=(
        Stage("candidates", stages.candidates, share=0.04, save=False),
        Stage("perception", stages.perception, share=0.4),
        Stage("audit", stages.audit, share=0.04),
        Stage("labels", stages.labels, share=0.03),
        Stage("hiring", stages.hiring, share=0.1),
        Stage("counterfactual", stages.counterfactual, share=0.08),
        Stage("autopsy", stages.autopsy, share=0.2),
        Stage("mitigation", stages.mitigation, share=0.1),
        Stage("robustness", robustness.stage, share=0.06),
        Stage("findings", record.findings, share=0.01),
    ),
    metrics=HiringMetrics,
    assets=data.assets,
    models={"emotion": emotion_mini_xception, "gender": gender_mini_xception, "landmarker": face_landmarker},
    weights={"emotion": FER2013_EMOTION, "gender": IMDB_GENDER, "landmarker": FACE_LANDMARKER_V2},
    aiid=95,
    explorer="app.explorers.face_hiring",
)
