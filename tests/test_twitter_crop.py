"""The Twitter incident: exact canvas saliency, the paired protocol's statistics, a small real run."""

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from autopsy import story
from autopsy.runs import RunPaths
from incidents.twitter_crop import INCIDENT, model, protocol
from incidents.twitter_crop.seam import SeamCanvas

TINY = {"n_trials": 30, "ita_photos_per_group": 1, "ita_levels": [1, 9], "attribution_steps": 2,
        "attribution_examples": 2, "featviz_steps": 2, "featviz_size": 32, "n_bootstrap": 100,
        "featviz_channels": 1}


@pytest.fixture(scope="module")
def fastgaze():
    return model.build_model("fastgaze")


@pytest.mark.parametrize("height,left,right", [(64, 96, 160), (256, 256, 256), (448, 448, 448)])
def test_seam_canvas_equals_a_full_pass(fastgaze, height, left, right):
    seam = SeamCanvas(fastgaze.layers[:-1], fastgaze.layers[-1])
    torch.manual_seed(0)
    a, b = (torch.rand(1, 3, height, w) * 255 - 115 for w in (left, right))
    fast = seam.canvas_maps([seam.image_pass(a)], [seam.image_pass(b)])[0]
    with torch.no_grad():
        full = fastgaze(torch.cat([a, b], dim=-1))[0, 0]
    assert fast.shape == full.shape
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)


def test_seam_canvas_refuses_unaligned_widths(fastgaze):
    seam = SeamCanvas(fastgaze.layers[:-1], fastgaze.layers[-1])
    a, b = seam.image_pass(torch.zeros(1, 3, 64, 72)), seam.image_pass(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="full pass"):
        seam.canvas_maps([a], [b])


def test_mixed_sizes_fall_back_to_the_papers_black_canvas(fastgaze):
    from PIL import Image

    from incidents.twitter_crop.investigate import _canvas_maps

    seam = SeamCanvas(fastgaze.layers[:-1], fastgaze.layers[-1])
    rng = np.random.default_rng(0)
    sized = {0: Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)),
             1: Image.fromarray(rng.integers(0, 255, (96, 48, 3), dtype=np.uint8))}
    cache = {i: seam.image_pass(model.preprocess(im)) for i, im in sized.items()}
    (got,) = _canvas_maps(seam, fastgaze, cache, sized, [0], [1])
    canvas = protocol.join(sized[0], sized[1])
    assert canvas.size == (128, 96) and canvas.getpixel((40, 80)) == (0, 0, 0)
    with torch.no_grad():
        expected = fastgaze(model.preprocess(canvas))[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_outcome_reads_the_three_rules():
    saliency = np.zeros((4, 8))
    saliency[1, 6] = 5.0  # the single maximum is on the right
    saliency[:, :4] += 1.0  # but the left half has more saliency on average
    o = protocol.outcome(saliency, seam_x=64, stride=16)
    assert not o.left_wins_max and o.left_wins_mean and o.left_wins_sum
    assert o.point == (6.5 * 16, 1.5 * 16)


def test_summaries_reproduce_twitters_published_arithmetic():
    rows = []
    for (a, b), wins in protocol.PUBLISHED["no_scaling"]["wins"].items():
        rows.append({"pair": f"{a}–{b}", "published_naive": protocol.naive_rate(wins, 10_000)})
    s = protocol.summaries(rows)
    assert s["female_over_male"]["ours"] == pytest.approx(0.5804, abs=1e-4)
    assert s["black_over_white"]["ours"] == pytest.approx(0.4575, abs=1e-4)
    assert s["white_female_over_black_female"]["ours"] == pytest.approx(0.5664, abs=1e-4)


def test_image_bootstrap_is_wider_than_naive_when_images_repeat():
    # 10 images per group, each image either always wins or always loses: repeats carry no new information
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 10, 2000), rng.integers(100, 110, 2000)
    wins = first < 6
    naive = protocol.naive_rate(int(wins.sum()), len(wins))
    boot = protocol.image_bootstrap_rate(wins, first, second, n_resamples=500)
    assert boot.value == pytest.approx(naive.value)
    assert (boot.high - boot.low) > 3 * (naive.high - naive.low)
    assert boot.warning and "distinct images" in boot.warning


