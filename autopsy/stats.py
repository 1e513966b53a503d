"""Estimates with honest uncertainty: Wilson intervals, exact binomial tests, (cluster) bootstrap.

Every number the lab reports travels as an :class:`Estimate` -- value, interval, n and the test used --
so that metrics JSON, figures and stories can show the uncertainty next to the number.

References: Wilson (1927), "Probable inference, the law of succession, and statistical inference",
JASA 22; Efron & Tibshirani (1993), *An Introduction to the Bootstrap* (percentile intervals);
Field & Welsh (2007), "Bootstrapping clustered data", JRSS-B 69 (resampling clusters, not rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

__all__ = ["Estimate", "proportion", "wilson_interval", "binomial_test", "bootstrap"]


def _json_float(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None  # NaN/inf are not JSON


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval, sample size and the test that produced the interval."""

    value: float
    low: float
    high: float
    n: int
    test: str
    level: float = 0.95
    warning: str | None = None
    p_value: float | None = None

    def to_dict(self) -> dict:
        """JSON-safe dict with exactly the keys value, low, high, n, test, level, warning, p_value."""
        return {
            "value": _json_float(self.value),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "n": int(self.n),
            "test": str(self.test),
            "level": float(self.level),
            "warning": None if self.warning is None else str(self.warning),
            "p_value": _json_float(self.p_value),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        missing = {"value", "low", "high", "n", "test"} - set(d)
        if missing:
            raise ValueError(f"Estimate.from_dict: missing keys {sorted(missing)} in {d!r}")
        nan = float("nan")
        return cls(
            value=nan if d["value"] is None else float(d["value"]),
            low=nan if d["low"] is None else float(d["low"]),
            high=nan if d["high"] is None else float(d["high"]),
            n=int(d["n"]),
            test=str(d["test"]),
            level=float(d.get("level", 0.95)),
            warning=d.get("warning"),
            p_value=None if d.get("p_value") is None else float(d["p_value"]),
        )


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level!r}")


def _check_counts(successes, n) -> tuple[int, int]:
    if int(n) != n or int(successes) != successes:
        raise TypeError(f"successes and n must be whole numbers; got successes={successes!r}, n={n!r}")
    successes, n = int(successes), int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1 trial to estimate a proportion; got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n]; got successes={successes}, n={n}")
    return successes, n


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps close to nominal coverage for
    small n and proportions near 0 or 1.
    """
    _check_level(level)
    successes, n = _check_counts(successes, n)
    z = _scipy_stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding would otherwise leave p outside its interval.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def proportion(successes: int, n: int, *, level: float = 0.95, min_n: int = 30,
               test_against: float | None = None) -> Estimate:
    """``successes / n`` with its Wilson interval, as an :class:`Estimate` (the lab's one way to report a rate).

    ``n = 0`` gives an undefined estimate that says so; ``n < min_n`` carries a small-sample warning;
    ``test_against=p`` adds the exact two-sided binomial test against ``p``.
    """
    name = f"Wilson {level:.0%}"
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, name, level=level, warning="no items")
    low, high = wilson_interval(successes, n, level=level)
    warning = f"n={n} < {min_n}: interval unreliable, group too small" if n < min_n else None
    p_value = None
    if test_against is not None:
        p_value = binomial_test(successes, n, p=test_against)
        name += f"; exact binomial test vs {test_against} (two-sided)"
    return Estimate(successes / n, low, high, int(n), name, level=level, warning=warning, p_value=p_value)


def binomial_test(successes: int, n: int, *, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value of ``successes`` out of ``n`` against proportion ``p``."""
    successes, n = _check_counts(successes, n)
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
    return float(_scipy_stats.binomtest(successes, n, p, alternative="two-sided").pvalue)


def bootstrap(
    statistic: Callable[..., float],
    *arrays,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups=None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``.

    All arrays are resampled together along their first axis. If ``groups`` (one cluster id per row)
    is given, whole clusters are resampled with replacement instead of rows, so that repeated
    measurements of the same item (an image appearing in many trials) do not pass as independent
    (Field & Welsh 2007). Resamples where the statistic is undefined (NaN, e.g. a rate with an empty
    denominator) are dropped; if all are, the interval is (nan, nan).
    """
    _check_level(level)
    if not callable(statistic):
        raise TypeError(f"statistic must be a callable taking the arrays; got {type(statistic).__name__}")
    if not arrays:
        raise ValueError("bootstrap needs at least one array to resample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive; got {n_resamples}")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if n == 0:
        raise ValueError("bootstrap got empty arrays; there is nothing to resample")
    if any(len(a) != n for a in arrays):
        raise ValueError(f"all arrays must have the same length; got {[len(a) for a in arrays]}")
    rng = np.random.default_rng(seed)

    if groups is None:
        draws = (rng.integers(0, n, n) for _ in range(n_resamples))
    else:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise ValueError(f"groups must give one cluster id per row: {len(groups)} ids for {n} rows")
        _, cluster_of_row = np.unique(groups, return_inverse=True)
        order = np.argsort(cluster_of_row, kind="stable")
        bounds = np.cumsum(np.bincount(cluster_of_row))
        members = np.split(order, bounds[:-1])
        n_clusters = len(members)
        draws = (
            np.concatenate([members[c] for c in rng.integers(0, n_clusters, n_clusters)])
            for _ in range(n_resamples)
        )

    values = np.array([float(statistic(*(a[idx] for a in arrays))) for idx in draws])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)
