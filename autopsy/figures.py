"""Plotting defaults for the lab: colour-blind-safe, honest axes, an interval on every estimate.

- Continuous maps use cividis (Nuñez, Anderton & Renslow 2018, "Optimizing colormaps with
  consideration for color vision deficiency", PLOS ONE) or viridis; never red/green.
- Groups use the Okabe-Ito palette (Okabe & Ito 2002, "Color Universal Design").
- Bars start at zero, since their length is read as the value; every estimate carries its interval.

Functions build ``matplotlib.figure.Figure`` objects on the Agg canvas directly (no pyplot state, no
display, nothing written); callers save them with ``fig.savefig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["OKABE_ITO", "MAP_CMAP", "group_colours", "new_figure", "plot_estimates", "saliency_overlay", "image_grid",
           "draw_box", "estimate_errorbars", "attribution_grid"]

# Okabe-Ito, without its black (kept for text and reference lines) and ordered for contrast
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
MAP_CMAP = "cividis"


def group_colours(groups: Sequence) -> dict:
    """A stable Okabe-Ito colour per group, in the given order (cycles after eight groups)."""
    return {g: OKABE_ITO[i % len(OKABE_ITO)] for i, g in enumerate(groups)}


def new_figure(*, figsize=(6.0, 4.0), dpi: int = 100) -> Figure:
    """A Figure on the Agg canvas, outside pyplot's global state."""
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _estimates_frame(data, label) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        df = data.copy()
    elif isinstance(data, Mapping):  # {label: Estimate or dict}
        key = label if isinstance(label, str) else "group"
        df = pd.DataFrame([{key: k, **(v.to_dict() if hasattr(v, "to_dict") else dict(v))} for k, v in data.items()])
    else:
        df = pd.DataFrame([v.to_dict() if hasattr(v, "to_dict") else dict(v) for v in data])
    missing = {"value", "low", "high"} - set(df.columns)
    if missing:
        raise ValueError(f"every estimate plot needs value, low and high (an interval); missing {sorted(missing)}")
    columns = [label] if isinstance(label, str) else list(label)
    if all(c in df.columns for c in columns):
        df["_label"] = df[columns].astype(str).agg(" × ".join, axis=1)
    else:
        df["_label"] = [str(i) for i in range(len(df))]
    return df


def plot_estimates(
    data,
    *,
    label="group",
    kind: str = "bar",
    reference: float | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "estimate",
    colours: Mapping | None = None,
    figsize=(6.0, 4.0),
) -> Figure:
    """Estimates with their intervals, one per row of ``data``.

    ``data`` is a DataFrame with ``value``, ``low``, ``high`` (e.g. from ``fairness.group_metrics``),
    a list of ``Estimate``/dicts, or a dict label -> Estimate. ``label`` names the column (or list of
    columns, for intersectional groups) to label them by. ``kind="bar"`` draws bars from zero (the
    axis always includes zero); ``"point"`` draws points, for differences or values far from zero.
    ``reference`` adds a dashed line (e.g. 0.5 for a preference, 0.8 for the four-fifths rule).
    Groups with a ``warning`` are hatched.
    """
    if kind not in ("bar", "point"):
        raise ValueError(f"kind must be 'bar' or 'point'; got {kind!r}")
    df = _estimates_frame(data, label)
    x = np.arange(len(df))
    values = df["value"].to_numpy(float)
    err = np.vstack([values - df["low"].to_numpy(float), df["high"].to_numpy(float) - values])
    palette = dict(colours) if colours else group_colours(list(dict.fromkeys(df["_label"])))
    colour = [palette.get(lab, OKABE_ITO[0]) for lab in df["_label"]]
    warned = df["warning"].notna().to_numpy() if "warning" in df else np.zeros(len(df), bool)

    fig = new_figure(figsize=figsize)
    ax = fig.add_subplot()
    if kind == "bar":
        bars = ax.bar(x, values, color=colour, edgecolor="black", linewidth=0.6)
        for bar, w in zip(bars, warned):
            if w:
                bar.set_hatch("//")
        ax.errorbar(x, values, yerr=err, fmt="none", ecolor="black", capsize=4, linewidth=1.2)
    else:
        for xi, v, e, c in zip(x, values, err.T, colour):
            ax.errorbar([xi], [v], yerr=e[:, None], fmt="o", color=c, ecolor="black", capsize=4, markersize=7)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1)
    if kind == "bar":
        low, high = ax.get_ylim()
        ax.set_ylim(min(0.0, low), max(0.0, high))  # bars are read by length: keep zero on the axis
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, df["_label"], rotation=30 if len(df) > 4 else 0, ha="right" if len(df) > 4 else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    level = df["level"].iloc[0] if "level" in df else 0.95
    ax.set_title(title or f"error bars: {level:.0%} intervals" + ("; hatched: small group" if warned.any() else ""))
    return fig


