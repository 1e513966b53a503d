import json

import numpy as np
import pandas as pd
import pytest

from autopsy.fairness import (
    demographic_parity_difference,
    disparate_impact_ratio,
    equal_opportunity_difference,
    group_metrics,
    paired_preference,
    preference,
    score_by_group,
)

# group a: 4 items, group b: 6 items
Y_TRUE = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
Y_PRED = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 1])
GROUP = np.array(["a"] * 4 + ["b"] * 6)
# by hand -- a: selection 2/4, tpr 1/2, fpr 1/2;  b: selection 2/6, tpr 1/3, fpr 1/3


def _value(df, group, metric, col="value"):
    return df[(df["group"] == group) & (df["metric"] == metric)][col].item()


def test_group_metrics_equal_hand_computed_values():
    df = group_metrics(Y_TRUE, Y_PRED, GROUP, n_boot=200)
    assert list(df.columns) == ["group", "metric", "value", "low", "high", "n", "test", "level", "warning"]
    assert _value(df, "a", "selection_rate") == pytest.approx(0.5)
    assert _value(df, "a", "tpr") == pytest.approx(0.5)
    assert _value(df, "a", "fpr") == pytest.approx(0.5)
    assert _value(df, "b", "selection_rate") == pytest.approx(1 / 3)
    assert _value(df, "b", "tpr") == pytest.approx(1 / 3)
    assert _value(df, "b", "fpr") == pytest.approx(1 / 3)
    assert _value(df, "a", "tpr", "n") == 2 and _value(df, "b", "fpr", "n") == 3 and _value(df, "b", "selection_rate", "n") == 6
    assert (df["low"] <= df["value"]).all() and (df["value"] <= df["high"]).all()
    assert df["warning"].str.contains("n=").all()  # every group here is below 30: said, not hidden


def test_intersectional_groups_from_a_dataframe():
    sens = pd.DataFrame({"race": ["x", "x", "y", "y"] * 10, "gender": ["f", "m"] * 20})
    y_pred = np.tile([1, 0, 0, 0], 10)
    df = group_metrics(None, y_pred, sens, metrics=("selection_rate",), n_boot=100, min_group_size=5)
    assert set(map(tuple, df[["race", "gender"]].values)) == {("x", "f"), ("x", "m"), ("y", "f"), ("y", "m")}
    row = df[(df.race == "x") & (df.gender == "f")]
    assert row["value"].item() == 1.0 and row["n"].item() == 10 and row["warning"].isna().all()
    assert df[(df.race == "y")]["value"].eq(0).all()


def test_score_by_group_with_median():
    scores = np.array([0.1, 0.2, 0.9, 0.5, 0.6, 0.7, 0.8])
    df = score_by_group(scores, ["u"] * 3 + ["v"] * 4, statistic=np.median, n_boot=100)
    assert _value(df, "u", "median") == pytest.approx(0.2)
    assert _value(df, "v", "median") == pytest.approx(0.65)


def test_differences_and_ratio_hand_computed():
    dpd = demographic_parity_difference(Y_PRED, GROUP, n_boot=300)
    assert dpd.value == pytest.approx(0.5 - 1 / 3)
    assert dpd.low <= dpd.value <= dpd.high and dpd.warning
    named = demographic_parity_difference(Y_PRED, GROUP, between=("b", "a"), n_boot=300)
    assert named.value == pytest.approx(1 / 3 - 0.5)
    eod = equal_opportunity_difference(Y_TRUE, Y_PRED, GROUP, n_boot=300)
    assert eod.value == pytest.approx(0.5 - 1 / 3)
    di = disparate_impact_ratio(Y_PRED, GROUP, between=("b", "a"), n_boot=300)
    assert di.ratio.value == pytest.approx((1 / 3) / 0.5)
    assert not di.four_fifths and "adverse impact" in di.verdict
    json.dumps(di.to_dict())
    with pytest.raises(ValueError, match="not found"):
        demographic_parity_difference(Y_PRED, GROUP, between=("a", "zzz"))


def test_four_fifths_passes_for_equal_rates():
    y_pred = np.tile([1, 0], 100)
    di = disparate_impact_ratio(y_pred, np.repeat(["p", "q"], 100), n_boot=200)
    assert di.ratio.value == pytest.approx(1.0) and di.four_fifths


