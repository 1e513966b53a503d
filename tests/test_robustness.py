"""autopsy.robustness on tiny analytic models, where the right answer is known in closed form."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from autopsy import robustness as rb
from autopsy.stats import wilson_interval

WIDE = (-10.0, 10.0)  # bounds far from the inputs, so clipping never binds in the analytic cases


@pytest.fixture(scope="module")
def linear():
    """A linear decision m(x) = <w, x> + b on (B, 2, 3, 3) inputs, with margins of both signs."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 3, 3, generator=g)
    x = torch.randn(6, 2, 3, 3, generator=g) * 0.3
    forward = lambda t: (t * w).flatten(1).sum(1) + 0.3  # noqa: E731
    margin = forward(x).numpy()
    assert (margin > 0).any() and (margin < 0).any()
    return forward, x, w.numpy(), margin


def identity(out):
    return out


def test_fgsm_moves_along_the_sign_of_the_weights(linear):
    forward, x, w, margin = linear
    res = rb.fgsm(forward, x, target=identity, eps=0.1, bounds=WIDE)
    # each example steps against its own decision: down the weights if positive, up if negative
    expected = -np.sign(margin)[:, None, None, None] * 0.1 * np.sign(w)
    np.testing.assert_allclose(res.adversarial - x.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(res.margin_after, margin - np.sign(margin) * 0.1 * np.abs(w).sum(), rtol=1e-5)
    np.testing.assert_allclose(res.perturbation_norm, 0.1, rtol=1e-5)
    assert res.forward_per_item >= 2 and res.backward_per_item == 1


def test_fgsm_l2_steps_along_the_weights(linear):
    forward, x, w, margin = linear
    res = rb.fgsm(forward, x, target=identity, eps=0.2, norm=2, bounds=WIDE)
    expected = -np.sign(margin)[:, None, None, None] * 0.2 * w / np.linalg.norm(w)
    np.testing.assert_allclose(res.adversarial - x.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("norm, dual", [("inf", 1), (2, 2)])
def test_pgd_budget_search_finds_the_analytic_minimal_budget(linear, norm, dual):
    forward, x, w, margin = linear
    analytic = np.abs(margin) / np.linalg.norm(w.ravel(), dual)  # distance to the hyperplane in the attack's norm
    res = rb.minimal_budget(forward, x, target=identity, budgets=np.linspace(0.05, 3, 30), norm=norm, refine=6,
                            bounds=WIDE)
    assert res.success.all()
    assert (res.budget >= analytic - 1e-5).all()  # never below the true minimum: nothing smaller can flip
    np.testing.assert_allclose(res.budget, analytic, atol=0.1 / 64 + 1e-4)  # grid step / 2**refine
    assert (res.decision_after != res.decision_before).all()
    assert (res.perturbation_norm <= res.budget + 1e-5).all()
    assert res.rounds <= 1 + 5 + 6


def test_logistic_decision_on_unbounded_features():
    # hiring: a logistic scorer on frozen features; the L2 distance to its boundary is |logit| / ||w||
    torch.manual_seed(0)
    scorer = torch.nn.Linear(8, 1)
    scorer.train()  # a mode the caller chose: the toolkit must leave it alone
    features = torch.randn(5, 8) * 3
    logit = scorer(features)[:, 0].detach().numpy()
    res = rb.minimal_budget(scorer, features, target=lambda out: out[:, 0], budgets=np.geomspace(0.01, 20, 24),
                            norm=2, refine=8, bounds=None)
    analytic = np.abs(logit) / scorer.weight.detach().norm().item()
    assert res.success.all() and scorer.training
    np.testing.assert_allclose(res.budget, analytic, rtol=0.01)


def test_budget_search_reports_failures_beyond_the_grid(linear):
    forward, x, w, margin = linear
    res = rb.minimal_budget(forward, x, target=identity, budgets=[0.001, 0.002], norm="inf", bounds=WIDE)
    assert not res.success.any() and np.isinf(res.budget).all()
    np.testing.assert_array_equal(res.adversarial, x.numpy())  # nothing flipped: originals returned
    assert res.to_dict()["budget"] == [None] * len(x)  # JSON has no infinity
    json.dumps(res.to_dict())


def test_mask_keeps_the_perturbation_inside(linear):
    forward, x, w, margin = linear
    mask = np.zeros((3, 3), np.float32)
    mask[:, :2] = 1
    res = rb.pgd(forward, x, target=identity, eps=0.5, steps=5, mask=mask, bounds=WIDE)
    delta = res.adversarial - x.numpy()
    assert np.abs(delta[..., 2]).max() == 0 and np.abs(delta[..., :2]).max() > 0


def test_coverage_decision_flips_at_the_analytic_budget():
    # a "person mask" that is the input itself; the face box holds 0.7 everywhere: erasing the head needs
    # every cell below 0.5, i.e. an L-inf budget just over 0.2
    x = np.full((2, 1, 6, 6), 0.9, np.float32)
    box = np.zeros((6, 6), bool)
    box[1:5, 1:5] = True
    x[:, :, box] = 0.7
    res = rb.minimal_budget(identity, x, target=rb.coverage_margin(box), decision=rb.coverage_decision(box),
                            budgets=np.linspace(0.05, 0.5, 10), refine=4)
    assert res.decision_before.all() and not res.decision_after.any()
    np.testing.assert_allclose(res.budget, 0.2, atol=0.05 / 16 + 1e-4)


def test_region_max_margin_reads_the_argmax_side():
    grid = torch.tensor([[[1.0, 0.0, 0.0, 0.5]], [[0.0, 0.2, 0.9, 0.1]]])[:, None]  # (2, 1, 1, 4)
    left = np.array([[True, True, False, False]])
    margin = rb.region_max_margin(left, ~left)(grid)
    np.testing.assert_allclose(margin.numpy(), [0.5, -0.7])
    soft = rb.region_max_margin(left, ~left, temperature=0.01)(grid)
    assert torch.equal(soft > 0, margin > 0)


def test_one_pixel_attack_finds_a_planted_pixel():
    x = np.full((2, 3, 8, 8), 0.2, np.float32)
    calls = []

    def black_box(t):  # numpy out, no gradients: flips only if pixel (3, 5) is bright in every channel
        calls.append(len(t))
        return 0.6 - t.numpy()[:, :, 3, 5].min(1)

    res = rb.pixel_attack(black_box, x, target=identity, population=100, generations=30, seed=0)
    assert res.success.all()
    np.testing.assert_array_equal(res.positions[:, 0], [[3, 5], [3, 5]])
    assert (res.values > 0.6).all() and (res.margin_after < 0).all()
    changed = (res.adversarial != x).any(1)
    assert changed.sum(axis=(1, 2)).tolist() == [1, 1]
    assert res.evaluations.sum() + len(x) == sum(calls)  # every forward counted

    mask = np.zeros((8, 8))
    mask[:, :4] = 1  # the planted pixel is out of bounds: no flip, positions inside the mask
    res = rb.pixel_attack(black_box, x, target=identity, population=40, generations=3, mask=mask)
    assert not res.success.any() and (res.positions[..., 1] < 4).all()


def test_gradient_attacks_refuse_a_black_box():
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(TypeError, match="pixel_attack"):
        rb.fgsm(lambda t: t.numpy().sum((1, 2, 3)), x, target=identity, eps=0.1)


def test_clear_errors_for_bad_input(linear):
    forward, x, w, margin = linear
    with pytest.raises(ValueError, match="one value per example"):
        rb.fgsm(forward, x, target=lambda out: out[None], eps=0.1, bounds=WIDE)
    with pytest.raises(ValueError, match="outside bounds"):
        rb.fgsm(forward, x, target=identity, eps=0.1)  # inputs go below 0
    with pytest.raises(ValueError, match="does not broadcast"):
        rb.pgd(forward, x, target=identity, eps=0.1, mask=np.ones((4, 4)), bounds=WIDE)
    with pytest.raises(ValueError, match="norm"):
        rb.pgd(forward, x, target=identity, eps=0.1, norm=1, bounds=WIDE)
    with pytest.raises(ValueError, match="budgets"):
        rb.minimal_budget(forward, x, target=identity, budgets=[0, 0.1], bounds=WIDE)
    with pytest.raises(ValueError, match="unknown corruption"):
        rb.corruption_curve(forward, x, target=identity, corruption="fog", bounds=WIDE)


def test_corruption_curves_are_monotone_on_a_toy():
    rng = np.random.default_rng(0)
    img = rng.random((3, 3, 16, 16)).astype(np.float32)
    x0 = torch.from_numpy(img)
    distance = lambda out: -(out - x0).abs().flatten(1).mean(1)  # noqa: E731  (0 = unchanged)
    for kind in ("gaussian_noise", "jpeg"):
        curve = rb.corruption_curve(identity, img, target=distance, corruption=kind)
        assert (np.diff(curve.margin, axis=1) < 0).all(), kind  # each level harsher than the one before
    brightness = lambda out: out.flatten(1).mean(1) - 0.3  # noqa: E731
    curve = rb.corruption_curve(identity, img, target=brightness, corruption="brightness")
    assert (np.diff(curve.margin, axis=1) < 0).all()
    mean = img.reshape(3, -1).mean(1)
    np.testing.assert_allclose(curve.margin, mean[:, None] * curve.levels[None] - 0.3, atol=1e-5)
    flips = mean[:, None] * curve.levels[None] <= 0.3
    np.testing.assert_array_equal(curve.flipped, flips)
    first = np.array([curve.levels[f.argmax()] if f.any() else np.nan for f in flips])
    np.testing.assert_array_equal(curve.first_flip, first)
    frame = curve.to_frame()
    assert len(frame) == 3 * len(curve.levels) and frame["flipped"].sum() == flips.sum()
    assert [e.n for e in curve.flip_rates()] == [3] * len(curve.levels)
    json.dumps(curve.to_dict())


def test_group_summary_intervals():
    success = np.r_[np.ones(30, bool), np.zeros(10, bool), np.ones(8, bool), np.zeros(32, bool)]
    budget = np.where(success, np.tile(np.linspace(0.01, 0.1, 40), 2), np.inf)
    people = pd.Series(["a"] * 40 + ["b"] * 40, name="race")
    table = rb.group_summary(pd.DataFrame({"success": success, "budget": budget}), people, n_boot=500)
    assert list(table.columns) == ["race", "metric", "value", "low", "high", "n", "test", "level", "warning"]
    rate = table[table.metric == "success_rate"].set_index("race")
    assert rate.loc["a", "value"] == 0.75 and rate.loc["b", "value"] == 0.2
    assert (rate.loc["a", "low"], rate.loc["a", "high"]) == pytest.approx(wilson_interval(30, 40))
    median = table[table.metric == "median_budget"].set_index("race")
    a = median.loc["a"]
    assert np.isfinite(a["value"]) and a["low"] <= a["value"] <= a["high"] and a["n"] == 40
    assert np.isinf(median.loc["b", "value"]) and "beyond" in median.loc["b", "warning"]  # most of b never flipped
    assert table["warning"].isna().sum() >= 2  # groups of 40 are not "small"
    small = rb.group_summary(pd.DataFrame({"success": success[:10], "budget": budget[:10]}), ["a"] * 10, n_boot=50)
    assert small["warning"].str.contains("n=10").all()


def test_group_summary_takes_a_result_record(linear):
    forward, x, w, margin = linear
    res = rb.fgsm(forward, x, target=identity, eps=0.2, bounds=WIDE)
    table = rb.group_summary(res, pd.DataFrame({"race": list("xxxyyy"), "gender": list("fmfmfm")}), n_boot=50)
    assert set(table["metric"]) == {"success_rate", "median_budget"} and table["n"].sum() == 2 * len(x)


def test_perturbation_figure_is_colour_blind_safe():
    a = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    b = a.copy()
    b[:, :, 2, 2] += 0.01
    fig = rb.perturbation_figure(a, np.clip(b, 0, 1), titles=["one", "two"])
    maps = [im.get_cmap().name for ax in fig.axes for im in ax.get_images() if im.get_array().ndim == 2]
    assert maps == ["cividis", "cividis"]
    assert len(fig.axes) == 2 * 3 + 1  # six panels and one colour bar
