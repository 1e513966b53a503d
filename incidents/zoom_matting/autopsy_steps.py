"""The autopsy of the mask: which pixels keep a face, what the decoder responds to, what the bottleneck encodes.

- Attribution of the face's person score -- the mean pre-sigmoid person logit inside the face box --
  to input pixels: Integrated Gradients, Grad-CAM on a named decoder layer, and Occlusion (no
  gradients), for erased heads (or, when none is erased, the lowest-coverage photos: the run says
  which) beside kept heads of the same perceived race and gender. The attribution mass is split
  into face box, the rest of the head, the body and the background.
- Sanity checks: cascading parameter randomisation (Adebayo et al. 2018) and deletion / insertion
  (Petsiuk et al. 2018).
- Feature visualisation (lucent) of the person output and of decoder channels.
- An auxiliary classifier: is perceived race decodable from the pooled bottleneck features? With a
  shuffled-label control (Hewitt & Liang 2019).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from autopsy import featviz, figures, probes, saliency
from incidents.zoom_matting import interventions, measure

#: Grad-CAM layer: the decoder's last 1x1 convolution at 64x64, before the final upsampling stages.
GRADCAM_LAYER = "segmenter.model.ops.conv2d_38"
#: Feature-visualisation layer: the same decoder convolution (16 channels).
FEATVIZ_LAYER = "segmenter.model.ops.conv2d_38"


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


def pick_examples(table: pd.DataFrame, n: int, erased_below: float):
    """``n`` erased heads (lowest coverage first) or, if none is erased, the ``n`` lowest-coverage
    photos; each paired with a kept head (coverage >= 0.99, else the highest) of the same race and
    gender. Returns (low indices, kept indices, which: 'erased' or 'lowest coverage')."""
    faces = table[table["face_detected"]].sort_values("coverage")
    erased = faces[faces["coverage"] < erased_below]
    which = "erased" if len(erased) else "lowest coverage (no head erased in this run)"
    low = list((erased if len(erased) else faces).index[:n])
    kept = []
    for i in low:
        same = faces[(faces["race"] == table.at[i, "race"]) & (faces["gender"] == table.at[i, "gender"])
                     & ~faces.index.isin(low + kept)]
        pool = same if len(same) else faces[~faces.index.isin(low + kept)]
        if not len(pool):
            continue
        good = pool[pool["coverage"] >= 0.99]
        kept.append(int(good.index[0] if len(good) else pool["coverage"].idxmax()))
    return low, kept, which


def regions(mask_model: np.ndarray, box_model, shape) -> dict[str, np.ndarray]:
    """Face box, rest of the head, body (person mask outside the head) and background, model pixels."""
    face = np.zeros(shape, bool)
    rows, cols = measure.box_slices(box_model, shape)
    face[rows, cols] = True
    head = np.zeros(shape, bool)
    rows, cols = measure.box_slices(interventions.head_region(box_model, shape), shape)
    head[rows, cols] = True
    person = mask_model >= 0.5
    return {"face box": face, "rest of head": head & ~face, "body": person & ~head, "background": ~person & ~head}


def randomisation_cascade(segmenter, *, steps: int = 8) -> list[str]:
    """Layers for the cascading randomisation, output side first: about ``steps`` decoder and encoder
    convolutions spaced through the network (each step re-initialises one more; those in between stay
    trained), and a last step that re-initialises every layer, so the cascade ends fully random."""
    order = (segmenter.encoder_layers + segmenter.decoder_layers)[::-1]
    stride = max(1, len(order) // max(1, steps - 1))
    return [f"segmenter.model.ops.{name}" for name in order[::stride]] + ["segmenter.model.ops"]


def run(segmenter, images, masks, bottleneck: np.ndarray, table: pd.DataFrame, out_dir: Path, params: dict,
        progress=lambda f, m: None) -> dict:
    metrics, tables, figs = {}, {}, {}
    network = PersonLogit(segmenter).eval()
    size = segmenter.input_size
    low, kept, which = pick_examples(table, params["attribution_examples"], params["erased_below"])
    examples = [(i, "low") for i in low] + [(i, "kept") for i in kept]
    metrics["examples"] = {"low_side": which, "n_low": len(low), "n_kept": len(kept),
                           "low_coverage": [float(table.at[i, "coverage"]) for i in low],
                           "kept_coverage": [float(table.at[i, "coverage"]) for i in kept]}
    if not examples:
        metrics["attribution"] = {"skipped": "no photo with a detected face"}
        tables["attribution_shares"] = [{"note": "no photo with a detected face: nothing to attribute"}]
    else:
        found = _attribute(network, segmenter, images, table, examples, params, size, out_dir, which)
        metrics.update(found["metrics"])
        tables.update(found["tables"])
        figs.update(found["figures"])

    progress(0.9, "feature visualisation")
    figs["featviz.png"] = _featviz(network, params, size, out_dir / "featviz.png")

    progress(0.95, "race probe on the bottleneck")
    metrics["probe"], tables["probe"] = _probe(bottleneck, table, params)
    metrics["probe_layer"] = segmenter.bottleneck
    return {"metrics": metrics, "tables": tables, "figures": figs}


def _attribute(network, segmenter, images, table, examples, params, size, out_dir, which) -> dict:
    metrics, tables = {}, {}
    maps = {"integrated_gradients": [], "grad_cam": [], "occlusion": []}
    inputs, shares = [], []
    win = params["occlusion_window"]
    for i, side in examples:
        x = segmenter.preprocess(images[i])
        box = to_model_box(table.at[i, "box"], images[i].size, size)
        target = face_score(box)
        inputs.append((x, box, target))
        maps["integrated_gradients"].append(saliency.attribute(
            network, x, target=target, method="integrated_gradients", n_steps=params["attribution_steps"],
            internal_batch_size=4)[0])
        maps["grad_cam"].append(saliency.attribute(network, x, target=target, method="grad_cam",
                                                   layer=GRADCAM_LAYER)[0])
        maps["occlusion"].append(saliency.attribute(
            network, x, target=target, method="occlusion", sliding_window_shapes=(3, win, win),
            strides=(3, win, win), perturbations_per_eval=8)[0])
    with torch.no_grad():
        model_masks = [torch.sigmoid(network(x))[0, 0].numpy() for x, _, _ in inputs]
    for k, (i, side) in enumerate(examples):
        parts = regions(model_masks[k], inputs[k][1], model_masks[k].shape)
        for method, per_item in maps.items():
            mass = np.abs(per_item[k]).sum(0)
            total = max(float(mass.sum()), 1e-12)
            shares.append({"photo": table.at[i, "file"], "side": "erased/lowest" if side == "low" else "kept",
                           "coverage": float(table.at[i, "coverage"]), "method": method.replace("_", " "),
                           **{name: float(mass[m].sum() / total) for name, m in parts.items()}})
    frame = pd.DataFrame(shares)
    tables["attribution_shares"] = frame.round(3).to_dict(orient="records")
    summary = {}
    for (side, method), g in frame.groupby(["side", "method"]):
        summary.setdefault(side.replace("/", "_"), {})[method.replace(" ", "_")] = {
            name: float(g[name].mean()) for name in ("face box", "rest of head", "body", "background")}
    metrics["attribution"] = {"target": "mean pre-sigmoid person logit inside the face box",
                              "grad_cam_layer": GRADCAM_LAYER, "shares": summary}

    first_x, _, first_target = inputs[0]
    check = saliency.randomisation_check(network, first_x, target=first_target, method="gradient",
                                         layers=randomisation_cascade(segmenter, steps=params["randomisation_steps"]))
    ig_first = maps["integrated_gradients"][0][None]
    faith = saliency.faithfulness(network, first_x, ig_first, target=first_target,
                                  steps=params["faithfulness_steps"], n_random=2)
    metrics["randomisation_check"] = {"method": "gradient", "passed": check.passed, "reason": check.reason,
                                      "final_spearman": float(check.steps["spearman"].iloc[-1]),
                                      "n_layers": int(len(check.steps))}
    metrics["faithfulness"] = {k: v for k, v in faith.to_dict().items() if not isinstance(v, list)}
    step = max(1, len(check.steps) // 8)
    tables["randomisation_steps"] = check.steps.iloc[::step].round(3).to_dict(orient="records")
    captions = [f"{'flagged erased' if side == 'low' and which == 'erased' else 'lowest' if side == 'low' else 'kept'}: "
                f"{table.at[i, 'race']} {table.at[i, 'gender']}, face box kept {table.at[i, 'coverage']:.0%}"
                for i, side in examples]
    figs = {"attribution.png": _figure_attribution(inputs, maps, captions, model_masks, out_dir / "attribution.png")}
    return {"metrics": metrics, "tables": tables, "figures": figs}


def _featviz(network, params, size, path: Path) -> str:
    def preprocess(x):
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    options = {"size": params["featviz_size"], "steps": params["featviz_steps"], "seed": params["seed"],
               "preprocess": preprocess}
    objectives = [("output:0", "person logit (output)")]
    objectives += [(f"{FEATVIZ_LAYER}:{c}", f"{FEATVIZ_LAYER.rsplit('.', 1)[-1]} channel {c}")
                   for c in range(params["featviz_channels"])]
    renders = [featviz.render(network, objective, **options) for objective, _ in objectives]
    fig = figures.image_grid(renders, titles=[t for _, t in objectives], ncols=len(renders), size=2.6)
    fig.suptitle("Synthetic images that maximise the person output and decoder channels (lucent)", fontsize=10)
    fig.savefig(path, dpi=110)
    return "Feature visualisations: images synthesised to maximise the person logit and decoder channels"


def _probe(bottleneck: np.ndarray, table: pd.DataFrame, params):
    """Perceived race (all groups) and perceived gender from pooled bottleneck features, with controls."""
    result, rows = {}, []
    for target in ("race", "gender"):
        labels = table[target].astype(str).to_numpy()
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2 or counts.min() < params["probe_cv"]:
            reason = (f"skipped: {target} needs at least 2 classes with {params['probe_cv']} photos each; "
                      f"got {dict(zip(classes.tolist(), counts.tolist()))}")
            result[target] = {"skipped": reason}
            rows.append({"perceived attribute": target, "probe accuracy": reason})
            continue
        r = probes.probe(bottleneck, labels, cv=params["probe_cv"], seed=params["seed"])
        result[target] = {"accuracy": r.accuracy, "control": r.control, "selectivity": r.selectivity,
                          "majority_baseline": r.majority, "n_classes": len(classes)}
        rows.append({"perceived attribute": target, "classes": len(classes), "probe accuracy": r.accuracy,
                     "control (shuffled labels)": r.control, "selectivity": r.selectivity,
                     "majority class": r.majority})
    return result, rows


def _figure_attribution(inputs, maps, captions, model_masks, path: Path) -> str:
    n = len(inputs)
    fig = figures.new_figure(figsize=(3.1 * (len(maps) + 2), 3.0 * n))
    axes = fig.subplots(n, len(maps) + 2, squeeze=False)
    for k, (x, box, _) in enumerate(inputs):
        img = x[0].permute(1, 2, 0).numpy()
        axes[k][0].imshow(img)
        axes[k][0].set_title(captions[k], fontsize=8)
        axes[k][1].imshow(model_masks[k], cmap=figures.MAP_CMAP, vmin=0, vmax=1)
        axes[k][1].set_title("person probability", fontsize=8)
        for j, (method, per_item) in enumerate(maps.items(), start=2):
            m = np.abs(per_item[k]).sum(0)
            shown = axes[k][j].imshow(m, cmap=figures.MAP_CMAP)
            axes[k][j].set_title(f"{method.replace('_', ' ')} |attribution|", fontsize=8)
            fig.colorbar(shown, ax=axes[k][j], fraction=0.04)
        x0, y0, x1, y1 = box
        for ax in axes[k][1:]:
            ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#E69F00", lw=1.2))
        for ax in axes[k]:
            ax.set_axis_off()
    fig.suptitle("What drives the face's person score (mean logit in the orange face box)", fontsize=10)
    fig.savefig(path, dpi=110)
    return "Attribution of the face's person score for lowest-coverage and kept heads: IG, Grad-CAM, occlusion"
