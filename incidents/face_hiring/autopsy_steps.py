"""The autopsy of the scorer: what it encodes, what changes its decision, where on the face it looks.

- **Skin-tone counterfactuals**: faces edited along the Monk Skin Tone scale inside a skin mask
  (:func:`autopsy.counterfactual.edit_skin_tone`, measured by the Individual Typology Angle),
  perceived again and re-scored; the share of decisions that flip, with Wilson intervals. An edit
  changes one thing, so a flip is a decision that depended on it.
- **The rest through** :func:`autopsy.examine.examine`, on :class:`~.scorer.FaceScorer` (the face ->
  score path through the expression model; the blendshapes held fixed):

  * attribution of the score to the face's pixels (Integrated Gradients, Grad-CAM on the expression
    model's last residual block, occlusion), with the share on the mouth and the eyes (boxes around
    the Face Landmarker's lip and eye landmarks);
  * the cascading randomisation check (Adebayo et al. 2018) and deletion/insertion (Petsiuk et al. 2018);
  * feature visualisation (Olah et al. 2017) of expression channels (the class channels of the
    expression model's last convolution) and of the score itself;
  * probes with a shuffled-label control (Hewitt & Liang 2019): is perceived race or gender decodable
    from the scorer's inputs (all of them; the expression model's features; the blendshapes)?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lucent.optvis.objectives import Objective

from autopsy import counterfactual, fairness
from autopsy.examine import examine
from autopsy.models.keras_h5 import preprocess
from autopsy.stats import proportion
from incidents.face_hiring import perception
from incidents.face_hiring.scorer import SCORER_FEATURES, FaceScorer

#: MediaPipe Face Mesh indices around the lips and the two eyes (FACEMESH_LIPS, _LEFT_EYE, _RIGHT_EYE).
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)
EYES = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
        263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
GRADCAM_LAYER = f"emotion.layers.{perception.EXPRESSION_LAYER}"
CLASS_LAYER = "emotion.layers.conv2d_7"  # the expression model's last convolution: one channel per class


# -- skin-tone counterfactuals ---------------------------------------------------------------------------


def edit_faces(images, levels) -> tuple[list, list[dict]]:
    """Each face edited to each Monk level: ``(edited images, one record per edit)``; a face whose skin
    mask is empty is recorded as skipped, not dropped."""
    edited, records = [], []
    for k, image in enumerate(images):
        for level in levels:
            try:
                out, record = counterfactual.edit_skin_tone(image, target=int(level))
            except ValueError as err:
                records.append({"face": k, "mst": int(level), "skipped": str(err)})
                continue
            edited.append(out)
            records.append({"face": k, "mst": int(level), "skipped": None, "ita_before": record.measured["ita_before"],
                            "ita_after": record.measured["ita_after"], "warning": record.warning})
    return edited, records


def flip_summary(frame: pd.DataFrame, *, n_boot: int, seed: int) -> tuple[dict, list[dict]]:
    """Flip rates (Wilson) and mean score changes (bootstrap) per Monk level, overall and by perceived race."""
    metrics, rows = {}, []
    for level, part in frame.groupby("mst"):
        flips = proportion(int(part["flipped"].sum()), len(part))
        change = fairness.mean_estimate(part["score_after"] - part["score_before"], n_boot=n_boot, seed=seed)
        metrics[f"mst_{level}"] = {"flip_rate": flips, "score_change": change,
                                   "advanced_to_rejected": int((part["before"] & ~part["after"]).sum()),
                                   "rejected_to_advanced": int((~part["before"] & part["after"]).sum()),
                                   "median_ita_after": float(part["ita_after"].median())}
        for race, group in part.groupby("race"):
            rows.append({"Monk level": int(level), "perceived race": race,
                         "decisions flipped": proportion(int(group["flipped"].sum()), len(group)),
                         "score change": fairness.mean_estimate(group["score_after"] - group["score_before"],
                                                                n_boot=n_boot, seed=seed)})
    return metrics, rows


def skin_tone_flips(models, scorer, images, people: pd.DataFrame, features: pd.DataFrame, config, *,
                    seed: int) -> dict:
    """Edit, perceive again, re-score; compare each edited face's decision with its original's."""
    edited, records = edit_faces(images, config.mst_levels)
    done = [r for r in records if r["skipped"] is None]
    skipped = len(records) - len(done)
    if not done:
        return {"metrics": {"n_faces": len(images), "n_edits": 0, "skipped": len(records)}, "rows": [], "frame": None}
    faces = np.array([r["face"] for r in done])
    after = perception.perceive(models, edited, batch_size=config.batch_size, features=True)
    readable = (after["face_found"] & (after["face_presence"] >= config.min_face_presence)).to_numpy()
    faces, after, done = faces[readable], after[readable], [r for r, ok in zip(done, readable) if ok]
    if not done:
        return {"metrics": {"n_faces": len(images), "n_edits": 0, "skipped": skipped}, "rows": [], "frame": None}
    score_before = scorer.logit(features.iloc[faces])
    score_after = scorer.logit(after)
    frame = pd.DataFrame({"face": faces, "mst": [r["mst"] for r in done], "race": people["race"].to_numpy()[faces],
                          "gender": people["gender"].to_numpy()[faces], "ita_before": [r["ita_before"] for r in done],
                          "ita_after": [r["ita_after"] for r in done], "score_before": score_before,
                          "score_after": score_after, "before": score_before >= scorer.threshold,
                          "after": score_after >= scorer.threshold})
    frame["flipped"] = frame["before"] != frame["after"]
    metrics, rows = flip_summary(frame, n_boot=config.n_bootstrap, seed=seed)
    overall = proportion(int(frame["flipped"].sum()), len(frame))
    levels = sorted(frame["mst"].unique())
    return {"metrics": {"n_faces": len(images), "n_edits": len(frame), "skipped": skipped,
                        "unreadable_after_edit": int((~readable).sum()),
                        "flip_rate": overall, "by_level": metrics, "lightest": metrics[f"mst_{levels[0]}"],
                        "darkest": metrics[f"mst_{levels[-1]}"], "levels": [int(v) for v in levels]},
            "rows": rows, "frame": frame}


# -- examine: attribution, checks, feature visualisation, probes -----------------------------------------


def grey_input(x: torch.Tensor) -> torch.Tensor:
    """Feature visualisation's [0, 1] RGB images -> the expression model's grey 64 x 64 input in [-1, 1]."""
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    return (F.interpolate(grey, size=(64, 64), mode="bilinear", align_corners=False) - 0.5) * 2


def face_regions(models, images) -> list[dict]:
    """Boolean 64 x 64 masks of the mouth and the eyes for each face, from its landmarks."""
    marks = models.landmarker.analyse(images, regions=[perception._crop_region(im) for im in images])
    out = []
    for image, points in zip(images, marks.landmarks):
        xy = points[:, :2] * np.array([64 / image.width, 64 / image.height])
        out.append({name: _box_mask(xy[list(ids)]) for name, ids in (("mouth", LIPS), ("eyes", EYES))})
    return out


def _box_mask(points: np.ndarray, margin: float = 2.0, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    if not np.isfinite(points).all():
        return mask
    (x0, y0), (x1, y1) = np.floor(points.min(0) - margin).astype(int), np.ceil(points.max(0) + margin).astype(int)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def objectives(emotion, config) -> dict:
    """Feature-visualisation objectives: the configured expression classes' channels, and the score."""
    classes = list(emotion.classes)
    chosen = {f"'{c}' channel": f"{CLASS_LAYER}:{classes.index(c)}" for c in config.featviz_channels}
    chosen["the employability score"] = Objective(lambda T: -T("output").mean(), name="score")
    return chosen


