"""The investigation's figures, drawn with the lab's defaults (:mod:`autopsy.figures`).

Each function returns ``(figure, caption)``; the stage that owns the numbers saves it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy import figures
from autopsy.stats import Estimate

SIMULATED = "simulated historical decisions"


def _estimates(frame: pd.DataFrame) -> list[Estimate]:
    return [Estimate(r.value, r.low, r.high, int(r.n), r.test) for r in frame.itertuples()]


def perception(quartiles: pd.DataFrame):
    """Negative-emotion and happy scores by perceived race within smile quartiles (Rhue's design)."""
    fig = figures.new_figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharex=True)
    races = sorted(quartiles["race"].unique())
    colours = figures.group_colours(races)
    order = sorted(quartiles["smile"].unique())
    for ax, (outcome, title) in zip(axes, (("negative", "negative emotion (angry+disgust+fear+sad)"),
                                           ("happy", "happy"))):
        part = quartiles[quartiles["outcome"] == outcome]
        for k, race in enumerate(races):
            rows = part[part["race"] == race].set_index("smile").reindex(order).dropna(subset=["value"])
            x = np.array([order.index(s) for s in rows.index]) + (k - len(races) / 2) * 0.04
            figures.estimate_errorbars(ax, x, _estimates(rows), fmt="o-", color=colours[race], capsize=2,
                                       label=race, markersize=4, linewidth=1)
        ax.set_xticks(range(len(order)), order)
        ax.set_ylim(0, 1)
        ax.set_xlabel("blendshape smile, quartile (the control)")
        ax.set_ylabel(f"FER-2013 model: {title}", fontsize=9)
    axes[0].legend(fontsize=7, title="perceived race", title_fontsize=7)
    return fig, ("Expression scores of the FER-2013 model by perceived race at matched smile (Rhue 2018's design), "
                 "means with 95% bootstrap intervals")


