"""The Twitter investigation's figures, drawn with the lab's defaults (:mod:`autopsy.figures`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy import figures, stats
from incidents.twitter_crop import model
from incidents.twitter_crop.canvases import join


def error_bars(estimates) -> np.ndarray:
    """Matplotlib's (2, n) error bars; a percentile interval need not contain its estimate, so clip at 0."""
    return np.clip([[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]], 0, None)


def crops(trials: pd.DataFrame, sized: dict):
    """A few cross-race trials (published order): canvas, salient point, crop windows."""
    part = trials[(trials["order"] == "published") & (trials["setting"] == trials["setting"].iloc[0])
                  & (trials["first"].str[0] != trials["second"].str[0])].drop_duplicates(["first", "second"]).head(3)
    fig = figures.new_figure(figsize=(5.2 * len(part), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(part), squeeze=False)[0])
    for ax, (_, t) in zip(axes, part.iterrows()):
        canvas = join(sized[t["first_image"]], sized[t["second_image"]])
        ax.imshow(canvas)
        point = (min(t["point_x"], canvas.width - 1), min(t["point_y"], canvas.height - 1))
        for k, ratio in enumerate(model.ASPECT_RATIOS):
            figures.draw_box(ax, model.crop(canvas.size, point, ratio), colour=figures.OKABE_ITO[k],
                             style=("-", "--", ":", "-.")[k], label=f"crop {ratio}")
        ax.plot(*point, marker="+", color="white", markersize=16, markeredgewidth=3)
        winner = t["first"] if t["first_wins_max"] else t["second"]
        ax.set_title(f"{t['first']} left, {t['second']} right: {winner} kept", fontsize=10)
        ax.axis("off")
    axes[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    return fig, "Paired canvases with the most salient point (+) and Twitter's crop windows at four aspect ratios"


def pairs(rows_by_setting: dict):
    """First group's win rate per pair and setting, three of ours beside the published rate."""
    fig = figures.new_figure(figsize=(6 * len(rows_by_setting), 4.5))
    axes = np.atleast_1d(fig.subplots(1, len(rows_by_setting), squeeze=False, sharey=True)[0])
    for ax, (setting, rows) in zip(axes, rows_by_setting.items()):
        names = list(rows)
        x = np.arange(len(names))
        for k, (key, label) in enumerate([("published_naive", "ours, published order (naive CI)"),
                                          ("published_bootstrap", "ours, published order (image bootstrap CI)"),
                                          ("swapped_naive", "ours, positions swapped")]):
            est = [rows[n][key] for n in names]
            ax.errorbar(x + (k - 1) * 0.18, [e.value for e in est], yerr=error_bars(est), fmt="o", capsize=3,
                        color=figures.OKABE_ITO[k], label=label)
        ax.scatter(x, [rows[n].get("published", np.nan) for n in names], marker="D", s=60, facecolors="none",
                   edgecolors="black", label="published (Yee et al. 2021)", zorder=5)
        ax.axhline(0.5, color="grey", lw=1, ls="--")
        ax.set_xticks(x, [n.replace("_", "–") for n in names])
        ax.set_ylim(0, 1)
        ax.set_title(f"{setting}: first group's win rate")
        ax.set_ylabel("P(first group's face is the crop centre)")
    axes[0].legend(loc="lower left", fontsize=8)
    return fig, "First group's win rate per pair with 95% intervals, beside the published rates"


def argmax(rows: list[dict], setting: str):
    """Win rates by the single maximum, the mean and the total saliency per image."""
    rows = [r for r in rows if r["setting"] == setting]
    names = list(dict.fromkeys(r["pair"] for r in rows))
    fig = figures.new_figure(figsize=(8, 4.5))
    ax = fig.subplots()
    x = np.arange(len(names))
    for k, rule in enumerate(("max", "mean", "sum")):
        est = [next(r["rate"] for r in rows if r["pair"] == p and r["rule"] == rule) for p in names]
        ax.bar(x + (k - 1) * 0.27, [e.value for e in est], width=0.27, color=figures.OKABE_ITO[k],
               label=f"winner by {rule} saliency", yerr=error_bars(est), capsize=2)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("first group's win rate")
    ax.set_title(f"Argmax bias ({setting}): the paper's single-maximum rule vs mean and total saliency")
    ax.legend(fontsize=8)
    return fig, "Win rates by the single maximum, the mean and the total saliency per image"


def skin_tone(frame: pd.DataFrame):
    """Win rate of a skin-tone-edited photo against its original, by the change in ITA."""
    fig = figures.new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    bins = np.linspace(frame["delta_ita"].min() - 1e-6, frame["delta_ita"].max() + 1e-6, 7)
    binned = frame.assign(bin=pd.cut(frame["delta_ita"], bins))
    est = [stats.proportion(int(g["edited_wins"].sum()), len(g)) for _, g in binned.groupby("bin", observed=True)]
    centres = [interval.mid for interval, _ in binned.groupby("bin", observed=True)]
    ax.errorbar(centres, [e.value for e in est], yerr=error_bars(est), fmt="o-", capsize=3, color=figures.OKABE_ITO[0])
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.axvline(0, color="grey", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("ITA change of the edited photo (degrees; positive = lighter)")
    ax.set_ylabel("P(edited photo wins the crop)")
    ax.set_title("Same photo, edited skin tone, paired against the original")
    return fig, "Win rate of a skin-tone-edited photo against its original, by the change in ITA"
