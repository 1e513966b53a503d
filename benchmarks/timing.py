"""Timing shared by the benchmarks: runtimes in alternating rounds, and the ratio of two with an interval.

A shared 2-core machine is noisy; ratios measured round by round (each runtime timed in turn, the
same load bursts falling on all) are steadier than seconds, and the interval says how steady.
"""

from __future__ import annotations

import time

import numpy as np

ROUND_SECONDS = 0.25
ROUNDS = 15  # ratios: a 95% interval for the median from 15 paired rounds


def rates(fns: dict, images: int) -> dict[str, list[float]]:
    """images/s of each callable in each of ``ROUNDS`` rounds that alternate between them.

    Alternating round by round (not call by call) lets load bursts on a shared machine hit every
    runtime alike, while each round is long enough that one runtime's waiting workers (XNNPACK's,
    OpenMP's) have gone quiet before the next is timed; a round starts with an untimed call unless
    one call takes longer than a round (then the previous round's calls warmed it).
    """
    samples = {name: [] for name in fns}
    for round_ in range(ROUNDS):
        for name, fn in fns.items():
            if round_ == 0 or samples[name][-1] * ROUND_SECONDS > images:  # calls shorter than a round
                fn()
            runs, start = 0, time.perf_counter()
            while time.perf_counter() - start < ROUND_SECONDS or runs < 1:
                fn()
                runs += 1
            samples[name].append(images * runs / (time.perf_counter() - start))
    return samples


def ratio(ours: list[float], reference: list[float]) -> dict:
    """Median of the round-by-round ratios, with a distribution-free 95% interval for the median
    (order statistics, binomial(n, 1/2)): the ratio's noise on a shared machine, stated."""
    from scipy.stats import binom

    ratios = np.sort(np.asarray(ours) / np.asarray(reference))
    n = len(ratios)
    k = int(binom.ppf(0.025, n, 0.5))  # P(#below the median <= k) ~ 2.5%
    return {"median": round(float(np.median(ratios)), 3), "ci95": [round(float(ratios[max(k - 1, 0)]), 3),
            round(float(ratios[min(n - k, n - 1)]), 3)], "n_rounds": n,
            "test": "order-statistic interval for the median of paired round ratios"}
