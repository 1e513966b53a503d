import numpy as np
import pytest
import torch
from torch import nn

from autopsy.saliency import attribute, faithfulness, randomisation_check, ssim


@pytest.fixture
def linear():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    return model, torch.randn(4, 6)


def test_integrated_gradients_on_linear_model_is_input_times_weight(linear):
    model, x = linear
    maps = attribute(model, x, target=1, method="integrated_gradients", n_steps=32)
    expected = (x * model.weight[1]).detach().numpy()
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    # completeness: attributions sum to f(x) - f(0)
    delta = (model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]).detach().numpy()
    np.testing.assert_allclose(maps.sum(1), delta, atol=1e-4)


def test_callable_target_selects_one_scalar_per_item(linear):
    model, x = linear
    by_callable = attribute(model, x, target=lambda out: out[:, 2] - out[:, 0], method="gradient", abs=False)
    expected = (model.weight[2] - model.weight[0]).detach().numpy()
    np.testing.assert_allclose(by_callable, np.broadcast_to(expected, by_callable.shape), atol=1e-6)


def test_spatial_output_needs_a_reducing_target():
    conv = nn.Conv2d(3, 1, 3, padding=1)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="one scalar per batch item"):
        attribute(conv, x, method="gradient")
    maps = attribute(conv, x, method="gradient", target=lambda out: out.flatten(1).amax(1))
    assert maps.shape == x.shape


def test_gradient_method_on_non_differentiable_callable_names_perturbation_methods(linear):
    model, x = linear

    def numpy_forward(t):
        return model(t).detach().numpy()

    def crashing_forward(t):
        return torch.as_tensor(model(t).numpy())  # .numpy() on a grad-requiring tensor raises

    for forward in (numpy_forward, crashing_forward):
        with pytest.raises(TypeError, match="occlusion.*feature_ablation.*kernel_shap"):
            attribute(forward, x, target=0, method="integrated_gradients")
    # the same callable works with perturbation methods
    maps = attribute(numpy_forward, x, target=0, method="feature_ablation")
    np.testing.assert_allclose(maps, (x * model.weight[0]).detach().numpy(), atol=1e-5)


def test_perturbation_methods_on_images_with_numpy_forward():
    def brightness_top_left(t):  # a black box: numpy in, numpy out
        return t.numpy()[:, :, :8, :8].mean(axis=(1, 2, 3))

    x = torch.rand(2, 3, 16, 16)
    for method in ("occlusion", "feature_ablation", "kernel_shap"):
        maps = attribute(brightness_top_left, x, method=method, **({"n_samples": 60} if method == "kernel_shap" else {}))
        assert maps.shape == x.shape
        inside, outside = np.abs(maps[:, :, :8, :8]).mean(), np.abs(maps[:, :, 8:, 8:]).mean()
        assert inside > 10 * outside, method


def test_grad_cam_by_dotted_name_is_upsampled():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    x = torch.rand(2, 3, 16, 16)
    cam = attribute(model, x, target=0, method="grad_cam", layer="3")
    assert cam.shape == (2, 1, 16, 16) and (cam >= 0).all()
    with pytest.raises(ValueError, match="needs layer"):
        attribute(model, x, target=0, method="grad_cam")
    with pytest.raises(ValueError, match="no layer named"):
        attribute(model, x, target=0, method="grad_cam", layer="conv9")


def _square_detector():
    """A small CNN trained on the fly to detect a bright 5x5 square on a dim noisy 16x16 image."""
    g = torch.Generator().manual_seed(0)
    n = 128
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    y = torch.arange(n) % 2
    rows, cols = torch.randint(0, 12, (2, n), generator=g)
    for i in torch.nonzero(y).ravel():
        x[i, 0, rows[i] : rows[i] + 5, cols[i] : cols[i] + 5] += 0.7
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                          nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), 2e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95
    return model.eval(), x[y == 1][:4]


def test_randomisation_check_drops_similarity_on_a_trained_cnn():
    model, x = _square_detector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = randomisation_check(model, x, target=1, method="gradient", seed=0)
    assert list(check.steps["layer"]) == ["7", "3", "0"]  # top to bottom
    assert check.passed, check.reason
    assert check.steps["spearman"].iloc[-1] < check.steps["spearman"].iloc[0] - 0.3
    assert check.steps["ssim"].iloc[-1] < check.steps["ssim"].iloc[0]
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k]), k


def test_randomisation_check_accepts_blocks_and_modules():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    check = randomisation_check(model, torch.rand(1, 3, 8, 8), target=0, method="grad_cam", layer="0.2",
                                layers=["2", model[0]])
    assert list(check.steps["layer"]) == ["2", "0"]  # a block re-initialised whole, in one step
    assert set(check.steps.columns) == {"step", "layer", "spearman", "spearman_signed", "ssim"}


class WeightBlind(nn.Module):
    """A model whose gradient ignores its weights: d/dx (|x|^2 + 0 * w.x) = 2x."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x):
        return (x**2).sum(1) + 0 * self.lin(x)[:, 0]


def test_randomisation_check_reports_a_failing_method():
    x = torch.rand(3, 8)
    check = randomisation_check(WeightBlind(), x, method="gradient", abs=False)
    assert not check.passed
    assert "barely depends" in check.reason
    assert check.steps["spearman"].iloc[-1] == pytest.approx(1.0)


def test_ssim_identity_and_noise():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((20, 20))) < 0.3


def test_deletion_below_insertion_for_known_relevant_region():
    def region_score(t):
        return t[:, :, :6, :6].mean(dim=(1, 2, 3))

    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) + 0.5
    truth = np.zeros((3, 16, 16))
    truth[:, :6, :6] = 1.0
    result = faithfulness(region_score, x, truth, steps=16, n_random=3)
    assert result.deletion_auc < result.insertion_auc
    assert result.passed, result.reason
    assert result.deletion_curve.shape == (3, 17)
    # an inverted map is caught
    bad = faithfulness(region_score, x, -truth, steps=16, n_random=3)
    assert not bad.passed and "no better than random" in bad.reason
