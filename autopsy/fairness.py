"""Group fairness metrics with confidence intervals, and paired preference tests.

Per-group values come from fairlearn's ``MetricFrame`` (Bird et al. 2020, "Fairlearn: A toolkit for
assessing and improving fairness in AI"); intervals from a percentile bootstrap that resamples rows
within each group (group sizes fixed), so differences between groups get intervals from the same
resamples. Definitions: demographic parity and equal opportunity as in Hardt, Price & Srebro (NeurIPS
2016), "Equality of Opportunity in Supervised Learning"; the four-fifths rule from the US EEOC Uniform
Guidelines on Employee Selection Procedures (29 CFR 1607.4(D), 1978). Paired preference trials in
which items recur are resampled by items with the pigeonhole bootstrap (Owen 2007, "The pigeonhole
bootstrap", Annals of Applied Statistics 1(2)). Differences of mean scores carry the Mann-Whitney U
test (Mann & Whitney 1947); spreads over several groups the Kruskal-Wallis test (Kruskal & Wallis 1952).

Groups smaller than ``min_group_size`` are reported with a warning, never dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from scipy import stats as _scipy_stats

from autopsy.stats import Estimate, binomial_test, bootstrap, wilson_interval

__all__ = [
    "group_metrics",
    "score_by_group",
    "estimates_by_group",
    "mean_estimate",
    "mean_difference",
    "spread_of_means",
    "metric_difference",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "disparate_impact_ratio",
    "DisparateImpact",
    "preference",
    "paired_preference",
    "PreferenceResult",
]

MIN_GROUP_SIZE = 30


def _ratio(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


# name -> (numerator mask, denominator mask), both functions of (y_true, y_pred) booleans. Vectorised over
# leading axes so that all bootstrap resamples of a group are computed at once.
_RATES = {
    "selection_rate": (lambda t, p: p, lambda t, p: np.ones_like(p)),
    "tpr": (lambda t, p: t & p, lambda t, p: t),
    "fnr": (lambda t, p: t & ~p, lambda t, p: t),
    "fpr": (lambda t, p: ~t & p, lambda t, p: ~t),
    "tnr": (lambda t, p: ~t & ~p, lambda t, p: ~t),
    "accuracy": (lambda t, p: t == p, lambda t, p: np.ones_like(p)),
}


def _rate(name: str) -> Callable:
    num, den = _RATES[name]

    def metric(y_true, y_pred):
        t, p = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
        return _ratio(num(t, p).sum(-1), den(t, p).sum(-1))

    metric.__name__ = name
    return metric


def sensitive_frame(sensitive, n: int) -> pd.DataFrame:
    """Sensitive features as a DataFrame with one column per attribute (1-D input: a column 'group'), checked."""
    if isinstance(sensitive, pd.DataFrame):
        frame = sensitive.reset_index(drop=True)
    elif isinstance(sensitive, pd.Series):
        frame = sensitive.rename(sensitive.name or "group").reset_index(drop=True).to_frame()
    else:
        arr = np.asarray(sensitive)
        if arr.ndim != 1:
            raise ValueError(f"sensitive must be 1-D or a DataFrame (one column per attribute); got shape {arr.shape}")
        frame = pd.DataFrame({"group": arr})
    if len(frame) != n:
        raise ValueError(f"sensitive has {len(frame)} rows but there are {n} predictions/scores")
    if frame.isna().any().any():
        raise ValueError("sensitive contains missing values; label them explicitly (e.g. 'unknown') or drop those rows")
    return frame.astype(str) if frame.shape[1] > 1 else frame


def _group_rows(frame: pd.DataFrame) -> dict:
    keys = list(frame.columns)
    grouped = frame.groupby(keys if len(keys) > 1 else keys[0], sort=True).indices
    return {k: np.asarray(v) for k, v in grouped.items()}


def _binary(y, name: str, pos_label) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}")
    return y == pos_label


def _resampled(rows: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rows[rng.integers(0, len(rows), (n_boot, len(rows)))]


def _boot_metric(metric: Callable, name: str, t, p, idx: np.ndarray) -> np.ndarray:
    if name in _RATES:
        return metric(t[idx], p[idx])
    return np.array([metric(t[i], p[i]) for i in idx], dtype=float)


def _interval(dist: np.ndarray, level: float) -> tuple[float, float]:
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(dist, [alpha, 1 - alpha]))


def _denominator(name: str, t: np.ndarray, p: np.ndarray) -> int:
    return int(_RATES[name][1](t, p).sum()) if name in _RATES else len(t)


def _small_warning(n: int, min_group_size: int) -> str | None:
    return f"n={n} < {min_group_size}: interval unreliable, group too small" if n < min_group_size else None


def _long_frame(frame: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(records)
    cols = list(frame.columns)
    keys = out.pop("group").tolist()
    for j, col in enumerate(cols):
        out.insert(j, col, [k[j] if isinstance(k, tuple) else k for k in keys])
    return out


def _metric_table(y_true, y_pred, sensitive, metrics, pos_label):
    y_pred_b = _binary(y_pred, "y_pred", pos_label)
    y_true_b = np.zeros_like(y_pred_b) if y_true is None else _binary(y_true, "y_true", pos_label)
    if len(y_true_b) != len(y_pred_b):
        raise ValueError(f"y_true has {len(y_true_b)} items but y_pred has {len(y_pred_b)}")
    funcs = {}
    for m in ([metrics] if isinstance(metrics, str) else metrics):
        if isinstance(m, str):
            if m not in _RATES:
                raise ValueError(f"unknown metric {m!r}; built-ins are {sorted(_RATES)}, or pass {{name: callable}}")
            funcs[m] = _rate(m)
        else:
            raise TypeError(f"metrics must be names or a dict {{name: callable(y_true, y_pred)}}; got {m!r}")
    return y_true_b, y_pred_b, funcs, sensitive_frame(sensitive, len(y_pred_b))


def group_metrics(
    y_true,
    y_pred,
    sensitive,
    *,
    metrics=("selection_rate", "tpr", "fpr"),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_group_size: int = MIN_GROUP_SIZE,
    pos_label=1,
) -> pd.DataFrame:
    """Per-group (or intersectional, if ``sensitive`` is a DataFrame) binary-classification metrics.

    Returns one row per group and metric: the group columns, ``metric``, ``value``, ``low``, ``high``
    (percentile bootstrap within the group), ``n`` (the metric's denominator: group size for
    selection rate and accuracy, positives for tpr/fnr, negatives for fpr/tnr), ``test``, ``level``
    and ``warning`` (set when n < ``min_group_size``). ``metrics`` takes built-in names
    (selection_rate, tpr, fpr, fnr, tnr, accuracy) and/or a dict of ``callable(y_true, y_pred)``.
    ``y_true`` may be None for selection rate only.
    """
    custom = dict(metrics) if isinstance(metrics, dict) else {}
    names = [] if isinstance(metrics, dict) else metrics
    y_true_b, y_pred_b, funcs, frame = _metric_table(y_true, y_pred, sensitive, names, pos_label)
    if y_true is None and any(m != "selection_rate" for m in list(funcs) + list(custom)):
        raise ValueError("y_true=None only allows metrics=('selection_rate',); the others need true labels")
    funcs.update(custom)
    mf = MetricFrame(metrics=funcs, y_true=y_true_b, y_pred=y_pred_b,
                     sensitive_features=frame if frame.shape[1] > 1 else frame.iloc[:, 0])
    rng = np.random.default_rng(seed)
    records = []
    for key, rows in _group_rows(frame).items():
        idx = _resampled(rows, n_boot, rng)
        for name, fn in funcs.items():
            low, high = _interval(_boot_metric(fn, name, y_true_b, y_pred_b, idx), level)
            n = _denominator(name, y_true_b[rows], y_pred_b[rows])
            records.append({"group": key, "metric": name, "value": float(mf.by_group.loc[key, name]),
                            "low": low, "high": high, "n": n,
                            "test": f"bootstrap within group ({n_boot} resamples)", "level": level,
                            "warning": _small_warning(n, min_group_size)})
    return _long_frame(frame, records)


def score_by_group(
    scores,
    sensitive,
    *,
    statistic: Callable = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_group_size: int = MIN_GROUP_SIZE,
) -> pd.DataFrame:
    """``statistic`` of per-item scores (IoU, face coverage, ...) by group, with bootstrap intervals.

    Same columns as :func:`group_metrics`; ``metric`` is the statistic's name and ``n`` the group size.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, one per item; got shape {scores.shape}")
    frame = sensitive_frame(sensitive, len(scores))
    name = getattr(statistic, "__name__", "statistic")
    mf = MetricFrame(metrics={name: lambda t, p: statistic(t)}, y_true=scores, y_pred=scores,
                     sensitive_features=frame if frame.shape[1] > 1 else frame.iloc[:, 0])
    rng = np.random.default_rng(seed)
    records = []
    for key, rows in _group_rows(frame).items():
        dist = np.array([statistic(scores[i]) for i in _resampled(rows, n_boot, rng)], dtype=float)
        low, high = _interval(dist, level)
        records.append({"group": key, "metric": name, "value": float(mf.by_group.loc[key, name]), "low": low,
                        "high": high, "n": len(rows), "test": f"bootstrap within group ({n_boot} resamples)",
                        "level": level, "warning": _small_warning(len(rows), min_group_size)})
    return _long_frame(frame, records)


