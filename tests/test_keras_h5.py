"""The Keras HDF5 reader and the mini-Xception ports: parity with Keras on real faces, pins, errors.

Reference: Keras 3 (``pip install keras``) with the torch backend loading the same HDF5 files.
Keras is an independent reading of the file (its legacy-H5 loader, weight order, layer semantics)
that needs no TensorFlow; only its primitive kernels come from torch. Tolerances: class
probabilities 1e-5 absolute, pre-softmax scores 1e-5 relative to their largest magnitude. Measured
on 28 FairFace crops (every 100th): 7.5e-7 on probabilities, 5.7e-6 on scores reaching 14.9.
"""

import json
import os

import h5py
import numpy as np
import pytest
import torch

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CROPS, load_image
from autopsy.models import keras_h5 as k

PINS = {"emotion": (k.FER2013_EMOTION, k.emotion_mini_xception), "gender": (k.IMDB_GENDER, k.gender_mini_xception)}
FACE_ROWS = range(0, 2800, 200)  # 14 crops across the manifest


@pytest.fixture(scope="module")
def faces():
    return [load_image(fetch(FAIRFACE_CROPS.asset(FAIRFACE_CROPS.rows[n]))) for n in FACE_ROWS]


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        pytest.skip("the parity reference is Keras 3 on a non-TensorFlow backend; KERAS_BACKEND=tensorflow is set")
    return pytest.importorskip("keras", reason="Keras 3 (the parity reference) is not installed: pip install keras")


def test_pins_match_the_mirror(mirror):
    sums = dict(line.split()[::-1] for line in (mirror / "SHA256SUMS").read_text().splitlines() if line.strip())
    for pin in (k.FER2013_EMOTION, k.IMDB_GENDER):
        asset = pin.asset
        assert asset.url.startswith("https://raw.githubusercontent.com/oarriaga/face_classification/"
                                    "b861d21b0e76ca5514cdeb5b56a689b7318584f4/trained_models/")
        assert sums[f"./{asset.mirror_path}"] == asset.sha256
        assert (mirror / asset.mirror_path).stat().st_size == asset.size
        assert asset.licence == "MIT" and "1710.07557" in asset.citation
        assert pin.transforms["size"] == (64, 64) and pin.transforms["mode"] == "L"
    assert k.FER2013_EMOTION.meta["classes"] == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert k.IMDB_GENDER.meta["classes"] == ("woman", "man")


@pytest.mark.parametrize("task", sorted(PINS))
def test_file_declares_the_architecture_written_in_code(task):
    pin, _ = PINS[task]
    spec, weights = k.read_keras_h5(fetch(pin.asset))
    # Both files declare a 64x64 grey input (the gender model too).
    assert spec["input_shape"] == [64, 64, 1]
    declared = k.mini_xception_spec(len(pin.meta["classes"]))
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert by_name == {layer["name"]: layer for layer in declared["layers"]}
    state = k.KerasModule(declared).layers.state_dict()
    assert set(weights) == {key for key in state if not key.endswith("num_batches_tracked")}


@pytest.mark.parametrize("task", sorted(PINS))
def test_parity_with_keras_on_real_faces(task, faces, keras):
    pin, build = PINS[task]
    model = build(weights=pin)
    x = k.preprocess(faces, pin)
    reference = keras.models.load_model(str(fetch(pin.asset)), compile=False)
    scores_model = keras.Model(reference.inputs, reference.get_layer("global_average_pooling2d_1").output)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    ref_probs = np.asarray(reference.predict(nhwc, verbose=0))
    ref_scores = np.asarray(scores_model.predict(nhwc, verbose=0))
    with torch.no_grad():
        probs, scores = model(x).numpy(), model.logits(x).numpy()
    assert probs.shape == (len(faces), len(pin.meta["classes"]))
    assert np.abs(probs - ref_probs).max() <= 1e-5
    assert np.abs(scores - ref_scores).max() <= 1e-5 * max(1.0, np.abs(ref_scores).max())
    np.testing.assert_array_equal(probs.argmax(1), ref_probs.argmax(1))


