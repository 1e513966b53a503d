"""Exact saliency maps of side-by-side canvases at the cost of one pass per image.

Twitter's protocol (Yee et al. 2021) runs the model on two images pasted side by side. The
network is fully convolutional, so the canvas's feature maps equal the two images' own maps
everywhere except in a band around the seam, where a kernel sees the other image instead of
zero padding. This module runs each image once, keeps a few columns at its left and right
edges after every layer, and recomputes only the seam band for a pair: the result equals a
full forward pass on the canvas (tested to float tolerance) at a small fraction of the cost,
which is what makes thousands of paired trials feasible on two CPU cores.

Works for a ``nn.Sequential`` trunk of 2-D convolutions (stride 1, odd kernels, "same"
padding), element-wise activations and non-overlapping max pooling, followed by any head
applied to the whole canvas map. Canvases whose seam does not align with the pooling grid, or
images of different heights, fall back to the full pass.

When the canvas is resized as a whole before the network (as Twitter's binary does), the input
itself differs from the two photos' own resized inputs in a few columns around the seam:
``input_band=b`` makes the band start there, and :meth:`SeamCanvas.trunk_canvas` takes the exact
canvas columns ``[seam - b, seam + b)`` as ``strip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn



@dataclass(frozen=True)
class ImagePass:
    """What a pair needs from one image: the edge columns the seam band reads, and the trunk output."""

    edges_left: tuple[torch.Tensor | None, ...]  # per layer input: its first columns, (H, k, C) (None: not read)
    edges_right: tuple[torch.Tensor | None, ...]  # per layer input: its last columns, (H, k, C)
    trunk_out: torch.Tensor  # (C, h, w) before the head
    height: int
    width: int
    pooled: dict[str, torch.Tensor]  # spatial mean of every layer's output, by layer name (for probes)


@dataclass(frozen=True)
class _Step:
    """How one layer moves the seam band: it reads input columns [seam - read, seam + read)."""

    read: int  # columns read on each side of the seam (0: the layer works on the band alone)
    band_in: int  # band half-width at the layer's input
    band_out: int  # band half-width at its output
    pool: int  # pooling factor (1 for convolutions and activations)
    scale: int  # downsampling of the layer's input relative to the image


class SeamCanvas:
    """Saliency of ``[left | right]`` canvases from per-image passes (see module docstring)."""

    def __init__(self, trunk: nn.Sequential, head: nn.Module, *, input_band: int = 0):
        self.trunk, self.head, self.input_band = trunk, head, input_band
        for layer in trunk:
            if isinstance(layer, nn.Conv2d):
                if layer.stride != (1, 1) or layer.dilation != (1, 1) or layer.groups != 1:
                    raise TypeError(f"seam recomputation needs plain stride-1 convolutions, got {layer}")
                if layer.padding != (layer.kernel_size[0] // 2, layer.kernel_size[1] // 2):
                    raise TypeError(f"seam recomputation needs 'same' padding, got {layer}")
            elif isinstance(layer, nn.MaxPool2d):
                if layer.kernel_size != layer.stride or layer.padding != 0:
                    raise TypeError(f"seam recomputation needs non-overlapping pooling, got {layer}")
            elif not isinstance(layer, (nn.ReLU, nn.PReLU, nn.Identity)):
                raise TypeError(f"seam recomputation does not know layer {layer}")
        self.stride = math.prod(_pool(l) for l in trunk if isinstance(l, nn.MaxPool2d))
        self.plan = _plan(trunk, input_band)

    @torch.no_grad()
    def image_pass(self, x: torch.Tensor, *, edges: str = "both") -> ImagePass:
        """Run one preprocessed image (1, 3, H, W) through the trunk, keeping edge columns.

        ``edges="right"`` keeps only the columns a canvas reads when the image is on its left
        (``"left"``: on its right), half the memory of ``"both"``; ``"none"`` keeps none (for
        ``pooled`` and ``trunk_out`` alone).
        """
        if edges not in ("both", "left", "right", "none"):
            raise ValueError(f"edges must be 'both', 'left', 'right' or 'none', got {edges!r}")
        lefts, rights, pooled, height, width = [], [], {}, x.shape[-2], x.shape[-1]
        in_place = not _hooked(self.trunk)  # ReLUs may overwrite their input: no hook expects to see it
        x = x.contiguous(memory_format=torch.channels_last)  # ~2x faster convolutions on CPU
        for position, (step, (name, layer)) in enumerate(zip(self.plan, self.trunk.named_children())):
            keep = min(step.read, x.shape[-1])
            rows = x[0].permute(1, 2, 0)  # (H, W, C): channels-last memory in its own order
            lefts.append(rows[:, :keep].contiguous() if keep and edges in ("both", "left") else None)
            rights.append(rows[:, x.shape[-1] - keep:].contiguous() if keep and edges in ("both", "right") else None)
            x = x.relu_() if in_place and position and type(layer) is nn.ReLU else layer(x)
            pooled[name] = x[0].mean(dim=(1, 2))
        return ImagePass(tuple(lefts), tuple(rights), x[0], height=height, width=width, pooled=pooled)

    def aligned(self, left: ImagePass, right: ImagePass) -> bool:
        """Whether the seam shortcut is exact for this pair (else run a full pass on the canvas)."""
        return left.height == right.height and all(
            p.width % self.stride == 0 and all(p.width // step.scale >= step.read for step in self.plan)
            for p in (left, right)
        )

    @torch.no_grad()
    def trunk_canvas(self, lefts: list[ImagePass], rights: list[ImagePass], strip: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Trunk outputs of the canvases ``[lefts[i] | rights[i]]``: (N, C, h, w_left + w_right).

        All lefts share one width, all rights another, and all one height. ``strip`` (N, C, h, 2b)
        holds the canvas's exact input columns around the seam when ``input_band=b`` > 0.
        """
        if self.input_band and (strip is None or strip.shape[-1] != 2 * self.input_band):
            raise ValueError(f"this canvas needs the {2 * self.input_band} input columns around the seam (strip)")
        if len({(p.height, p.width) for p in lefts}) != 1 or len({(p.height, p.width) for p in rights}) != 1:
            raise ValueError("a batch of canvases needs one size of left image and one size of right image")
        if not self.aligned(lefts[0], rights[0]):
            raise ValueError("images of different heights or widths off the pooling grid need a full pass")
        # The band lives as (N, H, W, C): windows are assembled along W from the photos' edges and
        # handed to oneDNN as channels-last NCHW views (its fast path for these narrow windows).
        seam = lefts[0].width
        band = strip.permute(0, 2, 3, 1).contiguous() if self.input_band else None  # columns [seam - b, seam + b)
        for i, (step, layer) in enumerate(zip(self.plan, self.trunk)):
            if step.read:
                left_edge = torch.stack([p.edges_right[i][:, : step.read - step.band_in] for p in lefts])
                right_edge = torch.stack([p.edges_left[i][:, step.band_in:] for p in rights])
                window = torch.cat([left_edge, *([band] if band is not None else []), right_edge], dim=2)
                window = window.permute(0, 3, 1, 2)
                if isinstance(layer, nn.Conv2d):
                    band = F.conv2d(window, layer.weight, layer.bias, padding=(layer.padding[0], 0))
                else:
                    band = layer(window)
                band = band.permute(0, 2, 3, 1)
                seam //= step.pool
            elif band is not None:
                band = layer(band.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # element-wise, keeps the layout
            elif isinstance(layer, nn.MaxPool2d):
                seam //= step.pool
        b = self.plan[-1].band_out
        left_out = torch.stack([p.trunk_out for p in lefts])
        right_out = torch.stack([p.trunk_out for p in rights])
        if band is None:
            return torch.cat([left_out, right_out], dim=-1)
        return torch.cat([left_out[..., : seam - b], band.permute(0, 3, 1, 2), right_out[..., b:]], dim=-1)

    @torch.no_grad()
    def canvas_maps(self, lefts: list[ImagePass], rights: list[ImagePass], strip: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The head applied to each canvas: (N, h, w) saliency at the trunk's resolution."""
        return self.head(self.trunk_canvas(lefts, rights, strip))[:, 0]


def _hooked(trunk: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in trunk.modules())


def _plan(trunk: nn.Sequential, band: int = 0) -> list[_Step]:
    """Follow the seam band through the trunk once; it does not depend on the images.

    A 'same' convolution of half-width p widens the band by p on each side and reads p more
    columns beyond it; a pooling of factor k shrinks it to ceil(b / k) and reads whole windows.
    ``band`` is the half-width at the input (0: the two inputs meet unchanged).
    """
    steps, scale = [], 1
    for layer in trunk:
        if isinstance(layer, nn.Conv2d):
            pad = layer.kernel_size[1] // 2
            steps.append(_Step(read=band + 2 * pad, band_in=band, band_out=band + pad, pool=1, scale=scale))
            band += pad
        elif isinstance(layer, nn.MaxPool2d):
            k = _pool(layer)
            out = -(-band // k)
            steps.append(_Step(read=out * k, band_in=band, band_out=out, pool=k, scale=scale))
            band, scale = out, scale * k
        else:
            steps.append(_Step(read=0, band_in=band, band_out=band, pool=1, scale=scale))
    return steps


def _pool(layer: nn.MaxPool2d) -> int:
    k = layer.kernel_size
    return k if isinstance(k, int) else k[1]