def estimates_by_group(frame: pd.DataFrame, by: str | None = None) -> dict:
    """The rows of :func:`group_metrics` / :func:`score_by_group` as ``{group: Estimate}``.

    ``by`` names the group column (default: the first column); keep one metric per frame.
    """
    by = by or frame.columns[0]
    return {row[by]: Estimate(float(row["value"]), float(row["low"]), float(row["high"]), int(row["n"]),
                              str(row["test"]), level=float(row["level"]),
                              warning=row["warning"] if isinstance(row["warning"], str) else None)
            for _, row in frame.iterrows()}


def mean_estimate(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                  min_group_size: int = MIN_GROUP_SIZE) -> Estimate:
    """Mean of the finite ``values`` with a percentile bootstrap interval (:func:`score_by_group` on one
    group). No finite value gives an undefined estimate that says so."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap", level=level, warning="no values")
    frame = score_by_group(values, np.zeros(len(values), dtype=int), n_boot=n_boot, seed=seed, level=level,
                           min_group_size=min_group_size)
    return estimates_by_group(frame)[0]


def mean_difference(a, b, *, label: str = "a - b", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    min_group_size: int = MIN_GROUP_SIZE) -> Estimate:
    """``mean(a) - mean(b)`` of two groups' scores: a percentile bootstrap that resamples within each
    group (sizes fixed) and the two-sided Mann-Whitney U p-value (None when every score is equal).
    ``label`` names the contrast in the estimate's test, e.g. ``"coverage: Black - White"``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"mean_difference needs two non-empty 1-D score arrays; got shapes {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    boots = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    low, high = _interval(boots, level)
    p = float(_scipy_stats.mannwhitneyu(a, b).pvalue) if np.ptp(np.r_[a, b]) > 0 else None
    small = min(len(a), len(b)) < min_group_size
    return Estimate(float(a.mean() - b.mean()), low, high, len(a) + len(b),
                    f"{label}; bootstrap within groups ({n_boot} resamples); Mann-Whitney U p", level=level,
                    p_value=p, warning=f"a group below n={min_group_size}" if small else None)


