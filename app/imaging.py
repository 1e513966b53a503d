"""Figures for the explorers: map overlays as PNG bytes, drawn by autopsy.figures (the reports' look)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


#: Largest map drawn, in pixels: an uploaded photo is at most 1024 px on its longest side.
MAX_MAP_PIXELS = 4_000_000
#: Tallest figure drawn, in inches; a tall photo is drawn narrower rather than taller.
MAX_FIGURE_HEIGHT = 9.0


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized (bilinear) to ``size`` = (width, height)."""
    values = np.asarray(values, dtype=np.float32)
    width, height = (int(v) for v in size)
    if width < 1 or height < 1 or width * height > MAX_MAP_PIXELS:
        raise ValueError(f"a map of {width}x{height} pixels is outside 1..{MAX_MAP_PIXELS:,} pixels; "
                         "scale the photo down first (uploads are scaled to 1024 px)")
    if values.ndim != 2:
        raise ValueError(f"a map must be 2-D, got shape {values.shape}")
    if values.shape[::-1] == tuple(size):
        return values
    return np.asarray(Image.fromarray(values, mode="F").resize(size, Image.Resampling.BILINEAR))


def overlay_png(image: Image.Image, values: np.ndarray, *, point=None, title: str = "", alpha: float = 0.55,
                cmap: str = "cividis", colorbar_label: str = "saliency", dpi: int = 130) -> bytes:
    """The photo under a semi-transparent map (colour-blind-safe ``cmap``) with a colour bar and ``point``
    marked by a +, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from autopsy.figures import saliency_overlay

    aspect = image.height / max(image.width, 1)
    height = min(MAX_FIGURE_HEIGHT, max(2.2, 4.5 * aspect))
    fig = saliency_overlay(image, resize_map(values, image.size), alpha=alpha, point=point, cmap=cmap,
                           title=title or None, label=colorbar_label, figsize=(5.2, height))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
