"""The autopsy of the mask (:func:`autopsy.examine.examine`): which pixels keep a face, what the
decoder responds to, what the bottleneck encodes.

- Attribution of the face's person score -- the mean pre-sigmoid person logit inside the face box --
  to input pixels (Integrated Gradients, Grad-CAM on a decoder layer, occlusion), for erased heads
  (or, when none is erased, the lowest-coverage photos: the run says which) beside kept heads of the
  same perceived race and gender; the attribution mass split into face box, the rest of the head,
  the body and the background.
- Sanity checks: cascading parameter randomisation (Adebayo et al. 2018) through about
  ``randomisation_steps`` encoder and decoder convolutions, and deletion / insertion (Petsiuk et al. 2018).
- Feature visualisation of the person output and of decoder channels.
- Probes: are perceived race and gender decodable from the pooled bottleneck features, above a
  shuffled-label control (Hewitt & Liang 2019)?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from autopsy.examine import Examination, examine
from incidents.zoom_matting import interventions, measure

#: Grad-CAM layer: the decoder's last 1x1 convolution at 64x64, before the final upsampling stages.
GRADCAM_LAYER = "segmenter.model.ops.conv2d_38"
#: Feature-visualisation layer: the same decoder convolution (16 channels).
FEATVIZ_LAYER = "segmenter.model.ops.conv2d_38"
REGIONS = ("face box", "rest of head", "body", "background")


class PersonLogit(nn.Module):
    """The segmenter's pre-sigmoid person logits ``[N, 1, 256, 256]`` (the ``segment`` tensor):
    attributions of a logit do not vanish where the sigmoid saturates."""

    def __init__(self, segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return measure.logits(self.segmenter, x)


def face_score(box_model):
    """Target: mean person logit inside ``box_model`` (face box in model-input pixels), one per item."""

    def target(out: torch.Tensor) -> torch.Tensor:
        rows, cols = measure.box_slices(box_model, out.shape[-2:])
        return out[:, 0, rows, cols].mean(dim=(1, 2))

    return target


def to_model_box(box, image_size, model_size):
    """A box in image pixels mapped onto the stretched model input (keep_aspect_ratio: false)."""
    (w, h), (mh, mw) = image_size, model_size
    x0, y0, x1, y1 = box
    return (x0 * mw / w, y0 * mh / h, x1 * mw / w, y1 * mh / h)


def pick_examples(photos: pd.DataFrame, n: int, erased_below: float):
    """``n`` erased heads (lowest coverage first) or, if none is erased, the ``n`` lowest-coverage
    photos; each paired with a kept head (coverage >= 0.99, else the highest) of the same race and
    gender. Returns (low indices, kept indices, which: 'erased' or 'lowest coverage')."""
    faces = photos[photos["face_detected"]].sort_values("coverage")
    erased = faces[faces["coverage"] < erased_below]
    which = "erased" if len(erased) else "lowest coverage (no head erased in this run)"
    low = list((erased if len(erased) else faces).index[:n])
    kept = []
    for i in low:
        same = faces[(faces["race"] == photos.at[i, "race"]) & (faces["gender"] == photos.at[i, "gender"])
                     & ~faces.index.isin(low + kept)]
        pool = same if len(same) else faces[~faces.index.isin(low + kept)]
        if not len(pool):
            continue
        good = pool[pool["coverage"] >= 0.99]
        kept.append(int(good.index[0] if len(good) else pool["coverage"].idxmax()))
    return low, kept, which


def captions(photos: pd.DataFrame, examples, which: str) -> list[str]:
    """One line per example for the attribution figure: its side, perceived group and coverage."""
    def side(s):
        return ("flagged erased" if which == "erased" else "lowest") if s == "low" else "kept"

    return [f"{side(s)}: {photos.at[i, 'race']} {photos.at[i, 'gender']}, face box kept {photos.at[i, 'coverage']:.0%}"
            for i, s in examples]


def regions(mask_model: np.ndarray, box_model, shape) -> dict[str, np.ndarray]:
    """Face box, rest of the head, body (person mask outside the head) and background, model pixels."""
    face = np.zeros(shape, bool)
    rows, cols = measure.box_slices(box_model, shape)
    face[rows, cols] = True
    head = np.zeros(shape, bool)
    rows, cols = measure.box_slices(interventions.head_region(box_model, shape), shape)
    head[rows, cols] = True
    person = mask_model >= 0.5
    return dict(zip(REGIONS, (face, head & ~face, person & ~head, ~person & ~head)))


def randomisation_cascade(segmenter, *, steps: int = 8) -> list[str]:
    """Layers for the cascading randomisation, output side first: about ``steps`` decoder and encoder
    convolutions spaced through the network (each step re-initialises one more; those in between stay
    trained), and a last step that re-initialises every layer, so the cascade ends fully random."""
    order = (segmenter.encoder_layers + segmenter.decoder_layers)[::-1]
    stride = max(1, len(order) // max(1, steps - 1))
    return [f"segmenter.model.ops.{name}" for name in order[::stride]] + ["segmenter.model.ops"]


def objectives(channels: int) -> dict[str, str]:
    """Feature-visualisation objectives: the person output and the first decoder channels."""
    short = FEATVIZ_LAYER.rsplit(".", 1)[-1]
    return {"person logit (output)": "output:0",
            **{f"{short} channel {c}": f"{FEATVIZ_LAYER}:{c}" for c in range(channels)}}


def inputs(segmenter, images, photos: pd.DataFrame, examples) -> dict:
    """Model inputs, face boxes in model pixels, targets, person masks and regions of the examples."""
    network = PersonLogit(segmenter).eval()
    xs = [segmenter.preprocess(images[i]) for i, _ in examples]
    boxes = [to_model_box(photos.at[i, "box"], images[i].size, segmenter.input_size) for i, _ in examples]
    with torch.no_grad():
        masks = [torch.sigmoid(network(x))[0, 0].numpy() for x in xs]
    return {"network": network, "x": torch.cat(xs) if xs else None, "boxes": boxes,
            "targets": [face_score(b) for b in boxes], "masks": masks,
            "regions": [regions(m, b, m.shape) for m, b in zip(masks, boxes)]}


def run(segmenter, prepared: dict, features: np.ndarray, photos: pd.DataFrame, config, progress=None) -> Examination:
    """The whole sequence on the examples of :func:`inputs`, the featviz objectives and the probes."""
    size = segmenter.input_size

    def resize(x):
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    return examine(
        prepared["network"], prepared["x"], target=prepared["targets"], layer=GRADCAM_LAYER,
        window=config.occlusion_window, steps=config.attribution_steps,
        method_options={"occlusion": {"perturbations_per_eval": 8}}, regions=prepared["regions"],
        cascade=randomisation_cascade(segmenter, steps=config.randomisation_steps),
        faithfulness_steps=config.faithfulness_steps, objectives=objectives(config.featviz_channels),
        featviz_size=config.featviz_size, featviz_steps=config.featviz_steps, preprocess=resize,
        probes={target: (features, photos[target].astype(str).to_numpy()) for target in ("race", "gender")},
        probe_cv=config.probe_cv, seed=config.seed, progress=progress)


def share_summary(found: Examination, sides: list[str]) -> dict:
    """Mean share of the attribution mass per region, by side (erased/lowest, kept) and method."""
    frame = pd.DataFrame([{"side": side, "method": method.replace("_", " "), **shares}
                          for side, per_method in zip(sides, found.shares) for method, shares in per_method.items()])
    summary: dict = {}
    for (side, method), g in frame.groupby(["side", "method"]):
        summary.setdefault(side.replace("/", "_"), {})[method.replace(" ", "_")] = {
            name: float(g[name].mean()) for name in REGIONS}
    return summary
