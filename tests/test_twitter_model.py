"""The fastgaze port: building, loading, shapes, gradients, saliency maps and Twitter's crop."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image, load_image_set
from autopsy.models.vxm import read_vxm
from incidents.twitter_crop import model as fg

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "twitter_preprocessing.json"


@pytest.fixture(scope="module")
def net(mirror):
    return fg.build_model("fastgaze")


def test_pin():
    assert fg.FASTGAZE.url.startswith("https://raw.githubusercontent.com/twitter-research/image-crop-analysis/")
    assert "d66ad3bb3881fdbd12a27e04c3e57cc8fd772dd1" in fg.FASTGAZE.url
    assert fg.FASTGAZE.licence == "Apache-2.0" and fg.FASTGAZE.size == 489616


def test_random_init_needs_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPSY_MIRROR", str(tmp_path))  # an empty mirror: any fetch would fail
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    model = fg.build_model(None)
    assert len(model.specs) == 19
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 4, 6)
    with pytest.raises(ValueError, match="unknown weights"):
        fg.build_model("deepgaze")


def test_loaded_weights_equal_file(net):
    entries = read_vxm(fetch(fg.FASTGAZE))
    state = net.state_dict()
    for i, spec in enumerate(fg.FASTGAZE_LAYERS):
        if spec.type == 0:
            assert torch.equal(state[f"layers.conv{i}.weight"], torch.from_numpy(entries[f"{i}w"]))
            assert torch.equal(state[f"layers.conv{i}.bias"], torch.from_numpy(entries[f"{i}b"]))


@pytest.mark.parametrize("h,w", [(256, 256), (256, 384), (100, 70)])
def test_output_shape(net, h, w):
    with torch.no_grad():
        assert net(torch.zeros(2, 3, h, w)).shape == (2, 1, h // 16, w // 16)


def test_gradients_reach_the_input(net):
    rgb = torch.rand(1, 3, 64, 64, requires_grad=True)
    net(fg.to_network_input(rgb * 255)).amax().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0


def test_preprocess_convention():
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    x = fg.preprocess(image)
    assert x.shape == (1, 3, 30, 40) and x.dtype == torch.float32
    # channel 0 is blue minus the blue mean
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([50 - 103.939, 100 - 116.779, 200 - 123.68]))
    resized = fg.preprocess(image, side=fg.WORKING_SIDE)
    assert resized.shape[-2] == fg.WORKING_SIDE and resized.shape[-1] % 16 == 0
    assert fg.working_size(300, 600, side=192) == (192, 384)
    assert np.allclose(fg.deprocess(x[0])[0, 0], np.array([200, 100, 50]) / 255, atol=1e-6)


def test_saliency_map_is_image_sized(net):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (123, 201, 3), dtype=np.uint8))
    heat = fg.saliency_map(image, model=net)
    assert heat.shape == (123, 201) and heat.dtype == np.float32
    with_prior = fg.saliency_map(image, model=net, centre_prior=True)
    assert with_prior.shape == heat.shape and not np.allclose(with_prior, heat)
    x, y = fg.salient_point(heat)
    assert heat[y, x] == heat.max()


def test_preprocessing_matches_recorded_measurement():
    if not RESULTS.is_file():
        pytest.skip("run benchmarks/twitter_preprocessing.py to record the measurement")
    winner = json.loads(RESULTS.read_text())["winner"]
    assert winner["normalisation"] == "bgr_minus_bgr_mean"
    assert winner["side"] == fg.WORKING_SIDE


def test_saliency_lands_on_faces(net):
    """Behavioural check of the chosen preprocessing on real FairFace head-and-shoulders photos."""
    table = load_image_set(FAIRFACE_CONTEXT, limit_per_group=1)
    hits = 0
    for path in table["path"]:
        image = load_image(path)
        x, y = fg.salient_point(fg.saliency_map(image, model=net))
        w, h = image.size
        half = 1.5 / 3.5 / 2  # the whole-face box of FairFace's padding-1.25 crops
        hits += abs(x / w - 0.5) <= half and abs(y / h - 0.5) <= half
    assert hits >= 0.7 * len(table), f"only {hits} of {len(table)} maxima on the face"


# -- crop ------------------------------------------------------------------------------------


def _check_box(size, point, ratio, box):
    width, height = size
    left, top, w, h = box
    assert 0 <= left and 0 <= top and left + w <= width and top + h <= height
    assert w == width or h == height  # only one axis is squeezed
    assert abs(h / w - ratio) <= max(1 / w, 1 / h) * max(ratio, 1) + 1e-9 or (w, h) == (width, height)
    x, y = point
    if h < height:  # rows picked around y: centred unless clamped at an edge
        assert top <= y < top + h
        if 0 < top < height - h:
            assert abs(top + h / 2 - y) <= 1
    if w < width:
        assert left <= x < left + w
        if 0 < left < width - w:
            assert abs(left + w / 2 - x) <= 1


@pytest.mark.parametrize("ratio", fg.ASPECT_RATIOS)
@pytest.mark.parametrize("size", [(1000, 600), (600, 1000), (512, 512), (17, 900)])
@pytest.mark.parametrize("where", ["centre", "top_left", "bottom_right"])
def test_crop_boxes(size, ratio, where):
    width, height = size
    point = {"centre": (width // 2, height // 2), "top_left": (0, 0), "bottom_right": (width - 1, height - 1)}[where]
    box = fg.crop(size, point, ratio)
    _check_box(size, point, ratio, box)
    if where == "top_left":
        assert box[:2] == (0, 0)
    if where == "bottom_right":
        assert box[0] + box[2] == width and box[1] + box[3] == height


def test_crop_examples():
    # landscape crop of a portrait photo: full width, a band centred on y
    assert fg.crop((600, 1000), (300, 400), 0.56) == (0, 400 - 168, 600, 336)
    # square crop of a landscape photo: full height, centred on x, clamped at the right edge
    assert fg.crop((1000, 600), (950, 300), 1.0) == (400, 0, 600, 600)
    # ratio equal to the image's: the whole image
    assert fg.crop((800, 400), (10, 10), 0.5) == (0, 0, 800, 400)
    # extreme ratios stay inside the image with at least one pixel
    assert fg.crop((800, 400), (400, 200), 1e-6) == (0, 200, 800, 1)
    assert fg.crop((800, 400), (400, 200), 1e6) == (400, 0, 1, 400)


def test_crop_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        fg.crop((100, 100), (100, 5), 1.0)
    with pytest.raises(ValueError, match="aspect_ratio"):
        fg.crop((100, 100), (5, 5), 0)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        fg.salient_point(np.zeros(5))