def spread_of_means(scores, sensitive, *, label: str = "group means", n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95, min_group_size: int = MIN_GROUP_SIZE) -> Estimate:
    """The largest minus the smallest group mean of ``scores``, the max and min re-taken in every
    resample of a bootstrap within groups, with the Kruskal-Wallis p-value across all groups."""
    scores = np.asarray(scores, dtype=float)
    frame = sensitive_frame(sensitive, len(scores))
    by_group = pd.Series(scores).groupby([frame[c] for c in frame.columns] if frame.shape[1] > 1 else frame.iloc[:, 0])
    means = by_group.mean()
    if len(means) < 2:
        raise ValueError(f"a spread needs at least two groups; got {list(means.index)}")
    groups = [g.to_numpy() for _, g in by_group]
    rng = np.random.default_rng(seed)
    boots = np.array([[g[rng.integers(0, len(g), len(g))].mean() for g in groups] for _ in range(n_boot)])
    low, high = _interval(boots.max(1) - boots.min(1), level)
    try:
        p = float(_scipy_stats.kruskal(*groups).pvalue)
    except ValueError:  # every score identical
        p = None
    small = [f"{k} (n={len(g)})" for k, g in zip(means.index, groups) if len(g) < min_group_size]
    return Estimate(float(means.max() - means.min()), low, high, len(scores),
                    f"max - min of {label}; bootstrap within groups ({n_boot} resamples); Kruskal-Wallis p",
                    level=level, p_value=p, warning=f"groups below n={min_group_size}: {', '.join(small)}" if small else None)


def _group_distributions(y_true_b, y_pred_b, frame, name, fn, n_boot, seed):
    rng = np.random.default_rng(seed)
    values, dists, sizes = {}, {}, {}
    for key, rows in _group_rows(frame).items():
        values[key] = float(fn(y_true_b[rows], y_pred_b[rows]))
        dists[key] = _boot_metric(fn, name, y_true_b, y_pred_b, _resampled(rows, n_boot, rng))
        sizes[key] = _denominator(name, y_true_b[rows], y_pred_b[rows])
    return values, dists, sizes