def test_random_init_reads_no_file(monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("weights=None must not read a file")

    monkeypatch.setattr("autopsy.contract.fetch", no_fetch)
    emotion, gender = k.emotion_mini_xception(weights=None), k.gender_mini_xception(weights=None)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert emotion(x).shape == (3, 7) and gender(x).shape == (3, 2)
        torch.testing.assert_close(emotion(x).sum(1), torch.ones(3))
    # The published model: about 60,000 parameters (Arriaga et al. 2017); Keras counts 56,951 trainable.
    assert sum(p.numel() for p in emotion.parameters()) == 56951
    assert emotion.weights is None and emotion.classes[3] == "happy"


def test_builders_refuse_weights_for_another_task():
    with pytest.raises(ValueError, match="not for a 7-class mini-Xception"):
        k.emotion_mini_xception(weights=k.IMDB_GENDER)
    with pytest.raises(TypeError, match="pinned Weights"):
        k.gender_mini_xception(weights="imdb")


def test_gradients_reach_the_input_and_the_weights():
    model = k.emotion_mini_xception(weights=k.FER2013_EMOTION)
    x = (torch.rand(2, 1, 64, 64) * 2 - 1).requires_grad_()
    model.logits(x)[:, 3].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    conv = model.layers["conv2d_1"]
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.grad.abs().sum() > 0


def test_named_layers_and_intermediates():
    model = k.gender_mini_xception(weights=None)
    assert isinstance(model.layers["separable_conv2d_8"].depthwise, torch.nn.Conv2d)
    x = torch.rand(1, 1, 64, 64)
    out = model.intermediates(x, names=["add_4", "predictions"])
    assert out["add_4"].shape == (1, 128, 4, 4)
    torch.testing.assert_close(out["predictions"], model(x))
    with pytest.raises(KeyError, match="no layer named"):
        model.intermediates(x, names=["dense_1"])
    with pytest.raises(ValueError, match=r"does not match the model's \(N, 1, 64, 64\)"):
        model(torch.rand(1, 3, 64, 64))


def test_preprocess_follows_the_authors_pipeline():
    from PIL import Image

    grey = Image.new("RGB", (100, 80), (255, 0, 0))  # pure red: luma 299/1000 * 255 = 76.2 -> 76
    x = k.preprocess([grey, np.zeros((30, 30, 3), np.uint8)])
    assert x.shape == (2, 1, 64, 64)
    torch.testing.assert_close(x[0], torch.full((1, 64, 64), (76 / 255 - 0.5) * 2))
    torch.testing.assert_close(x[1], torch.full((1, 64, 64), -1.0))
    with pytest.raises(ValueError, match="no images"):
        k.preprocess([])


def _write_h5(path, layers, **attrs):
    config = {"class_name": "Model", "config": {"name": "m", "layers": layers, "input_layers": [["input_1", 0, 0]],
                                                "output_layers": [[layers[-1]["name"], 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config).encode()
        f.create_group("model_weights")
        for key, value in attrs.items():
            f.attrs[key] = value


def test_unsupported_and_broken_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(k.KerasConversionError, match="garbage.hdf5: not a readable HDF5 file"):
        k.load_keras_h5(garbage)
    weights_only = tmp_path / "weights_only.h5"
    with h5py.File(weights_only, "w") as f:
        f.create_group("conv2d_1")
    with pytest.raises(k.KerasConversionError, match="has no model_config"):
        k.read_keras_h5(weights_only)
    dense = tmp_path / "dense.h5"
    _write_h5(dense, [
        {"class_name": "InputLayer", "name": "input_1", "config": {"name": "input_1", "batch_input_shape": [None, 4]},
         "inbound_nodes": []},
        {"class_name": "Dense", "name": "dense_1", "config": {"name": "dense_1", "units": 2},
         "inbound_nodes": [[["input_1", 0, 0, {}]]]},
    ])
    with pytest.raises(k.KerasConversionError, match=r"layer 'dense_1' is a Dense, which the Keras reader does not"):
        k.read_keras_h5(dense)


def test_a_file_with_another_architecture_is_refused(tmp_path):
    """A file whose layers differ from the declared mini-Xception is named, not loaded."""
    source = fetch(k.FER2013_EMOTION.asset)
    changed = tmp_path / "changed.hdf5"
    changed.write_bytes(source.read_bytes())
    with h5py.File(changed, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["name"] == "max_pooling2d_2":
                layer["config"]["pool_size"] = [2, 2]
        f.attrs["model_config"] = json.dumps(config).encode()
    spec, weights = k.read_keras_h5(changed)
    with pytest.raises(k.KerasConversionError, match="layer 'max_pooling2d_2'"):
        k._check_same_architecture(spec, k.mini_xception_spec(7), "changed")
