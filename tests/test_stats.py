import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from autopsy.stats import Estimate, binomial_test, bootstrap, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (57, 100), (1, 1000)])
def test_wilson_agrees_with_scipy_and_textbook(k, n):
    low, high = wilson_interval(k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(ci.low, abs=1e-9)
    assert high == pytest.approx(ci.high, abs=1e-9)
    # Textbook form: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, p = 1.959963984540054, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert low == pytest.approx(max(0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1, centre + half), abs=1e-9)


def test_wilson_level_widens_interval():
    narrow = wilson_interval(30, 100, level=0.8)
    wide = wilson_interval(30, 100, level=0.99)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_bad_counts_name_the_problem():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n must be at least 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="level"):
        wilson_interval(1, 10, level=95)


def test_binomial_test_exact_values():
    # P(X <= 2 or X >= 8 | n=10, p=.5) = 2 * 56 / 1024
    assert binomial_test(2, 10) == pytest.approx(112 / 1024)
    assert binomial_test(5, 10) == pytest.approx(1.0)


def test_bootstrap_mean_interval_brackets_the_mean():
    x = np.random.default_rng(1).normal(3.0, 1.0, 200)
    low, high = bootstrap(np.mean, x, n_resamples=500, seed=0)
    assert low < x.mean() < high
    # close to the normal-theory interval half-width 1.96 * sd / sqrt(n)
    assert (high - low) / 2 == pytest.approx(1.96 * x.std() / np.sqrt(200), rel=0.25)
    assert bootstrap(np.mean, x, n_resamples=500, seed=0) == (low, high)  # seeded


def test_cluster_bootstrap_is_wider_for_clustered_data():
    rng = np.random.default_rng(0)
    cluster_effect = rng.normal(0, 1, 20)
    groups = np.repeat(np.arange(20), 10)  # 20 items, each measured 10 times
    x = cluster_effect[groups] + rng.normal(0, 0.1, 200)
    rows = bootstrap(np.mean, x, n_resamples=500)
    clusters = bootstrap(np.mean, x, n_resamples=500, groups=groups)
    assert clusters[1] - clusters[0] > 2 * (rows[1] - rows[0])


def test_bootstrap_paired_arrays_and_nan_resamples():
    a = np.array([1, 0, 1, 1, 0, 1])
    b = np.array([1, 1, 0, 1, 0, 1])
    low, high = bootstrap(lambda u, v: np.mean(u == v), a, b, n_resamples=200)
    assert 0 <= low <= high <= 1
    assert all(math.isnan(v) for v in bootstrap(lambda u: float("nan"), a, n_resamples=10))
    with pytest.raises(ValueError, match="same length"):
        bootstrap(np.mean, a, b[:3])


def test_estimate_round_trips_through_json():
    e = Estimate(0.4, 0.3, float("nan"), 50, "Wilson 95%", warning="small", p_value=0.01)
    d = json.loads(json.dumps(e.to_dict()))
    assert list(d) == ["value", "low", "high", "n", "test", "level", "warning", "p_value"]
    assert d["high"] is None
    back = Estimate.from_dict(d)
    assert back.value == 0.4 and math.isnan(back.high) and back.p_value == 0.01 and back.n == 50
    with pytest.raises(ValueError, match="missing keys"):
        Estimate.from_dict({"value": 1})
