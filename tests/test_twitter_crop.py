"""The Twitter incident: exact canvas saliency, the paired protocol's statistics, a small real run."""

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from autopsy import fairness, runner, story
from autopsy.runs import RunPaths
from incidents.twitter_crop import INCIDENT, canvases, data, model, protocol
from incidents.twitter_crop.seam import SeamCanvas


@pytest.fixture(scope="module")
def fastgaze():
    return INCIDENT.build("fastgaze")


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


def _photo(rng, w, h):
    from PIL import Image

    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("left,right", [((448, 448), (448, 448)), ((256, 256), (256, 256)), ((384, 256), (256, 256))])
def test_whole_canvas_resize_is_assembled_exactly_from_per_photo_passes(fastgaze, left, right):
    """The fast path equals the binary's pipeline run on the joined canvas (score_grid), to float tolerance."""
    rng = np.random.default_rng(0)
    photos = {0: _photo(rng, *left), 1: _photo(rng, *left), 2: _photo(rng, *right)}
    scorer = canvases.CanvasScorer(fastgaze, photos)
    layout = scorer.layout(0, 2)
    assert layout.seam is not None and layout.seam % 16 == 0
    fast = scorer.grids([0, 1], [2, 2])
    for got, a in zip(fast, (0, 1)):
        with torch.no_grad():
            full = model.score_grid(canvases.to_tensor(canvases.join(photos[a], photos[2])), model=fastgaze)[0, 0]
        np.testing.assert_allclose(got, full.numpy(), atol=2e-4, rtol=1e-5)


def test_mixed_sizes_run_the_papers_black_canvas_whole(fastgaze):
    rng = np.random.default_rng(0)
    photos = {0: _photo(rng, 80, 64), 1: _photo(rng, 48, 96)}
    scorer = canvases.CanvasScorer(fastgaze, photos)
    assert scorer.layout(0, 1).seam is None  # different heights: no fast path
    (got,) = scorer.grids([0], [1])
    canvas = canvases.join(photos[0], photos[1])
    assert canvas.size == (128, 96) and canvas.getpixel((40, 80)) == (0, 0, 0)
    with torch.no_grad():
        expected = model.score_grid(canvases.to_tensor(canvas), model=fastgaze)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_outcome_reads_the_binary_point_and_three_rules():
    layout = canvases.Layout((160, 160), (160, 160))  # fits 320 x 160: 20 x 10 cells of 16 px, r = 1
    scores = np.zeros((10, 20))
    scores[1, 16] = 5.0  # the single maximum is on the right
    scores[:, :10] += 1.0  # but the left half has more saliency on average
    o = canvases.outcome(scores, layout)
    assert not o.left_wins_max and o.left_wins_mean and o.left_wins_sum
    assert o.point == (16 * 16 + 8, 16 + 8)


def test_the_fast_path_agrees_with_the_binarys_exact_path_on_real_photos(fastgaze, mirror):
    """The exact path (JPEG file, byte-rounded resize) picks the same photo on real FairFace pairs."""
    from autopsy.data import load_image

    files = sorted((mirror / "fairface-context").glob("*.jpg"))[:4]
    photos = {i: load_image(f) for i, f in enumerate(files)}
    scorer = canvases.CanvasScorer(fastgaze, photos)
    for a, b in ((0, 1), (2, 3)):
        (grid,) = scorer.grids([a], [b])
        assert canvases.outcome(grid, scorer.layout(a, b)).left_wins_max == canvases.binary_winner(photos[a], photos[b])[0]


def test_summaries_reproduce_twitters_published_arithmetic():
    rows = []
    for (a, b), wins in protocol.PUBLISHED["no_scaling"]["wins"].items():
        rows.append({"pair": f"{a}–{b}", "published_naive": fairness.preference(wins, 10_000)})
    s = protocol.summaries(rows, setting="no_scaling")
    assert all(v["ours"] == pytest.approx(v["published"]) for v in s.values())
    assert s["female_over_male"]["ours"] == pytest.approx(0.5804, abs=1e-4)
    assert s["black_over_white"]["ours"] == pytest.approx(0.4575, abs=1e-4)
    assert s["white_female_over_black_female"]["ours"] == pytest.approx(0.5664, abs=1e-4)


def test_image_bootstrap_is_wider_than_naive_when_images_repeat():
    # 10 images per group, each image either always wins or always loses: repeats carry no new information
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 10, 2000), rng.integers(100, 110, 2000)
    trials = pd.DataFrame({"first": "BF", "second": "WF", "first_image": first, "second_image": second,
                           "order": "published", "first_wins_max": first < 6})
    (row,) = protocol.pair_table(trials, setting="no_scaling", n_boot=500)
    naive, boot = row["published_naive"], row["published_bootstrap"]
    assert boot.value == pytest.approx(naive.value)
    assert (boot.high - boot.low) > 3 * (naive.high - naive.low)
    assert "pigeonhole" in boot.test and "10 a-items x 10 b-items" in boot.test
    assert row["published"] == pytest.approx(4336 / 10_000)


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
def small_run(smoke_run):
    return smoke_run("twitter_crop")


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
    assert "pigeonhole bootstrap" in page and "perceived" in page


def test_bring_your_own_photos(tmp_path, mirror):
    labels = pd.read_csv(mirror / "fairface-crops/labels.csv")
    chosen = pd.concat([labels[(labels.race == r) & (labels.gender == g)].head(2)
                        for r in ("Black", "White") for g in ("Female", "Male")])
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in chosen["file"]:
        shutil.copy(mirror / "fairface-crops" / name, photos / name)
    chosen[["file", "race", "gender"]].to_csv(tmp_path / "labels.csv", index=False)
    config = INCIDENT.settings("smoke", {"images": str(photos), "labels": str(tmp_path / "labels.csv"),
                                         "limit_per_group": 1})
    record = runner.run(INCIDENT, config, out_root=tmp_path / "out")
    assert record["metrics"]["n_images"] == 8 and record["metrics"]["n_paper_images"] == 4
    assert record["profile"] == "custom" and record["metrics"]["exclusions"]["n_excluded"] == 4
    assert str(photos) not in json.dumps(record)  # the user's local paths stay out of the record


def test_bring_your_own_errors_name_the_problem(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "race"], ["broken.jpg", "Black"]])
    with pytest.raises(ValueError, match="gender"):
        data.load(INCIDENT.settings("smoke", {"images": str(tmp_path / "photos"), "labels": str(tmp_path / "labels.csv")}))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "race", "gender"], ["broken.jpg", "Black", "Male"], ["gone.jpg", "White", "Male"]])
    with pytest.raises(ValueError) as err:
        data.load(INCIDENT.settings("smoke", {"images": str(tmp_path / "photos"), "labels": str(tmp_path / "labels.csv")}))
    assert "broken.jpg" in str(err.value) and "gone.jpg" in str(err.value)


def test_photos_of_any_size_are_scored_at_the_binarys_320_px(fastgaze):
    """Issue 16 item 3: a phone-size photo beside a small one is one pass of a canvas fitted into 320 x 320."""
    rng = np.random.default_rng(1)
    photos = {0: _photo(rng, 3000, 2000), 1: _photo(rng, 64, 48), 2: _photo(rng, 200, 333)}
    scorer = canvases.CanvasScorer(fastgaze, photos)
    grids = scorer.grids([0, 1], [1, 2])
    for grid, (a, b) in zip(grids, ((0, 1), (1, 2))):
        width, height = scorer.layout(a, b).resized
        assert max(width, height) == 320 and grid.shape == (-(-height // 16), -(-width // 16))