def test_sampled_trials_are_seeded_and_complete():
    members = {"BF": [0, 1, 2], "BM": [3, 4], "WF": [5], "WM": [6, 7]}
    a = protocol.sample_trials(members, protocol.PAPER_PAIRS, 50, seed=42)
    b = protocol.sample_trials(members, protocol.PAPER_PAIRS, 50, seed=42)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 6 * 50 and set(a.loc[a["first"] == "BF", "first_image"]) <= {0, 1, 2}


def test_empty_group_is_a_clear_error():
    with pytest.raises(ValueError, match="a group has no images"):
        protocol.sample_trials({"BF": [0], "BM": []}, [("BF", "BM")], 5)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("twitter-run")
    record = INCIDENT.investigate(out, {"profile": "quick", "limit_per_group": 1, **TINY})
    return out, record


def test_small_run_writes_metrics_with_intervals_beside_published(small_run):
    out, record = small_run
    paths = RunPaths(out, "twitter_crop")
    saved = json.loads(paths.metrics.read_text())
    row = saved["metrics"]["pairs"]["no_scaling"]["BF_WF"]
    for key in ("published_naive", "published_bootstrap", "swapped_naive"):
        assert {"value", "low", "high", "n", "test"} <= set(row[key]) and row[key]["low"] <= row[key]["value"] <= row[key]["high"]
    assert row["published"] == pytest.approx(0.4336)
    assert saved["provenance"][0]["name"] == "fastgaze.vxm" and saved["provenance"][0]["licence"] == "Apache-2.0"
    for figure in ("pairs.png", "crops.png", "argmax.png", "ita.png", "attribution.png", "featviz.png"):
        assert (paths.outputs / figure).stat().st_size > 1000
    trials = pd.read_csv(paths.outputs / "trials.csv")
    assert {"first_file", "second_file", "point_x", "crop_0.56_ltwh"} <= set(trials.columns)


def test_small_run_renders_the_report(small_run, tmp_path):
    out, _ = small_run
    paths = RunPaths(out, "twitter_crop")
    resolved = story.resolve(story.parse(INCIDENT.story), story.load_run(paths.metrics), paths.outputs)
    page = story.render_html(resolved, tmp_path / "report.html").read_text()
    assert "0.434" in page or "43.4" in page  # the published BF–WF rate sits in the table
    assert "bootstrap over images" in page and "perceived" in page


def test_bring_your_own_photos(tmp_path, mirror):
    labels = pd.read_csv(mirror / "fairface-crops/labels.csv")
    chosen = pd.concat([labels[(labels.race == r) & (labels.gender == g)].head(2)
                        for r in ("Black", "White") for g in ("Female", "Male")])
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in chosen["file"]:
        shutil.copy(mirror / "fairface-crops" / name, photos / name)
    chosen[["file", "race", "gender"]].to_csv(tmp_path / "labels.csv", index=False)
    record = INCIDENT.investigate(tmp_path / "out", {"images": str(photos), "labels": str(tmp_path / "labels.csv"),
                                                     "profile": "custom", **TINY})
    assert record["metrics"]["n_images"] == 8


def test_bring_your_own_errors_name_the_problem(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "race"], ["broken.jpg", "Black"]])
    with pytest.raises(ValueError, match="gender"):
        INCIDENT.load_data(images=tmp_path / "photos", labels=tmp_path / "labels.csv")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "race", "gender"], ["broken.jpg", "Black", "Male"], ["gone.jpg", "White", "Male"]])
    with pytest.raises(ValueError) as err:
        INCIDENT.load_data(images=tmp_path / "photos", labels=tmp_path / "labels.csv")
    assert "broken.jpg" in str(err.value) and "gone.jpg" in str(err.value)
