import numpy as np
import pytest
import torch
from torch import nn

from autopsy.featviz import channel, direction, imagenet_normalise, neuron, render


def _no_hooks(model):
    return all(len(m._forward_hooks) == 0 for m in model.modules())


def test_channel_of_resnet18_is_a_finite_image():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).train()
    img = channel(model, "layer1.0.conv1", 3, size=32, steps=4, preprocess=imagenet_normalise)
    assert img.shape == (32, 32, 3) and img.dtype == np.float64
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    assert _no_hooks(model) and model.training  # hooks gone, mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradient leaked into the model


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


def test_optimisation_raises_the_channel_and_is_seeded():
    model = _small_cnn().eval()
    start = render(model, "2:5", size=24, steps=1, lr=1e-9, transforms=None)
    img = channel(model, "2", 5, size=24, steps=40, transforms=None)
    act = lambda im: model(torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None])[0, 5].mean().item()
    rng = np.random.default_rng(0)
    assert act(img) > max(act(start), *(act(rng.random((24, 24, 3))) for _ in range(10)))
    again = channel(model, "2", 5, size=24, steps=40, transforms=None)
    np.testing.assert_array_equal(img, again)


def test_grey_input_model_with_spatial_output_and_lucent_names():
    torch.manual_seed(0)
    # a "saliency model": one grey channel in, one map out
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 1, 3, padding=1)))
    grey = lambda x: x.mean(1, keepdim=True)
    img = channel(model, "output", 0, size=20, steps=3, preprocess=grey)
    assert img.shape == (20, 20, 3) and np.isfinite(img).all()
    img = neuron(model, "2_0", 0, x=3, y=5, size=20, steps=3, preprocess=grey)  # lucent-style name
    assert np.isfinite(img).all()
    with pytest.raises(ValueError, match="produced no activation"):
        channel(model, "nope", 0, size=20, steps=1, preprocess=grey)
    assert _no_hooks(model)


def test_direction_on_conv_and_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    a = direction(model, "0", [1.0, -1.0, 0.0, 0.5], size=16, steps=3)
    b = direction(model, "4", np.array([0.0, 1.0, 0.0]), size=16, steps=3, batch=2)
    assert a.shape == (16, 16, 3) and b.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="3 channels"):
        direction(model, "4", [1.0, 2.0], size=16, steps=1)


def test_render_each_optimises_every_image_for_its_own_objective():
    from autopsy.featviz import render_each

    model = _small_cnn().eval()
    found = render_each(model, {"channel 1": "2:1", "channel 5": "2:5"}, size=24, steps=40, transforms=None)
    assert list(found) == ["channel 1", "channel 5"] and all(im.shape == (24, 24, 3) for im in found.values())
    act = lambda im, c: model(torch.tensor(im, dtype=torch.float32).permute(2, 0, 1)[None])[0, c].mean().item()
    assert act(found["channel 1"], 1) > act(found["channel 5"], 1)  # each image raises its own channel ...
    assert act(found["channel 5"], 5) > act(found["channel 1"], 5)  # ... more than the other image does
    assert render_each(model, {}, size=24, steps=1) == {}
    assert _no_hooks(model)