def gender_errors(rows: list[dict]):
    """The gender model's error by perceived race x gender, published commercial error rates as markers."""
    labels = [f"{r['perceived race']} {r['perceived gender']}" for r in rows]
    fig = figures.new_figure(figsize=(11, 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ours = [r["error, IMDB gender model"] for r in rows]
    ax.bar(x, [e.value for e in ours], color=figures.OKABE_ITO[0], edgecolor="black", linewidth=0.6,
           label="IMDB gender model (ours)")
    figures.estimate_errorbars(ax, x, ours, fmt="none", ecolor="black", capsize=3)
    for k, api in enumerate(("Microsoft", "Face++", "IBM")):
        marks = [r[f"{api} on PPB (%)"] for r in rows]
        keep = [i for i, m in enumerate(marks) if m is not None]
        ax.scatter(x[keep], [marks[i] / 100 for i in keep], marker="DsP"[k], color=figures.OKABE_ITO[k + 1],
                   edgecolors="black", zorder=5, label=f"{api}, Gender Shades (darker/lighter skin)")
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("error rate")
    ax.legend(fontsize=7)
    return fig, ("Error rate of the IMDB gender model by perceived race x gender (95% Wilson intervals), beside "
                 "Buolamwini & Gebru's published commercial error rates for darker/lighter-skinned women and men")


def by_beta(grid_rows: list[dict]):
    """The scorer's selection ratio and TPR difference (perceived race) against the recruiters' bias beta."""
    rows = [r for r in grid_rows if r["groups"] == "race"]
    betas = np.array([r["beta"] for r in rows])
    fig = figures.new_figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    figures.estimate_errorbars(left, betas - 0.01, [r["history: selection ratio"] for r in rows], fmt="s--",
                               color=figures.OKABE_ITO[1], capsize=3, label=f"history ({SIMULATED})")
    figures.estimate_errorbars(left, betas + 0.01, [r["scorer: selection ratio"] for r in rows], fmt="o-",
                               color=figures.OKABE_ITO[0], capsize=3, label="scorer, held-out applicants")
    left.axhline(0.8, color="black", ls="--", lw=1, label="four-fifths rule")
    left.set_ylim(0, max(1.3, left.get_ylim()[1]))
    left.set_xlabel("recruiter bias β (0: none; 1: Bertrand & Mullainathan)")
    left.set_ylabel("selection rate, perceived Black / White")
    left.legend(fontsize=7)
    figures.estimate_errorbars(right, betas, [r["scorer: TPR difference"] for r in rows], fmt="o-",
                               color=figures.OKABE_ITO[2], capsize=3)
    right.axhline(0, color="black", lw=0.8)
    right.set_xlabel("recruiter bias β")
    right.set_ylabel("TPR difference, Black - White (unbiased picks)")
    return fig, ("Disparate impact and equal opportunity of the scorer as the past recruiters' bias grows "
                 f"({SIMULATED}; 95% bootstrap intervals)")


def flips(rows: list[dict]):
    """Share of decisions flipped by the skin-tone edit, per Monk level and perceived race."""
    frame = pd.DataFrame([{"group": f"MST {r['Monk level']}: {r['perceived race']}", "race": r["perceived race"],
                           **r["decisions flipped"].to_dict()} for r in rows])
    by_race = figures.group_colours(sorted(frame["race"].unique()))
    fig = figures.plot_estimates(frame, label="group", ylabel="share of decisions flipped", figsize=(10, 4),
                                 colours={g: by_race[r] for g, r in zip(frame["group"], frame["race"])})
    return fig, "Decisions flipped when only skin tone is edited (Monk Skin Tone levels), with 95% Wilson intervals"


def attribution(x, maps: dict, captions: list[str], regions: list[dict]):
    """The 64 x 64 grey input of each face and its attribution maps, the mouth box outlined."""
    images = [np.clip((x[k, 0].numpy() + 1) / 2, 0, 1) for k in range(len(x))]
    boxes = []
    for r in regions:
        ys, xs = np.nonzero(r["mouth"])
        boxes.append((xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, 0, 0))
    fig = figures.attribution_grid([np.stack([im] * 3, -1) for im in images], maps, captions=captions, boxes=boxes,
                                   size=2.6)
    return fig, ("Attribution of the employability score to the face (the expression model's input), with the mouth "
                 "outlined; blendshapes held fixed")


def renders(found: dict):
    fig = figures.image_grid(list(found.values()), titles=list(found), ncols=len(found), size=2.6)
    return fig, "Feature visualisations: images that maximise expression channels and the scorer's score"


def tradeoff(rows: list[dict]):
    """Accuracy against the history and against unbiased decisions, by the disfavoured group's selection ratio."""
    fig = figures.new_figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ratios = [r["selection ratio"] for r in rows]
    x = np.array([e.value for e in ratios])
    xerr = np.nan_to_num(np.array([[e.value - e.low for e in ratios], [e.high - e.value for e in ratios]]))
    for k, (key, label) in enumerate((("accuracy vs history", f"vs the {SIMULATED}"),
                                      ("accuracy vs unbiased decisions", "vs an unbiased recruiter (β = 0)"))):
        acc = [r[key] for r in rows]
        yerr = np.array([[e.value - e.low for e in acc], [e.high - e.value for e in acc]])
        ax.errorbar(x, [e.value for e in acc], xerr=xerr, yerr=yerr, fmt="os"[k], color=figures.OKABE_ITO[k],
                    capsize=3, label=f"accuracy {label}")
    for xi, r in zip(x, rows):
        tag = "unmitigated" if r["bound"] is None and r["method"].startswith("reproduced") else (
            "TO" if r["bound"] is None else f"EG {r['bound']:g}")
        ax.annotate(tag, (xi, r["accuracy vs history"].value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(0.8, color="black", ls="--", lw=1, label="four-fifths rule")
    ax.set_xlabel("selection rate, perceived Black / White")
    ax.set_ylabel("accuracy on held-out applicants")
    ax.legend(fontsize=7)
    return fig, ("Accuracy-fairness trade-off of fairlearn mitigations (EG: ExponentiatedGradient at a parity bound; "
                 "TO: ThresholdOptimizer), 95% intervals")
