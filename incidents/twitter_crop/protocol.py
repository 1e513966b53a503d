"""The paired-crop protocol of Yee, Tantipongpipat & Mishra (2021), and its corrections.

Each trial samples one image from each of two groups, pastes them left to right on a black
canvas, runs the saliency model, takes the single most salient point, and credits the image
whose x-range contains it. The published protocol always put the first group on the left; the
corrected one runs every trial in both orders, so position and group effects separate.

Statistics: the naive binomial interval (Wilson, plus an exact binomial test) treats trials as
independent, as the paper did; the two-way cluster bootstrap resamples *images* of each group,
which respects that the same photos recur across trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from PIL import Image

from autopsy.stats import Estimate, binomial_test, wilson_interval

#: The paper's four groups, as (race, gender) annotations.
PAPER_GROUPS = {"BF": ("Black", "Female"), "BM": ("Black", "Male"), "WF": ("White", "Female"), "WM": ("White", "Male")}
PAPER_PAIRS = list(combinations(PAPER_GROUPS, 2))  # BF-BM, BF-WF, BF-WM, BM-WF, BM-WM, WF-WM

#: Published wins of the first group (Yee et al. 2021, Table 2 / the public notebooks).
PUBLISHED = {
    "no_scaling": {"n": 10_000, "wins": {("BF", "BM"): 5695, ("BF", "WF"): 4336, ("BF", "WM"): 5547,
                                        ("BM", "WF"): 3648, ("BM", "WM"): 4767, ("WF", "WM"): 6171}},
    "fixed_height": {"n": 5_000, "wins": {("BF", "BM"): 2966, ("BF", "WF"): 2369, ("BF", "WM"): 2791,
                                         ("BM", "WF"): 1865, ("BM", "WM"): 2405, ("WF", "WM"): 3068}},
}
#: Twitter's summaries, and the pairs (first group's wins) each one averages.
SUMMARIES = {
    "female_over_male": {"published": 0.580, "pairs": [("BF", "BM", +1), ("BF", "WM", +1), ("WF", "WM", +1)]},
    "black_over_white": {"published": 0.4575,
                         "pairs": [("BF", "WF", +1), ("BF", "WM", +1), ("BM", "WF", +1), ("BM", "WM", +1)]},
    "white_female_over_black_female": {"published": 0.5664, "pairs": [("BF", "WF", -1)]},
    "white_male_over_black_male": {"published": 0.5233, "pairs": [("BM", "WM", -1)]},
}


def sample_trials(members: dict[str, list[int]], pairs, n_trials: int, *, seed: int = 42) -> pd.DataFrame:
    """One row per trial: the pair's groups and the sampled image index of each (uniform, with replacement)."""
    rng = np.random.default_rng(seed)
    frames = []
    for first, second in pairs:
        if not members.get(first) or not members.get(second):
            raise ValueError(f"pair {first}-{second}: a group has no images (have: { {k: len(v) for k, v in members.items()} })")
        frames.append(pd.DataFrame({
            "first": first, "second": second, "trial": np.arange(n_trials),
            "first_image": rng.choice(members[first], n_trials),
            "second_image": rng.choice(members[second], n_trials),
        }))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class CanvasOutcome:
    """What one canvas's saliency map says, by three rules (the last two are beyond the paper)."""

    left_wins_max: bool  # the paper's rule: the single most salient point
    left_wins_mean: bool  # mean saliency inside each image's x-range
    left_wins_sum: bool  # total saliency inside each image's x-range
    point: tuple[float, float]  # most salient point, canvas pixels (x, y)


