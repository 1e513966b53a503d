import numpy as np
import pytest
import torch
from torch import nn

from autopsy.probes import activations, probe


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))


def _no_hooks(model):
    return all(len(m._forward_hooks) == 0 for m in model.modules())


def test_activations_shapes_pooling_and_hooks_removed():
    model = _net().train()
    x = torch.rand(5, 3, 8, 8)
    pooled = activations(model, "2", [x[:3], (x[3:], torch.zeros(2))])
    assert pooled.shape == (5, 6)
    flat = activations(model, model[2], x, pool=None)
    assert flat.shape == (5, 6 * 8 * 8)
    np.testing.assert_allclose(flat.reshape(5, 6, 64).mean(2), pooled, atol=1e-6)
    assert _no_hooks(model)
    assert model.training  # mode restored


def test_hook_removed_when_forward_fails():
    model = _net()
    with pytest.raises(RuntimeError):
        activations(model, "2", torch.rand(2, 5, 8, 8))  # wrong channel count
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="no layer named"):
        activations(model, "conv9", torch.rand(2, 3, 8, 8))


def test_probe_finds_planted_concept_and_control_stays_at_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    features = rng.normal(size=(200, 16))
    features[:, 3] += 2.5 * labels  # the planted concept
    result = probe(features, labels, cv=5, seed=0)
    assert result.accuracy.value > 0.85 and result.accuracy.n == 200
    assert result.accuracy.low < result.accuracy.value < result.accuracy.high
    assert 0.3 < result.control.value < 0.7
    assert result.selectivity.value == pytest.approx(result.accuracy.value - result.control.value)
    assert result.selectivity.low > 0.1
    assert result.majority == 0.5 and result.class_counts == {0: 100, 1: 100}
    assert result.warning is None


def test_probe_without_concept_is_not_selective():
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b"], 60)
    result = probe(rng.normal(size=(120, 8)), labels, cv=4)
    assert result.accuracy.low < 0.5 + 0.15
    assert result.selectivity.low < 0 < result.selectivity.high


def test_probe_warns_and_errors_on_small_classes():
    rng = np.random.default_rng(2)
    labels = np.array([0] * 40 + [1] * 6)
    result = probe(rng.normal(size=(46, 4)), labels, cv=3)
    assert "fewer than 10" in result.warning and "1 (6)" in result.warning
    with pytest.raises(ValueError, match="fewer than cv=5"):
        probe(rng.normal(size=(44, 4)), np.array([0] * 40 + [1] * 4))
    with pytest.raises(ValueError, match="2-D"):
        probe(rng.normal(size=(4, 2, 2)), [0, 1, 0, 1])
