"""Parity with Twitter's own binary: the port's score grids against what ``candidate_crops`` printed.

Ground truth lives in ``../shared/twitter-calibration`` (nothing from it is committed; see its
README): digitised score grids for ``dummy.jpeg`` and two emoji composites, their printed salient
points, and the exact 200-point grid printed for a private 548x1106 image.

The port reaches r >= 0.999 on every grid and the printed salient points, but not the digitising
uncertainty everywhere: a few cells differ by up to 0.16 (dummy) and 0.56 (emoji) and the
dummy's typical difference is 0.02, not 0.0024. ``PINNED`` holds the best reached, so a change
that makes the port worse fails; ``docs/twitter_model.md`` says what is still unexplained.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from incidents.twitter_crop import model as fg

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO.parent / "shared" / "twitter-calibration"

pytestmark = pytest.mark.skipif(
    not (CALIBRATION / "calibration.json").is_file(),
    reason=f"the calibration set is not at {CALIBRATION} (a checkout beside ../shared/twitter-calibration)",
)

# best reached by the binary's reading (benchmarks/results/twitter_calibration.md), with a little room
PINNED = {  # id: (min Pearson r, max |difference|, max median |difference| = the digitising uncertainty)
    "twitter_dummy": (0.9990, 0.16, 0.02),
    "emoji_d_l": (0.9994, 0.48, 0.04),
    "emoji_l_d": (0.9990, 0.57, 0.04),
}


def _calibration() -> dict:
    return json.loads((CALIBRATION / "calibration.json").read_text())


@pytest.fixture(scope="module")
def net(mirror):
    return fg.build_model()


def _cases():
    if not (CALIBRATION / "calibration.json").is_file():
        return []
    return [pytest.param(d, id=d["id"]) for d in _calibration()["digitised"]]


@pytest.mark.parametrize("case", _cases())
def test_score_grid_matches_the_binary(net, case):
    grid = fg.saliency_map(CALIBRATION / case["image"]["file"], model=net)
    printed = np.asarray(case["all_points_xy_score"])
    assert grid.size == tuple(case["image"]["size"])
    assert grid.scores.size == len(printed)
    ours = grid.points()
    np.testing.assert_allclose(ours[:, :2], printed[:, :2], rtol=1e-5, atol=1e-3)  # the grid geometry
    diff = np.abs(ours[:, 2] - printed[:, 2])
    min_r, max_error, median_error = PINNED[case["id"]]
    assert np.corrcoef(ours[:, 2], printed[:, 2])[0, 1] >= min_r
    assert diff.max() <= max_error
    assert np.median(diff) <= median_error
    assert grid.point == tuple(case["salient_point"])
    assert fg.salient_point(grid) == tuple(case["salient_point"])


def test_private_grid_geometry_and_crops():
    """The exact printed output for a 548x1106 image: grid points, argmax rule, int() point, crops."""
    lines = [line.split() for line in _calibration()["exact_without_image"][0]["lines"]]
    point = tuple(int(v) for v in lines[0])
    crops = [tuple(int(v) for v in line) for line in lines[1:] if len(line) == 4]
    printed = np.array([[float(v) for v in line] for line in lines if len(line) == 3])
    size = (548, 1106)
    resized = fg.fit_size(*size)
    assert resized == (159, 320)
    xs, ys, ratio = fg.grid_geometry(size, resized)
    assert (len(ys), len(xs)) == (20, 10)
    scores = printed[:, 2].reshape(len(ys), len(xs)).astype(np.float32)
    grid = fg.SaliencyGrid(scores, xs, ys, size, resized, ratio)
    np.testing.assert_allclose(grid.points()[:, :2], printed[:, :2], rtol=1e-5)  # printed to 6 digits
    assert grid.point == point == (303, 137)
    assert -1 < scores.min() < 0 < scores.max() < 10  # the raw-score range the binary prints
    ratios = (*fg.ASPECT_RATIOS, size[1] / size[0])  # crop_api's default list adds the image's own ratio
    assert [fg.crop(size, point, r) for r in ratios] == crops


@pytest.mark.parametrize("size,fitted", [((1034, 851), (320, 263)), ((1023, 688), (320, 215)),
                                         ((548, 1106), (159, 320)), ((72, 216), (107, 320)),
                                         ((583, 3000), (62, 320)), ((320, 320), (320, 320))])
def test_fit_size(size, fitted):
    assert fg.fit_size(*size) == fitted


@pytest.mark.parametrize("size,points", [((72, 216), 140), ((1536, 512), 140)])
def test_printed_grid_sizes(size, points):
    """Point counts the binary printed elsewhere (calibration.json, grid_rule.verified_on and leads):
    146-line outputs for 72x216 emoji collages (salient point, 5 crops, 140 cells), 140 points for 1536x512."""
    xs, ys, _ = fg.grid_geometry(size, fg.fit_size(*size))
    assert len(xs) * len(ys) == points