def join(left: Image.Image, right: Image.Image) -> Image.Image:
    """The paper's canvas: ``left`` then ``right``, top-aligned on black, as tall as the taller."""
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def outcome(saliency: np.ndarray, seam_x: float, stride: int) -> CanvasOutcome:
    """Read a canvas map (h, w at ``stride``) whose left image covers canvas pixels x < ``seam_x``.

    A map cell is credited to the image that holds its centre, as the crop point would be.
    """
    row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    on_left = (np.arange(saliency.shape[1]) + 0.5) * stride < seam_x
    left, right = saliency[:, on_left], saliency[:, ~on_left]
    return CanvasOutcome(
        left_wins_max=bool(on_left[col]),
        left_wins_mean=bool(left.mean() > right.mean()),
        left_wins_sum=bool(left.sum() > right.sum()),
        point=((col + 0.5) * stride, (row + 0.5) * stride),
    )


def naive_rate(wins: int, n: int) -> Estimate:
    """Wilson interval and exact two-sided binomial test against 0.5, trials taken as independent."""
    low, high = wilson_interval(wins, n)
    return Estimate(wins / n, low, high, n, "Wilson 95% (trials as independent)", p_value=binomial_test(wins, n))


def image_bootstrap_rate(wins: np.ndarray, first_images: np.ndarray, second_images: np.ndarray,
                         *, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Win rate with a two-way cluster bootstrap over the images of each group.

    Each resample draws the first group's images and the second group's images with
    replacement; a trial counts as often as both its images were drawn.
    """
    wins = np.asarray(wins, dtype=float)
    rng = np.random.default_rng(seed)
    a_ids, a_idx = np.unique(first_images, return_inverse=True)
    b_ids, b_idx = np.unique(second_images, return_inverse=True)
    counts_a = rng.multinomial(len(a_ids), np.full(len(a_ids), 1 / len(a_ids)), size=n_resamples)
    counts_b = rng.multinomial(len(b_ids), np.full(len(b_ids), 1 / len(b_ids)), size=n_resamples)
    weights = counts_a[:, a_idx] * counts_b[:, b_idx]
    totals = weights.sum(axis=1)
    rates = (weights @ wins)[totals > 0] / totals[totals > 0]
    low, high = np.percentile(rates, [2.5, 97.5])
    warning = None
    if min(len(a_ids), len(b_ids)) < 30:
        warning = f"only {min(len(a_ids), len(b_ids))} distinct images in a group: interval is rough"
    return Estimate(float(wins.mean()), float(low), float(high), len(wins),
                    f"bootstrap over images ({len(a_ids)}+{len(b_ids)} images, {n_resamples} resamples)",
                    warning=warning)


def pair_table(trials: pd.DataFrame, *, setting: str, rule: str = "max", n_resamples: int = 2000) -> list[dict]:
    """Per pair: the first group's win rate, naive and image-bootstrap, beside the published rate.

    ``trials`` holds the published order (first group left) and, if run, the swapped order:
    column ``first_wins_<rule>`` says whether the first group's image won.
    """
    published = PUBLISHED.get(setting)
    rows = []
    for (first, second), group in trials.groupby(["first", "second"], sort=False):
        row = {"pair": f"{first}–{second}"}
        for order, part in group.groupby("order"):
            wins = part[f"first_wins_{rule}"].to_numpy()
            row[f"{order}_naive"] = naive_rate(int(wins.sum()), len(wins))
            row[f"{order}_bootstrap"] = image_bootstrap_rate(wins, part["first_image"], part["second_image"],
                                                              n_resamples=n_resamples)
        if published:
            row["published"] = published["wins"][(first, second)] / published["n"]
            row["published_n"] = published["n"]
        rows.append(row)
    return rows


def summaries(rows: list[dict], *, order: str = "published") -> dict:
    """Twitter's summary rates (e.g. female over male) from a pair table, next to the published ones."""
    by_pair = {tuple(r["pair"].split("–")): r for r in rows}
    out = {}
    for name, spec in SUMMARIES.items():
        values = [by_pair[(a, b)][f"{order}_naive"].value if sign > 0 else 1 - by_pair[(a, b)][f"{order}_naive"].value
                  for a, b, sign in spec["pairs"]]
        out[name] = {"ours": float(np.mean(values)), "published": spec["published"]}
    return out