def _pick(values: dict, between) -> tuple:
    if between is None:
        finite = {k: v for k, v in values.items() if np.isfinite(v)}
        if len(finite) < 2:
            raise ValueError(f"need at least two groups with a defined value; got {values}")
        return max(finite, key=finite.get), min(finite, key=finite.get)
    if len(between) != 2:
        raise ValueError(f"between must name two groups, e.g. between=('Black', 'White'); got {between!r}")
    for g in between:
        if g not in values:
            raise ValueError(f"group {g!r} not found; groups are {list(values)}")
    return tuple(between)


def metric_difference(
    y_true,
    y_pred,
    sensitive,
    *,
    metric: str = "selection_rate",
    between=None,
    ratio: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_group_size: int = MIN_GROUP_SIZE,
    pos_label=1,
) -> Estimate:
    """Difference (or ratio) of a metric between two groups, with a stratified bootstrap interval.

    ``between=(a, b)`` gives metric[a] - metric[b] (or a / b); by default the largest minus the
    smallest group value (fairlearn's ``between_groups``; for a ratio, smallest / largest), with the
    max and min re-taken in every resample.
    """
    y_true_b, y_pred_b, funcs, frame = _metric_table(y_true, y_pred, sensitive, [metric], pos_label)
    values, dists, sizes = _group_distributions(y_true_b, y_pred_b, frame, metric, funcs[metric], n_boot, seed)
    hi, lo = _pick(values, between)
    if between is None:
        stacked = np.vstack(list(dists.values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # resamples where every group is undefined
            top, bottom = np.nanmax(stacked, 0), np.nanmin(stacked, 0)
        a_val, b_val, a_dist, b_dist = values[hi], values[lo], top, bottom
        if ratio:
            a_val, b_val, a_dist, b_dist = b_val, a_val, b_dist, a_dist  # smallest / largest
        label = "max - min over groups" if not ratio else "min / max over groups"
    else:
        a_val, b_val, a_dist, b_dist = values[hi], values[lo], dists[hi], dists[lo]
        label = f"{hi} {'/' if ratio else '-'} {lo}"
    value = float(_ratio(a_val, b_val)) if ratio else a_val - b_val
    dist = _ratio(a_dist, b_dist) if ratio else a_dist - b_dist
    low, high = _interval(dist, level)
    small = [f"{k} (n={n})" for k, n in sizes.items() if n < min_group_size]
    warning = f"groups below n={min_group_size}: {', '.join(map(str, small))}" if small else None
    return Estimate(value, low, high, int(sum(sizes.values())),
                    f"{metric} {label}; bootstrap within groups ({n_boot} resamples)", level=level, warning=warning)


def demographic_parity_difference(y_pred, sensitive, *, between=None, **kwargs) -> Estimate:
    """Selection-rate difference between groups (demographic parity; Hardt et al. 2016)."""
    return metric_difference(None, y_pred, sensitive, metric="selection_rate", between=between, **kwargs)


def equal_opportunity_difference(y_true, y_pred, sensitive, *, between=None, **kwargs) -> Estimate:
    """True-positive-rate difference between groups (equal opportunity; Hardt et al. 2016)."""
    return metric_difference(y_true, y_pred, sensitive, metric="tpr", between=between, **kwargs)


@dataclass(frozen=True)
class DisparateImpact:
    """Selection-rate ratio with the four-fifths rule verdict (EEOC 1978)."""

    ratio: Estimate
    four_fifths: bool  # True: the point estimate is at least 0.8, no adverse impact by the rule
    verdict: str

    def to_dict(self) -> dict:
        return {"ratio": self.ratio.to_dict(), "four_fifths": self.four_fifths, "verdict": self.verdict}


def disparate_impact_ratio(y_pred, sensitive, *, between=None, threshold: float = 0.8, **kwargs) -> DisparateImpact:
    """Selection rate of one group over another's (``between=(protected, reference)``; default lowest
    over highest), judged by the four-fifths rule: a ratio below 0.8 indicates adverse impact."""
    est = metric_difference(None, y_pred, sensitive, metric="selection_rate", between=between, ratio=True, **kwargs)
    passes = bool(est.value >= threshold)
    if not np.isfinite(est.value):
        verdict = "ratio undefined: the reference group has no selections"
    else:
        side = "excludes" if not (est.low <= threshold <= est.high) else "includes"
        verdict = (f"ratio {est.value:.2f} {'>=' if passes else '<'} {threshold}: "
                   f"{'no adverse impact' if passes else 'adverse impact'} under the four-fifths rule; "
                   f"the {est.level:.0%} interval [{est.low:.2f}, {est.high:.2f}] {side} {threshold}")
    return DisparateImpact(est, passes, verdict)


def preference(wins_a: int, n: int, *, level: float = 0.95, p: float = 0.5, min_trials: int = 30) -> Estimate:
    """Share of ``n`` paired trials won by A: Wilson interval and exact two-sided binomial test vs ``p``.

    Assumes independent trials; when the same items recur across trials use :func:`paired_preference`.
    """
    low, high = wilson_interval(wins_a, n, level=level)
    return Estimate(wins_a / n, low, high, int(n), f"Wilson {level:.0%}; exact binomial test vs {p} (two-sided)",
                    level=level, warning=_small_warning(int(n), min_trials), p_value=binomial_test(wins_a, n, p=p))


@dataclass(frozen=True)
class PreferenceResult:
    """Share of trials won by ``a`` over ``b``, naive (independent trials) and clustered by items."""

    a: str
    b: str
    naive: Estimate  # Wilson + exact binomial, as if trials were independent
    clustered: Estimate | None  # bootstrap over items; None when no item ids were given
    n_excluded: int  # trials won by neither a nor b (ties, other outcomes)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "naive": self.naive.to_dict(),
                "clustered": None if self.clustered is None else self.clustered.to_dict(),
                "n_excluded": self.n_excluded}


def paired_preference(
    winners,
    a,
    b,
    *,
    items_a=None,
    items_b=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_trials: int = 30,
    min_items: int = 10,
) -> PreferenceResult:
    """Paired trials: how often does ``a`` win over ``b``? (e.g. which face a crop keeps).

    ``winners`` holds the winning label of each trial; trials won by neither are excluded and counted.
    ``items_a`` / ``items_b`` give the id of the a-side / b-side item in each trial. Items recur across
    trials, so trials are not independent and the naive binomial interval is too narrow; with ids,
    ``clustered`` resamples items (both sides independently: the pigeonhole bootstrap, Owen 2007; one
    side: a cluster bootstrap). Both results are returned.
    """
    winners = np.asarray(winners)
    keep = (winners == a) | (winners == b)
    n_excluded = int((~keep).sum())
    wins = (winners[keep] == a).astype(float)
    n = len(wins)
    if n == 0:
        raise ValueError(f"no trial was won by {a!r} or {b!r}; winners contain {np.unique(winners)[:10].tolist()}")
    naive = preference(int(wins.sum()), n, level=level, min_trials=min_trials)
    clustered = None
    sides = [np.asarray(ids)[keep] if ids is not None else None for ids in (items_a, items_b)]
    for ids, label in zip((items_a, items_b), ("items_a", "items_b")):
        if ids is not None and len(ids) != len(winners):
            raise ValueError(f"{label} must give one item id per trial: {len(ids)} ids for {len(winners)} trials")
    given = [s for s in sides if s is not None]
    if given:
        if len(given) == 1:
            low, high = bootstrap(np.mean, wins, n_resamples=n_boot, level=level, seed=seed, groups=given[0])
            n_items = len(np.unique(given[0]))
            test = f"cluster bootstrap over {n_items} items ({n_boot} resamples)"
        else:
            low, high, n_items = _pigeonhole(wins, *given, n_boot=n_boot, level=level, seed=seed)
            test = (f"pigeonhole bootstrap over {len(np.unique(given[0]))} a-items x {len(np.unique(given[1]))} "
                    f"b-items (Owen 2007; {n_boot} resamples)")
        notes = [w for w in (naive.warning, f"only {n_items} items: the clustered interval is rough"
                             if n_items < min_items else None) if w]
        clustered = Estimate(naive.value, low, high, n, test, level=level, warning="; ".join(notes) or None)
    return PreferenceResult(str(a), str(b), naive, clustered, n_excluded)


def _pigeonhole(wins, ids_a, ids_b, *, n_boot, level, seed, chunk=250):
    _, ia = np.unique(ids_a, return_inverse=True)
    _, ib = np.unique(ids_b, return_inverse=True)
    na, nb = ia.max() + 1, ib.max() + 1
    rng = np.random.default_rng(seed)
    shares = []
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        # each resample draws items of both sides with replacement; a trial counts once per pair of draws
        wa = rng.multinomial(na, np.full(na, 1 / na), size=k).astype(np.float32)
        wb = rng.multinomial(nb, np.full(nb, 1 / nb), size=k).astype(np.float32)
        w = wa[:, ia] * wb[:, ib]
        shares.append(_ratio((w * wins).sum(1), w.sum(1)))
    low, high = _interval(np.concatenate(shares), level)
    return low, high, min(na, nb)