def saliency_overlay(
    image,
    saliency_map,
    *,
    alpha: float = 0.5,
    point=None,
    cmap: str = MAP_CMAP,
    title: str | None = None,
    label: str = "saliency",
    figsize=(5.0, 5.0),
) -> Figure:
    """The image with a saliency map on top and a colour bar. The map is stretched over the image
    extent (so a coarse map needs no resizing); ``point`` = (x, y) in image pixels marks e.g. the
    argmax a crop is centred on."""
    img = np.asarray(image)
    sal = np.asarray(saliency_map, dtype=float)
    sal = sal.squeeze()
    if sal.ndim != 2:
        raise ValueError(f"saliency_map must be 2-D (H, W) after squeezing; got shape {np.shape(saliency_map)}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    h, w = img.shape[:2]
    fig = new_figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0))
    shown = ax.imshow(sal, cmap=cmap, alpha=alpha, extent=(0, w, h, 0), interpolation="bilinear")
    fig.colorbar(shown, ax=ax, label=label, shrink=0.8)
    if point is not None:
        ax.plot([point[0]], [point[1]], marker="+", markersize=18, markeredgewidth=3, color="white")
        ax.plot([point[0]], [point[1]], marker="+", markersize=14, markeredgewidth=1.5, color="black")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def image_grid(images: Sequence, *, titles: Sequence[str] | None = None, ncols: int = 4, size: float = 2.0) -> Figure:
    """Images (H, W, 3 floats in [0, 1] or uint8) in a grid, e.g. feature visualisations."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = new_figure(figsize=(size * ncols, size * nrows))
    for i, img in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(np.asarray(img))
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    return fig


def draw_box(ax, box, *, colour: str = OKABE_ITO[1], style: str = "-", width: float = 2.0, label: str | None = None,
             xywh: bool = True) -> None:
    """Outline a rectangle on ``ax``: ``box`` as (left, top, width, height), or (x0, y0, x1, y1) with ``xywh=False``."""
    x0, y0, a, b = box
    x1, y1 = (x0 + a, y0 + b) if xywh else (a, b)
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color=colour, ls=style, lw=width, label=label)


def estimate_errorbars(ax, x, estimates: Sequence, **kwargs):
    """Each estimate's value at ``x`` with its interval as an error bar on ``ax`` (an undefined
    interval draws no bar); ``kwargs`` go to ``Axes.errorbar`` (``fmt="o-"`` joins the points)."""
    values = np.array([e.value for e in estimates], dtype=float)
    err = np.array([[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]], dtype=float)
    return ax.errorbar(x, values, yerr=np.nan_to_num(err), **kwargs)


def attribution_grid(images: Sequence, maps: Mapping[str, np.ndarray], *, captions: Sequence[str],
                     masks: Sequence | None = None, mask_title: str = "model output", boxes: Sequence | None = None,
                     size: float = 3.0) -> Figure:
    """One row per input: the image, optionally the model's mask (``masks``, values in [0, 1]), then
    each method's map as |attribution| summed over channels, with a colour bar. ``maps`` is
    ``{method: (B, C, H, W)}`` (e.g. :attr:`autopsy.examine.Examination.maps`); ``boxes`` outlines an
    (x0, y0, x1, y1) box per input on every panel but the image."""
    n = len(images)
    if len(captions) != n or any(len(m) != n for m in maps.values()):
        raise ValueError(f"attribution_grid needs one caption and one map per method for each of the {n} images")
    columns = 1 + (masks is not None) + len(maps)
    fig = new_figure(figsize=(size * columns, size * n))
    axes = fig.subplots(n, columns, squeeze=False)
    for k, row in enumerate(axes):
        row[0].imshow(np.asarray(images[k]))
        row[0].set_title(captions[k], fontsize=8)
        panels = list(row[1:])
        if masks is not None:
            ax = panels.pop(0)
            ax.imshow(masks[k], cmap=MAP_CMAP, vmin=0, vmax=1)
            ax.set_title(mask_title, fontsize=8)
        for ax, (method, per_input) in zip(panels, maps.items()):
            shown = ax.imshow(np.abs(per_input[k]).sum(0), cmap=MAP_CMAP)
            ax.set_title(f"{method.replace('_', ' ')} |attribution|", fontsize=8)
            fig.colorbar(shown, ax=ax, fraction=0.04)
        for ax in row[1:] if boxes is not None else ():
            draw_box(ax, boxes[k], xywh=False, width=1.2)
        for ax in row:
            ax.set_axis_off()
    return fig
