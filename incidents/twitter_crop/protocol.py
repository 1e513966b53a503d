"""The paired-crop protocol of Yee, Tantipongpipat & Mishra (2021), and its corrections.

Each trial samples one image from each of two groups, pastes them left to right on a black
canvas, runs Twitter's binary on it (:mod:`.canvases`), takes its salient point, and credits the
image whose x-range contains it. The published protocol always put the first group on the left; the
corrected one runs every trial in both orders, so position and group effects separate.

Statistics: the naive binomial interval (Wilson, plus an exact binomial test) treats trials as
independent, as the paper did; the two-way cluster bootstrap resamples *images* of each group,
which respects that the same photos recur across trials.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from autopsy import fairness

#: The paper's four groups, as (race, gender) annotations.
PAPER_GROUPS = {"BF": ("Black", "Female"), "BM": ("Black", "Male"), "WF": ("White", "Female"), "WM": ("White", "Male")}
PAPER_PAIRS = list(combinations(PAPER_GROUPS, 2))  # BF-BM, BF-WF, BF-WM, BM-WF, BM-WM, WF-WM


def group_code(race: str, gender: str) -> str | None:
    """The paper's group code of a (race, gender) annotation, or None outside the four groups."""
    return next((code for code, pair in PAPER_GROUPS.items() if pair == (race, gender)), None)

#: Published wins of the first group (Yee et al. 2021, Table 2 / the public notebooks).
PUBLISHED = {
    "no_scaling": {"n": 10_000, "wins": {("BF", "BM"): 5695, ("BF", "WF"): 4336, ("BF", "WM"): 5547,
                                        ("BM", "WF"): 3648, ("BM", "WM"): 4767, ("WF", "WM"): 6171}},
    "fixed_height": {"n": 5_000, "wins": {("BF", "BM"): 2966, ("BF", "WF"): 2369, ("BF", "WM"): 2791,
                                         ("BM", "WF"): 1865, ("BM", "WM"): 2405, ("WF", "WM"): 3068}},
}
#: Twitter's summaries: each averages the first group's win rate (sign +1) or its complement (-1) over pairs.
SUMMARIES = {
    "female_over_male": [("BF", "BM", +1), ("BF", "WM", +1), ("WF", "WM", +1)],
    "black_over_white": [("BF", "WF", +1), ("BF", "WM", +1), ("BM", "WF", +1), ("BM", "WM", +1)],
    "white_female_over_black_female": [("BF", "WF", -1)],
    "white_male_over_black_male": [("BM", "WM", -1)],
}


def published_rate(setting: str, pair: tuple[str, str]) -> float:
    """The first group's published win rate of ``pair`` in ``setting`` (Yee et al. 2021)."""
    return PUBLISHED[setting]["wins"][pair] / PUBLISHED[setting]["n"]


def summary_of(rates: dict, name: str) -> float:
    """Twitter's summary ``name`` from first-group win rates by pair (e.g. 0.580 female over male)."""
    return float(np.mean([rates[(a, b)] if sign > 0 else 1 - rates[(a, b)] for a, b, sign in SUMMARIES[name]]))


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


def pair_table(trials: pd.DataFrame, *, setting: str, rule: str = "max", n_boot: int = 2000) -> list[dict]:
    """Per pair: the first group's win rate, naive and clustered by images, beside the published rate.

    ``trials`` holds the published order (first group left) and, if run, the swapped order:
    column ``first_wins_<rule>`` says whether the first group's image won. The clustered interval
    resamples the photos of both groups (the pigeonhole bootstrap, :func:`autopsy.fairness.paired_preference`),
    since the same photos recur across trials.
    """
    rows = []
    for (first, second), group in trials.groupby(["first", "second"], sort=False):
        row = {"pair": f"{first}–{second}"}
        for order, part in group.groupby("order"):
            winners = np.where(part[f"first_wins_{rule}"], first, second)
            result = fairness.paired_preference(winners, first, second, items_a=part["first_image"].to_numpy(),
                                                items_b=part["second_image"].to_numpy(), n_boot=n_boot)
            row[f"{order}_naive"], row[f"{order}_bootstrap"] = result.naive, result.clustered
        if setting in PUBLISHED:
            row["published"] = published_rate(setting, (first, second))
            row["published_n"] = PUBLISHED[setting]["n"]
        rows.append(row)
    return rows


def summaries(rows: list[dict], *, setting: str, order: str = "published") -> dict:
    """Twitter's summary rates (e.g. female over male) from a pair table, next to the published ones."""
    ours = {tuple(r["pair"].split("–")): r[f"{order}_naive"].value for r in rows}
    published = {pair: published_rate(setting, pair) for pair in ours} if setting in PUBLISHED else None
    return {name: {"ours": summary_of(ours, name),
                   "published": summary_of(published, name) if published else None}
            for name in SUMMARIES}
