"""The autopsy of the crop: which pixels make the winning point, what the readout sees, what the trunk encodes.

- Attribution of the winning saliency value (the canvas maximum) to input pixels: Integrated
  Gradients and Grad-CAM on the port, Occlusion as a gradient-free check; the share of
  attribution on each face; sanity checks (Adebayo et al. 2018 randomisation; Petsiuk et al.
  2018 deletion/insertion) reported with their verdicts.
- Feature visualisation of the readout channels (lucent).
- An auxiliary classifier (Hewitt & Liang 2019 control task): is perceived race decodable from
  trunk features?
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from autopsy import featviz, figures, probes, saliency
from incidents.twitter_crop import model

READOUT_LAYER = "layers.conv14"  # first of the 1x1 readout convolutions (7 channels)
GRADCAM_LAYER = "layers.conv13"  # last 3x3 convolution of the trunk
PROBE_LAYERS = ("relu4", "relu9", "relu13")


def winning_value(output: torch.Tensor) -> torch.Tensor:
    """The saliency at the canvas maximum, one scalar per canvas: what decides the crop."""
    return output.flatten(1).amax(dim=1)


def run(network, images: dict, passes: dict, trials: pd.DataFrame, table: pd.DataFrame, out_dir: Path,
        params: dict, progress=lambda f, m: None) -> dict:
    """``passes``: per-image :class:`~incidents.twitter_crop.seam.ImagePass` at 256 px high (pooled features)."""
    metrics, tables, figs = {}, {}, {}
    examples = _pick_examples(trials, params["attribution_examples"])
    canvases, seams, captions = [], [], []
    for _, t in examples.iterrows():
        left, right = (images[t["first_image"]], images[t["second_image"]])
        left, right = _fixed(left, params), _fixed(right, params)
        canvases.append(torch.cat([model.preprocess(left), model.preprocess(right)], dim=-1))
        seams.append(left.width)
        winner = t["first"] if t["first_wins_max"] else t["second"]
        captions.append(f"{t['first']} (left) vs {t['second']} (right): {winner} wins")
    x = torch.cat(canvases)

    maps = {
        "integrated_gradients": saliency.attribute(network, x, target=winning_value, method="integrated_gradients",
                                                   n_steps=params["attribution_steps"], internal_batch_size=4),
        "grad_cam": saliency.attribute(network, x, target=winning_value, method="grad_cam", layer=GRADCAM_LAYER),
        "occlusion": saliency.attribute(network, x, target=winning_value, method="occlusion",
                                        sliding_window_shapes=(3, 64, 64), strides=(3, 64, 64)),
    }
    progress(0.8, "sanity checks")
    shares = []
    for method, a in maps.items():
        mass = np.abs(a).sum(axis=1) if a.ndim == 4 else np.abs(a)
        for k, seam in enumerate(seams):
            left_share = float(mass[k][:, :seam].sum() / max(mass[k].sum(), 1e-12))
            shares.append({"example": captions[k], "method": method, "share on left image": left_share})
    tables["attribution_shares"] = shares

    check = saliency.randomisation_check(network, x[:1], target=winning_value, method="gradient")
    faith = saliency.faithfulness(network, x[:1], maps["integrated_gradients"][:1], target=winning_value,
                                  steps=10, n_random=2, batch_size=8)
    metrics["randomisation_check"] = {"method": "gradient", "passed": check.passed, "reason": check.reason,
                                      "final_spearman": float(check.steps["spearman"].iloc[-1])}
    metrics["faithfulness"] = {k: v for k, v in faith.to_dict().items() if not isinstance(v, list)}
    tables["randomisation_steps"] = check.steps.round(3).to_dict(orient="records")
    figs["attribution.png"] = _figure_attribution(x, maps, captions, out_dir / "attribution.png")

    progress(0.88, "feature visualisation")
    channels = list(range(min(params.get("featviz_channels", 4), 7)))
    renders = [featviz.channel(network, READOUT_LAYER, c, size=params["featviz_size"], steps=params["featviz_steps"],
                               seed=params["seed"], preprocess=model.featviz_preprocess)
               for c in channels]
    figs["featviz.png"] = _figure_featviz(renders, channels, out_dir / "featviz.png")

    progress(0.93, "race probe")
    metrics["probe"], tables["probe"] = _probe(passes, table, params)
    return {"metrics": metrics, "tables": tables, "figures": figs}


def _fixed(image, params):
    h = params["fixed_height"]
    return image.resize((max(16, round(image.width * h / image.height / 16) * 16), h), resample=3)


def _pick_examples(trials: pd.DataFrame, n: int) -> pd.DataFrame:
    """Cross-race trials of the published order: some where the Black face won, some where it lost."""
    part = trials[(trials["order"] == "published") & (trials["setting"] == trials["setting"].iloc[0])
                  & (trials["first"].str[0] == "B") & (trials["second"].str[0] == "W")]
    won = part[part["first_wins_max"]].head((n + 1) // 2)
    lost = part[~part["first_wins_max"]].head(n // 2)
    return pd.concat([won, lost])


def _probe(passes: dict, table: pd.DataFrame, params: dict):
    """Perceived race (Black vs White) from spatially pooled trunk features, with a control task.

    The features are the spatial means kept by the per-image passes, the same numbers
    ``probes.activations(network, "layers.<layer>", ..., pool="mean")`` returns, without a second pass.
    """
    ids = sorted(passes)
    labels = table.loc[ids, "race"].to_numpy()
    result, rows = {}, []
    for layer in PROBE_LAYERS:
        features = torch.stack([passes[i].pooled[layer] for i in ids]).numpy()
        smallest = int(pd.Series(labels).value_counts().min())
        if smallest < 2:
            return {"skipped": f"a class has {smallest} photo(s); a probe needs at least 2 per class"}, []
        r = probes.probe(features, labels, seed=params["seed"], cv=min(5, smallest))
        result[layer] = r.to_dict()
        rows.append({"layer": layer, "probe accuracy": r.accuracy, "control task": r.control,
                     "selectivity": r.selectivity, "majority class": r.majority, "warning": r.warning})
    return result, rows


def _figure_attribution(x, maps, captions, path: Path) -> str:
    n = x.shape[0]
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(4.2 * (len(maps) + 1), 2.4 * n), squeeze=False)
    for k in range(n):
        axes[k][0].imshow(model.deprocess(x[k]))
        axes[k][0].set_title(captions[k], fontsize=9)
        for j, (method, a) in enumerate(maps.items(), start=1):
            m = np.abs(a[k]).sum(axis=0)
            im = axes[k][j].imshow(m, cmap=figures.MAP_CMAP)
            axes[k][j].set_title(method.replace("_", " "), fontsize=9)
            fig.colorbar(im, ax=axes[k][j], fraction=0.025)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Attribution of the winning saliency value for cross-race pairs: IG, Grad-CAM and occlusion"


def _figure_featviz(renders, channels, path: Path) -> str:
    fig, axes = plt.subplots(1, len(renders), figsize=(2.6 * len(renders), 2.9), squeeze=False)
    for ax, img, c in zip(axes[0], renders, channels):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(f"{READOUT_LAYER.split('.')[-1]} channel {c}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Feature visualisations of readout channels: images that maximise each channel"
