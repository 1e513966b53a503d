"""The incident's figures, drawn with :mod:`autopsy.figures` (Agg canvas, colour-blind-safe palettes).

Each function draws one figure from a stage's results, saves it as a PNG and returns its caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autopsy import fairness, figures
from incidents.zoom_matting import interventions
from incidents.zoom_matting.groups import group_key, ordered
from incidents.zoom_matting.simulate import level_label

DPI = 110
#: Resamples for the intervals drawn in the intervention curves (the tables carry the full bootstrap).
FIGURE_BOOTSTRAP = 500


def coverage(photos: pd.DataFrame, race: dict, race_gender: dict, *, erased_below: float, path: Path) -> str:
    """Mean coverage by race x gender, every photo's coverage as a distribution, erasure and miss rates."""
    labels = [g.label for g in race.values()]
    fig = figures.new_figure(figsize=(15, 4.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    _coverage_by_cell(ax1, photos, labels, race_gender)
    _coverage_ecdf(ax2, photos, labels, erased_below)
    _rates(ax3, labels, race, erased_below)
    fig.savefig(path, dpi=DPI)
    return "Face coverage, its distribution, and erasure and detector-miss rates by perceived group"


def _coverage_by_cell(ax, photos, labels, race_gender) -> None:
    genders = sorted(photos["gender"].astype(str).unique())
    width = 0.8 / max(1, len(genders))
    for k, gender in enumerate(genders):
        cells = [(j, race_gender.get(group_key(f"{lab} {gender}"))) for j, lab in enumerate(labels)]
        cells = [(j, g) for j, g in cells if g is not None]
        xs = [j + (k - (len(genders) - 1) / 2) * width for j, _ in cells]
        figures.estimate_errorbars(ax, xs, [g.coverage for _, g in cells], fmt="o" if k == 0 else "s", capsize=3,
                                   color=figures.OKABE_ITO[k % 8], label=f"perceived {gender.lower()}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    lows = [g.coverage.low for g in race_gender.values() if np.isfinite(g.coverage.low)]
    ax.set_ylim(max(0.0, min([0.9, *lows]) - 0.02), 1.0)
    ax.set_ylabel("mean share of the face box kept (mask ≥ 0.5)")
    ax.set_title("Face coverage by perceived race × gender\n(axis does not start at 0; error bars: 95% CIs)",
                 fontsize=10)
    _legend(ax, fontsize=8, loc="lower left")


def _legend(ax, **options) -> None:
    if ax.get_legend_handles_labels()[0]:  # a run without faces draws no curve to name
        ax.legend(**options)


def _coverage_ecdf(ax, photos, labels, erased_below) -> None:
    colours = figures.group_colours(labels)
    for lab in labels:
        values = np.sort(photos.loc[(photos["race"] == lab) & photos["face_detected"], "coverage"].to_numpy(float))
        if values.size:
            ax.step(np.r_[0.0, values], np.r_[0.0, np.arange(1, values.size + 1) / values.size], where="post",
                    color=colours[lab], label=lab)
    ax.axvline(erased_below, color="black", ls="--", lw=1)
    ax.text(erased_below, 0.95, " head erased\n below this", fontsize=8, va="top")
    ax.set_xlim(0.4 if np.nanmin(photos["coverage"].to_numpy(float), initial=1.0) >= 0.4 else 0.0, 1.005)
    ax.set_ylim(0, 1)
    ax.set_xlabel("face coverage of one photo")
    ax.set_ylabel("share of photos with coverage ≤ x")
    ax.set_title("Every photo: cumulative distribution by group", fontsize=10)
    _legend(ax, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.85))


def _rates(ax, labels, race, erased_below) -> None:
    x = np.arange(len(labels))
    for k, (key, name) in enumerate([("erased", f"head erased (coverage < {erased_below:g})"),
                                     ("no_face", "no face detected")]):
        ests = [getattr(race[group_key(lab)], key) for lab in labels]
        v = np.nan_to_num(np.array([e.value for e in ests], dtype=float))
        err = np.nan_to_num(np.array([[e.value - e.low for e in ests], [e.high - e.value for e in ests]], dtype=float))
        ax.bar(x + (k - 0.5) * 0.38, v, width=0.38, color=figures.OKABE_ITO[k + 1], edgecolor="black", lw=0.5,
               yerr=err, capsize=3, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, max(0.1, ax.get_ylim()[1]))
    ax.set_ylabel("share of photos (Wilson 95% CI)")
    ax.set_title("Heads erased and faces missed, by perceived race", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")


TITLES = {"exposure": "Exposure (stops of light)", "skin_tone": "Skin tone (Monk Skin Tone level)",
          "background": "Background replaced"}


def intervention_curves(records: pd.DataFrame, *, erased_below: float, seed: int, path: Path) -> str:
    """Per factor: mean coverage per race group (and of the lowest-coverage photos) at each level."""
    done = records[records["skipped"].isna()]
    sample, lowest = done[done["subset"] == "sample"], done[done["subset"] == "lowest"]
    factors = [f for f in dict.fromkeys(records["factor"]) if f != "original"]
    races = ordered(sample["race"])
    colours = figures.group_colours(races)
    fig = figures.new_figure(figsize=(5.2 * max(1, len(factors)), 4.8))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(factors))))
    offsets = np.linspace(-0.25, 0.25, max(1, len(races)))
    for ax, factor in zip(axes, factors):
        levels = ["original"] + list(dict.fromkeys(records.loc[records["factor"] == factor, "level"]))
        if factor == "exposure":
            levels = sorted(levels, key=lambda v: 0.0 if v == "original" else float(v))
        x = np.arange(len(levels))
        for k, race in enumerate(races):
            curve = _curve(sample[sample["race"] == race], factor, levels, seed)
            figures.estimate_errorbars(ax, x + offsets[k], curve, fmt="o-", ms=4, lw=1, capsize=2,
                                       color=colours[race], label=race)
        if len(lowest):
            figures.estimate_errorbars(ax, x, _curve(lowest, factor, levels, seed), fmt="D--", ms=5, lw=1.5,
                                       capsize=2, color="black",
                                       label=f"the {lowest['photo'].nunique()} lowest-coverage photos")
        ax.axhline(erased_below, color="grey", ls=":", lw=1)
        ax.set_xticks(x, [level_label(factor, level) for level in levels], rotation=25, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_title(TITLES.get(factor, factor), fontsize=10)
        ax.set_ylabel("mean face coverage (95% CI)")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("One factor at a time: how much of the face the mask keeps (dotted: erasure threshold)", fontsize=11)
    fig.savefig(path, dpi=DPI)
    return "Intervention curves: face coverage per perceived race group as exposure, skin tone and background change"


def _curve(rows: pd.DataFrame, factor: str, levels: list, seed: int) -> list:
    def at(level):
        return rows[(rows["factor"] == ("original" if level == "original" else factor)) & (rows["level"] == level)]

    return [fairness.mean_estimate(at(level)["coverage"], n_boot=FIGURE_BOOTSTRAP, seed=seed) for level in levels]


def composite(images, masks, photos: pd.DataFrame, *, examples: int, threshold: float, seed: int, path: Path) -> str:
    """The lowest-coverage photos and a median one: photo, mask, the app's composite, a soft composite."""
    faces = photos[photos["face_detected"]].sort_values("coverage")
    picks = list(dict.fromkeys(list(faces.index[:max(1, min(examples, len(faces)))]) + [faces.index[len(faces) // 2]]))
    background = interventions.virtual_background(448, 448, seed=seed)
    fig = figures.new_figure(figsize=(13, 3.4 * len(picks)))
    for row, i in zip(fig.subplots(len(picks), 4, squeeze=False), picks):
        image, mask = images[i], masks[i]
        panels = (image, mask, interventions.composite(image, mask, background, threshold=threshold),
                  interventions.composite(image, mask, background, threshold=None))
        titles = (f"photo ({photos.at[i, 'race']}, {photos.at[i, 'gender']})", "person probability",
                  f"app composite (mask ≥ {threshold:g})", "soft composite")
        for ax, shown, title in zip(row, panels, titles):
            ax.imshow(shown, **({"cmap": figures.MAP_CMAP, "vmin": 0, "vmax": 1} if shown is mask else {}))
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        for ax in row[1:3]:
            figures.draw_box(ax, photos.at[i, "box"], xywh=False, width=1.5)
        row[2].text(4, image.height - 8, f"face kept: {photos.at[i, 'coverage']:.0%}", color="white", fontsize=9,
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
    fig.suptitle("Virtual background as a conferencing app composites it (orange: detected face box). "
                 "Top rows: lowest face coverage in the run; bottom: a median photo", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return "The person mask composited onto a generated virtual background, for the lowest-coverage and a median photo"


def attribution(found, prepared: dict, captions: list[str], path: Path) -> str:
    """Per example: the model input, the person probability, and each method's |attribution| (face box outlined)."""
    images = [x.permute(1, 2, 0).numpy() for x in prepared["x"]]
    fig = figures.attribution_grid(images, found.maps, captions=captions, masks=prepared["masks"],
                                   mask_title="person probability", boxes=prepared["boxes"], size=3.0)
    fig.suptitle("What drives the face's person score (mean logit in the orange face box)", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return "Attribution of the face's person score for lowest-coverage and kept heads: IG, Grad-CAM, occlusion"


def featviz(found, path: Path) -> str:
    """The feature visualisations side by side."""
    fig = figures.image_grid(list(found.renders.values()), titles=list(found.renders), ncols=len(found.renders),
                             size=2.6)
    fig.suptitle("Synthetic images that maximise the person output and decoder channels (lucent)", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return "Feature visualisations: images synthesised to maximise the person logit and decoder channels"
