"""The autopsy of the crop: which pixels make the winning point, what the readout sees, what the trunk encodes.

All of it is the toolkit's sequence (:func:`autopsy.examine.examine`) on the binary's own pipeline:

- attribution of the winning score (the canvas maximum, which decides the crop) to the canvas's
  pixels through the resize and the network (:class:`CanvasSaliency`): Integrated Gradients,
  Grad-CAM and occlusion, with the share of attribution on each photo; the randomisation check
  (Adebayo et al. 2018) and deletion/insertion (Petsiuk et al. 2018);
- feature visualisation of the readout channels (lucent);
- an auxiliary classifier (Hewitt & Liang 2019 control task): is perceived race decodable from
  trunk features of each photo as the protocol shows it?
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autopsy import figures
from autopsy.examine import examine
from incidents.twitter_crop import model
from incidents.twitter_crop.canvases import to_tensor

READOUT_LAYER = "layers.conv14"  # first of the 1x1 readout convolutions (7 channels)
GRADCAM_LAYER = "network.layers.conv13"  # last 3x3 convolution of the trunk
PROBE_LAYERS = ("relu4", "relu9", "relu13")


class CanvasSaliency(nn.Module):
    """A canvas (N, 3, H, W) in RGB 0-255 -> the binary's score grid: resize, input planes, network."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return model.score_grid(x, model=self.network)


def winning_value(output: torch.Tensor) -> torch.Tensor:
    """The score of the canvas maximum, one scalar per canvas: what decides the crop."""
    return output.flatten(1).amax(dim=1)


def attribute(network, canvases: list, seams: list[int], config, features: dict, labels, progress=None):
    """Attribution with sanity checks on ``canvases`` (PIL, one size) and the race probes on ``features``."""
    x = torch.cat([to_tensor(c) for c in canvases])
    regions = [{"left photo": np.arange(x.shape[-1])[None, :].repeat(x.shape[-2], 0) < seam} for seam in seams]
    regions = [{**r, "right photo": ~r["left photo"]} for r in regions]
    return examine(CanvasSaliency(network).eval(), x, target=winning_value, layer=GRADCAM_LAYER, window=64,
                   steps=config.attribution_steps, regions=regions, faithfulness_steps=10, faithfulness_batch=8,
                   probes={layer: (features[layer], labels) for layer in PROBE_LAYERS}, probe_cv=5,
                   seed=config.seed, progress=progress)


def readout_images(network, config) -> dict:
    """Feature visualisations of the readout channels (images that maximise each channel)."""
    objectives = {f"{READOUT_LAYER.split('.')[-1]} channel {c}": f"{READOUT_LAYER}:{c}" for c in range(4)}
    found = examine(network, None, objectives=objectives, featviz_size=config.featviz_size,
                    featviz_steps=config.featviz_steps, preprocess=model.featviz_preprocess, seed=config.seed)
    return found.renders


def figure_attribution(x: torch.Tensor, maps: dict, captions: list[str]):
    n = x.shape[0]
    fig = figures.new_figure(figsize=(4.2 * (len(maps) + 1), 2.4 * n))
    axes = fig.subplots(n, len(maps) + 1, squeeze=False)
    for k in range(n):
        axes[k][0].imshow(x[k].permute(1, 2, 0).numpy().astype(np.uint8))
        axes[k][0].set_title(captions[k], fontsize=9)
        for j, (method, a) in enumerate(maps.items(), start=1):
            shown = axes[k][j].imshow(np.abs(a[k]).sum(axis=0), cmap=figures.MAP_CMAP)
            axes[k][j].set_title(method.replace("_", " "), fontsize=9)
            fig.colorbar(shown, ax=axes[k][j], fraction=0.025)
    for ax in axes.flat:
        ax.axis("off")
    return fig, "Attribution of the winning score for cross-race canvases: IG, Grad-CAM and occlusion"


def figure_renders(renders: dict):
    fig = figures.image_grid([np.clip(r, 0, 1) for r in renders.values()], titles=list(renders), ncols=len(renders),
                             size=2.6)
    return fig, "Feature visualisations of readout channels: images that maximise each channel"
