"""Figures for the explorers: map overlays as PNG bytes (cividis/viridis, colour bar, marked point)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

POINT_COLOUR = "#E69F00"  # Okabe-Ito orange: visible on cividis and viridis, not a red/green cue


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized (bilinear) to ``size`` = (width, height)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape[::-1] == tuple(size):
        return values
    return np.asarray(Image.fromarray(values, mode="F").resize(size, Image.Resampling.BILINEAR))


def overlay_png(image: Image.Image, values: np.ndarray, *, point=None, title: str = "", alpha: float = 0.55,
                cmap: str = "cividis", colorbar_label: str = "", dpi: int = 100) -> bytes:
    """The photo under a semi-transparent map with a colour bar and the point ringed, as PNG bytes.

    Uses :func:`autopsy.figures.saliency_overlay` when the toolkit has it (the same look as the
    reports), else an equivalent local figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    values = resize_map(values, image.size)
    fig = None
    if cmap == "cividis":
        try:
            from autopsy.figures import saliency_overlay

            fig = saliency_overlay(image, values, alpha=alpha, point=point)
        except ImportError:
            fig = None
    if fig is None:
        aspect = image.height / max(image.width, 1)
        fig, ax = plt.subplots(figsize=(7.5, max(2.5, 7.5 * aspect * 0.9)))
        ax.imshow(image)
        shown = ax.imshow(values, cmap=cmap, alpha=alpha)
        if point is not None:
            ax.scatter([point[0]], [point[1]], s=260, facecolors="none", edgecolors=POINT_COLOUR, linewidths=3)
            ax.scatter([point[0]], [point[1]], s=30, c=POINT_COLOUR, marker="+")
        ax.set_axis_off()
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        if colorbar_label:
            bar.set_label(colorbar_label, fontsize=12)
        bar.ax.tick_params(labelsize=11)
    if title:
        fig.axes[0].set_title(title, fontsize=15)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