def test_preference_wilson_and_exact_binomial():
    est = preference(2, 10)
    assert est.value == 0.2 and est.p_value == pytest.approx(112 / 1024)
    assert est.warning and "n=10" in est.warning


def test_paired_preference_cluster_interval_is_wider_when_items_repeat():
    rng = np.random.default_rng(0)
    # 8 a-items and 8 b-items, every pair tried 5 times; some a-items always win, others always lose
    strength = rng.normal(0, 2, 8)
    ia, ib = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    ia, ib = np.repeat(ia.ravel(), 5), np.repeat(ib.ravel(), 5)
    a_wins = strength[ia] + rng.normal(0, 0.3, len(ia)) > 0
    winners = np.where(a_wins, "A", "B")
    winners[:3] = "tie"
    res = paired_preference(winners, "A", "B", items_a=ia, items_b=ib, n_boot=500)
    assert res.n_excluded == 3 and res.naive.n == len(ia) - 3
    assert res.clustered.value == res.naive.value
    naive_width = res.naive.high - res.naive.low
    assert res.clustered.high - res.clustered.low > 2 * naive_width
    assert "only 8 items" in res.clustered.warning
    one_side = paired_preference(winners, "A", "B", items_a=ia, n_boot=500)
    assert one_side.clustered.high - one_side.clustered.low > 2 * naive_width
    assert paired_preference(winners, "A", "B").clustered is None
    json.dumps(res.to_dict())


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown metric"):
        group_metrics(Y_TRUE, Y_PRED, GROUP, metrics=("precision_at_k",))
    with pytest.raises(ValueError, match="sensitive has 3 rows"):
        group_metrics(Y_TRUE, Y_PRED, GROUP[:3])
    with pytest.raises(ValueError, match="needs? true labels|need true labels"):
        group_metrics(None, Y_PRED, GROUP)


def test_mean_estimate_is_score_by_group_on_one_group():
    from autopsy.fairness import estimates_by_group, mean_estimate

    values = np.array([0.2, 0.4, np.nan, 0.9])  # NaN: no measurement, left out
    est = mean_estimate(values, n_boot=300, seed=4)
    row = estimates_by_group(score_by_group(values[np.isfinite(values)], np.zeros(3, int), n_boot=300, seed=4))[0]
    assert est == row and est.value == pytest.approx(0.5) and est.n == 3 and "n=3 < 30" in est.warning
    empty = mean_estimate([np.nan])
    assert empty.n == 0 and np.isnan(empty.value) and empty.warning == "no values"


def test_mean_difference_hand_computed_with_a_rank_test():
    from scipy.stats import mannwhitneyu

    from autopsy.fairness import mean_difference

    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 0.0, 1.0])
    est = mean_difference(a, b, label="x: a - b", n_boot=500, seed=1)
    assert est.value == pytest.approx(2.5 - 1 / 3) and est.n == 7
    assert est.low <= est.value <= est.high
    assert est.p_value == pytest.approx(mannwhitneyu(a, b).pvalue)
    assert est.test == "x: a - b; bootstrap within groups (500 resamples); Mann-Whitney U p"
    assert est.warning == "a group below n=30"
    assert mean_difference([1.0, 1.0], [1.0], n_boot=50).p_value is None  # all equal: no ranks to test
    with pytest.raises(ValueError, match="two non-empty 1-D"):
        mean_difference([], [1.0])


def test_spread_of_means_hand_computed_with_kruskal_wallis():
    from scipy.stats import kruskal

    from autopsy.fairness import spread_of_means

    scores = np.array([0.9, 1.0, 0.5, 0.7, 0.8, 0.8])
    groups = np.array(["a", "a", "b", "b", "c", "c"])  # means 0.95, 0.6, 0.8
    est = spread_of_means(scores, groups, label="group coverage", n_boot=400, seed=2)
    assert est.value == pytest.approx(0.35) and est.n == 6 and est.low <= est.value <= est.high
    assert est.p_value == pytest.approx(kruskal([0.9, 1.0], [0.5, 0.7], [0.8, 0.8]).pvalue)
    assert est.test.startswith("max - min of group coverage; bootstrap within groups (400 resamples)")
    assert "a (n=2)" in est.warning
    with pytest.raises(ValueError, match="at least two groups"):
        spread_of_means([0.1, 0.2], ["a", "a"])