def cascade(model: FaceScorer, steps: int) -> list[str]:
    """The randomisation cascade, output side first: the scorer's head, the expression model's last
    ``steps - 2`` parametrised layers up to the block the score reads (later layers do not reach the
    score), then the whole expression model at once, so the cascade ends fully random."""
    layers = model.emotion.spec["layers"]
    stop = next(k for k, layer in enumerate(layers) if layer["name"] == model.layer)
    reached = {layer["name"] for layer in layers[:stop + 1]}
    trunk = [f"emotion.layers.{name}" for name, m in model.emotion.layers.named_children()
             if name in reached and any(True for _ in m.parameters())]
    return ["head", *trunk[::-1][:max(steps - 2, 0)], "emotion"]


def examine_scorer(models, scorer, images, features: pd.DataFrame, people: pd.DataFrame, config, *, seed: int,
                   progress=None):
    """The toolkit's sequence on the face -> score path (module docstring); returns the Examination.

    ``features`` hold every analysed candidate's perception features: the blendshapes are held at
    their mean for attribution; the probes read them all.
    """
    model = FaceScorer(models.emotion, scorer, features[list(perception.BLENDSHAPE_COLUMNS)].mean().to_numpy())
    x = preprocess(images, models.emotion.weights)
    inputs = features[list(SCORER_FEATURES)].to_numpy(float)
    k = len(perception.EXPRESSION_COLUMNS)
    probes = {"race, the scorer's inputs": (inputs, people["race"]),
              "gender, the scorer's inputs": (inputs, people["gender"]),
              "race, the expression model's features only": (inputs[:, :k], people["race"]),
              "race, blendshapes only": (inputs[:, k:], people["race"])}
    return examine(model, x, target=lambda out: out[:, 0], layer=GRADCAM_LAYER, window=config.occlusion_window,
                   steps=config.attribution_steps, regions=face_regions(models, images),
                   cascade=cascade(model, config.randomisation_steps), faithfulness_steps=config.faithfulness_steps,
                   faithfulness_batch=16, objectives=objectives(models.emotion, config),
                   featviz_size=config.featviz_size, featviz_steps=config.featviz_steps, preprocess=grey_input,
                   probes=probes, probe_cv=config.probe_cv, seed=seed, progress=progress)
