"""One face through the run's own functions: what the models read, the score, what changes it.

The explorer (``app/explorers/face_hiring.py``) and the notebook call these; they reuse the run's
pieces unchanged: :func:`.data.load` and :func:`.perception.perceive` for a reference set of
candidates, :func:`.simulate.simulate` for their (simulated) history at a chosen beta,
:func:`.scorer.train` for the scorer (cached with its provenance), and
:func:`autopsy.counterfactual.edit_skin_tone` for the skin-tone edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from incidents.face_hiring import data, perception, simulate
from incidents.face_hiring import scorer as scoring
from incidents.face_hiring.config import PROFILES

#: Reference candidates per perceived race x gender cell: enough for a stable scorer, seconds to perceive.
REFERENCE_PER_GROUP = 10


@dataclass(frozen=True)
class Reference:
    """Candidates whose simulated history trains the explorer's scorers (the run's functions, a small set)."""

    config: object
    people: pd.DataFrame
    features: pd.DataFrame

    def scorer(self, beta: float) -> scoring.Scorer:
        """The scorer trained on this set's history at recruiter-bias strength ``beta``."""
        history = simulate.simulate(self.features, self.people, self.config, seed=self.config.seed)
        return scoring.train(self.features, history.decisions(beta), c=self.config.scorer_c, seed=self.config.seed,
                             beta=beta)


def reference(models: perception.PerceptionModels, *, per_group: int | None = None) -> Reference:
    """The first ``per_group`` (default :data:`REFERENCE_PER_GROUP`) adult FairFace crops of each cell,
    perceived; faces the landmark model barely sees are left out."""
    from autopsy.data import load_image

    config = PROFILES["quick"].replace(limit_per_group=per_group or REFERENCE_PER_GROUP)
    table, _ = data.load(config)
    features = perception.perceive(models, [load_image(p) for p in table["path"]], batch_size=config.batch_size,
                                   features=True)
    kept = (features["face_found"] & (features["face_presence"] >= config.min_face_presence)).to_numpy()
    return Reference(config, table[kept].reset_index(drop=True), features[kept].reset_index(drop=True))


def read_face(models: perception.PerceptionModels, image, detector=None) -> tuple[pd.DataFrame, object, bool]:
    """Perceive one photo as the run does: cropped to its face like a FairFace crop (BlazeFace), or
    read whole when no face is detected. Returns ``(one-row features, the face image, face found)``."""
    crops, found = data.crop_faces([image], detector or models.landmarker.detector)
    return perception.perceive(models, crops, features=True), crops[0], bool(found[0])


def contributions(model: scoring.Scorer, row: pd.DataFrame, *, top: int = 6) -> pd.DataFrame:
    """The features that move this face's score most (weight x standardised value), largest first."""
    x = row[list(scoring.SCORER_FEATURES)].to_numpy(float)[0]
    part = (x - model.mean) / model.scale * model.coef
    order = np.argsort(-np.abs(part))[:top]
    return pd.DataFrame({"feature": [scoring.SCORER_FEATURES[i] for i in order],
                         "contribution to the score (logit)": part[order]})
