"""The autopsy sequence in one call (autopsy.examine) on a tiny convolutional model."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from autopsy import saliency
from autopsy.examine import examine, region_shares


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def peak(out):
    return out.flatten(1).amax(1)


def halves(shape=(12, 12)):
    left = np.zeros(shape, bool)
    left[:, : shape[1] // 2] = True
    return {"left": left, "right": ~left}


def test_the_whole_sequence_gives_json_safe_metrics_and_tables(model, images):
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 10)
    features = rng.normal(size=(20, 3)) + (labels == "a")[:, None] * 3.0  # decodable
    found = examine(model, images, target=peak, layer="2", window=4, steps=4, regions=[halves(), halves()],
                    faithfulness_steps=2, objectives={"channel 0": "0:0"}, featviz_size=16, featviz_steps=2,
                    probes={"conv": (features, labels)}, probe_cv=2, seed=3)
    assert set(found.maps) == {"integrated_gradients", "grad_cam", "occlusion"}
    assert found.maps["integrated_gradients"].shape == (2, 3, 12, 12) and found.maps["grad_cam"].shape == (2, 1, 12, 12)
    for per_input in found.shares:
        for shares in per_input.values():
            assert shares["left"] + shares["right"] == pytest.approx(1.0)
    assert found.renders["channel 0"].shape == (16, 16, 3)
    metrics = found.metrics()
    json.dumps(metrics)  # plain data: no Estimate objects, no NaN surprises
    assert metrics["randomisation_check"]["n_layers"] == 2  # both convolutions, output side first
    assert set(metrics["faithfulness"]) >= {"deletion_auc", "insertion_auc", "passed", "reason"}
    probe = metrics["probe"]["conv"]
    assert probe["cv"] == 2 and probe["n_classes"] == 2 and probe["accuracy"]["value"] > 0.9
    tables = found.tables(items=[{"photo": "p0"}, {"photo": "p1"}], probe_column="layer")
    assert [r["photo"] for r in tables["attribution_shares"]] == ["p0"] * 3 + ["p1"] * 3
    assert tables["probe"][0]["layer"] == "conv" and len(tables["randomisation_steps"]) == 2
    with pytest.raises(ValueError, match="items describe 1 inputs but 2"):
        found.tables(items=[{"photo": "p0"}])


def test_one_target_per_input_equals_attributing_each_alone(model, images):
    corner = [lambda out: out[:, 0, :4, :4].mean((1, 2)), lambda out: out[:, 0, -4:, -4:].mean((1, 2))]
    found = examine(model, images, target=corner, methods=("integrated_gradients",), steps=4,
                    randomisation=False, faithfulness_steps=0)
    for k, target in enumerate(corner):
        alone = saliency.attribute(model, images[k:k + 1], target=target, method="integrated_gradients", n_steps=4,
                                   internal_batch_size=4)
        assert np.allclose(found.maps["integrated_gradients"][k], alone[0])
    with pytest.raises(ValueError, match="one callable per input; got 2 target"):
        examine(model, images[:1], target=corner, methods=("integrated_gradients",))


def test_every_part_can_be_skipped(model):
    found = examine(model, None)
    assert found.maps == {} and found.randomisation is None and found.renders == {} and found.probes == {}
    assert found.metrics() == {} and found.tables() == {}


def test_a_probe_without_two_items_per_class_is_skipped_with_its_reason(model):
    found = examine(model, None, probes={"tiny": (np.zeros((3, 2)), ["a", "a", "b"])})
    assert found.metrics()["probe"]["tiny"]["skipped"].startswith("skipped: a probe needs")
    assert "'b': 1" in found.tables()["probe"][0]["probe accuracy"]


def test_bad_options_are_named(model, images):
    with pytest.raises(ValueError, match="Grad-CAM needs layer="):
        examine(model, images, target=peak)
    with pytest.raises(ValueError, match="unknown attribution method"):
        examine(model, images, target=peak, methods=("lime",))
    with pytest.raises(ValueError, match="faithfulness_of='integrated_gradients' is not among"):
        examine(model, images, target=peak, methods=("occlusion",), randomisation=False)
    with pytest.raises(ValueError, match="regions are given for 1 inputs but there are 2"):
        examine(model, images, target=peak, methods=("occlusion",), regions=[halves()], randomisation=False,
                faithfulness_steps=0)


def test_region_shares_equal_hand_computed_values():
    attribution = np.zeros((2, 2, 4))
    attribution[0, :, :2] = 1.0  # left half: mass 4 in channel 0
    attribution[1, :, 2:] = -3.0  # right half: |mass| 12 in channel 1
    shares = region_shares(attribution, halves((2, 4)))
    assert shares == {"left": pytest.approx(0.25), "right": pytest.approx(0.75)}
    with pytest.raises(ValueError, match="region 'left' has shape"):
        region_shares(attribution, {"left": np.ones((3, 3), bool)})
