"""The reproduced scorer: an "employability" score read from the face, trained by the lab.

HireVue's score combined a candidate's words, voice and facial movements (the face "up to 29%").
The lab reproduces its face part with the simplest such model: a logistic regression (L2, lbfgs;
deterministic on a CPU in seconds) on **frozen** features of each face,

- the expression model's own features: the 128 channels of its last residual block, averaged over
  positions (:data:`~incidents.face_hiring.perception.EXPRESSION_COLUMNS`), and
- the Face Landmarker's 52 blendshapes (:data:`~incidents.face_hiring.perception.BLENDSHAPE_COLUMNS`),

standardised, trained on simulated historical decisions (:mod:`.simulate`), in which the face carries
29% of the score and the rest of the application (which the scorer does not see) the other 71%.
Race and gender are never inputs (nor is the gender model's output). It advances the same share of
applicants the history did: its threshold is the training scores' quantile at one minus the
training advance rate.

It is trained through :func:`autopsy.trained.train_or_load`, so each fit is cached with its
provenance (hashes of the training features and labels, config, seed, code, library versions,
weights SHA-256), which the run record carries. :class:`FaceScorer` is the same score as a
differentiable torch module from the face image (the expression model plus the linear head, the
blendshapes held fixed), for attribution and feature visualisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from autopsy.trained import Provenance, data_sha256, train_or_load
from incidents.face_hiring.perception import BLENDSHAPE_COLUMNS, EXPRESSION_COLUMNS, EXPRESSION_LAYER

#: The scorer's inputs, in order: the expression model's 128 features, then the 52 blendshapes.
SCORER_FEATURES = (*EXPRESSION_COLUMNS, *BLENDSHAPE_COLUMNS)
NAME = "face-hiring-scorer"


@dataclass(frozen=True)
class Scorer:
    """A trained scorer: standardisation, logistic weights, decision threshold (on the logit)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    provenance: Provenance | None = None

    @classmethod
    def from_weights(cls, weights: dict, provenance: Provenance | None = None) -> "Scorer":
        return cls(weights["mean"], weights["scale"], weights["coef"], float(weights["intercept"][0]),
                   float(weights["threshold"][0]), provenance)

    def logit(self, features) -> np.ndarray:
        """The employability score (log-odds of "advanced") of each row of ``features``."""
        x = _matrix(features)
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def probability(self, features) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(features)))

    def decide(self, features) -> np.ndarray:
        """1 where the scorer advances the candidate, else 0."""
        return (self.logit(features) >= self.threshold).astype(int)


def _matrix(features) -> np.ndarray:
    if isinstance(features, pd.DataFrame):
        missing = [c for c in SCORER_FEATURES if c not in features]
        if missing:
            raise ValueError(f"the scorer needs the perception columns {missing[:3]}...; run "
                             "perception.perceive(..., features=True)")
        features = features[list(SCORER_FEATURES)]
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(SCORER_FEATURES):
        raise ValueError(f"expected (n, {len(SCORER_FEATURES)}) scorer features; got shape {x.shape}")
    return x


def fit_weights(x: np.ndarray, y: np.ndarray, *, c: float) -> dict[str, np.ndarray]:
    """Standardise ``x``, fit an L2 logistic regression, set the threshold at the training advance rate."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        raise ValueError(f"the training decisions are all {int(y[0])}; the scorer needs both outcomes "
                         "(more candidates, or a base_rate further from 0 and 1)")
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    model = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    logits = z @ model.coef_[0] + model.intercept_[0]
    threshold = np.quantile(logits, 1.0 - y.mean())
    return {"mean": mean, "scale": scale, "coef": model.coef_[0], "intercept": model.intercept_,
            "threshold": np.array([threshold])}


def train(features: pd.DataFrame, decisions, *, c: float, seed: int, beta: float) -> Scorer:
    """Train (or load from the cache) the scorer on ``features`` and simulated ``decisions``."""
    x, y = _matrix(features), np.asarray(decisions, dtype=int)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows for {len(y)} decisions")

    def fit():
        return fit_weights(x, y, c=c)

    data = {"features": data_sha256(x), "decisions": data_sha256(y)}
    config = {"model": "StandardScaler + LogisticRegression(L2, lbfgs)", "C": c, "beta": beta,
              "features": "expression model add_4 (128, mean-pooled) + Face Landmarker blendshapes (52)",
              "labels": "simulated historical decisions (incidents.face_hiring.simulate)",
              "threshold": "training logit quantile at 1 - training advance rate"}
    weights, record = train_or_load(NAME, fit, data=data, config=config, seed=seed)
    return Scorer.from_weights(weights, record)


class FaceScorer(nn.Module):
    """The score as a function of the face: expression-model input ``[N, 1, 64, 64]`` -> logit ``[N, 1]``.

    The expression model runs to its last residual block, which is averaged over positions and
    passed through the scorer's linear head. The blendshapes are held fixed at ``blendshapes``
    (one face's 52 values, or their mean over several faces): they enter the logit as a constant,
    so attributions to the pixels do not depend on them.
    """

    layer = EXPRESSION_LAYER

    def __init__(self, emotion, scorer: Scorer, blendshapes):
        super().__init__()
        self.emotion = emotion
        k = len(EXPRESSION_COLUMNS)
        w = scorer.coef / scorer.scale
        constant = float(np.asarray(blendshapes, dtype=np.float64) @ w[k:])
        self.head = nn.Linear(k, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(w[:k], dtype=torch.float32)[None])
            self.head.bias.fill_(scorer.intercept - float(scorer.mean @ w) + constant)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.emotion.intermediates(x, names=[self.layer])[self.layer].mean(dim=(2, 3))
        return self.head(features)
