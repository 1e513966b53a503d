import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from autopsy.figures import OKABE_ITO, group_colours, image_grid, plot_estimates, saliency_overlay
from autopsy.stats import Estimate

OKABE_ITO_OFFICIAL = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999", "#000000"}


def _has_errorbars(ax):
    return any(isinstance(c, ErrorbarContainer) for c in ax.containers)


def test_bar_estimates_start_at_zero_with_error_bars():
    df = pd.DataFrame({"group": ["a", "b"], "value": [0.62, 0.71], "low": [0.55, 0.66], "high": [0.69, 0.76],
                       "warning": [None, "n=12 < 30"]})
    fig = plot_estimates(df, reference=0.5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] <= 0 and _has_errorbars(ax)
    bars = [p for p in ax.patches]
    assert [b.get_hatch() for b in bars] == [None, "//"]  # the small group is marked
    colours = {"#%02X%02X%02X" % tuple(int(round(c * 255)) for c in b.get_facecolor()[:3]) for b in bars}
    assert colours <= OKABE_ITO_OFFICIAL
    fig.savefig(io.BytesIO(), format="png")  # renders on Agg without touching disk


def test_point_estimates_from_records_and_dicts():
    records = {"white - black": Estimate(0.08, 0.02, 0.14, 400, "bootstrap"),
               "male - female": Estimate(-0.01, -0.06, 0.04, 400, "bootstrap")}
    fig = plot_estimates(records, kind="point", reference=0.0)
    assert _has_errorbars(fig.axes[0])
    fig2 = plot_estimates([e.to_dict() for e in records.values()], kind="bar")
    low, high = fig2.axes[0].get_ylim()
    assert low <= -0.06 and high >= 0.14


def test_intersectional_labels_and_missing_interval():
    df = pd.DataFrame({"race": ["x", "y"], "gender": ["f", "m"], "value": [1, 2], "low": [0, 1], "high": [2, 3]})
    fig = plot_estimates(df, label=["race", "gender"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["x × f", "y × m"]
    with pytest.raises(ValueError, match="interval"):
        plot_estimates(pd.DataFrame({"group": ["a"], "value": [1.0]}))


def test_palette_is_okabe_ito_and_never_red_green():
    assert set(OKABE_ITO) <= OKABE_ITO_OFFICIAL
    assert "#FF0000" not in OKABE_ITO and "#00FF00" not in OKABE_ITO
    assert group_colours(["a", "b"]) == {"a": OKABE_ITO[0], "b": OKABE_ITO[1]}


def test_saliency_overlay_has_colour_bar_and_point():
    img = np.random.default_rng(0).random((32, 48, 3))
    fig = saliency_overlay(img, np.random.default_rng(1).random((8, 12)), alpha=0.4, point=(10, 20))
    assert len(fig.axes) == 2  # image + colour bar
    assert fig.axes[0].images[1].get_cmap().name == "cividis"
    assert fig.axes[0].images[1].get_extent() == [0, 48, 32, 0]
    fig.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match="2-D"):
        saliency_overlay(img, np.zeros((2, 3, 4)))


def test_image_grid():
    fig = image_grid([np.zeros((8, 8, 3))] * 5, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 5


def test_estimate_errorbars_and_attribution_grid():
    from autopsy.figures import attribution_grid, estimate_errorbars, new_figure

    ax = new_figure().add_subplot()
    estimate_errorbars(ax, [0, 1], [Estimate(0.5, 0.4, 0.6, 10, "t"), Estimate(np.nan, np.nan, np.nan, 0, "t")], fmt="o")
    assert _has_errorbars(ax)
    maps = {"integrated_gradients": np.random.default_rng(0).random((2, 3, 8, 8)), "grad_cam": np.ones((2, 1, 8, 8))}
    fig = attribution_grid([np.zeros((8, 8, 3))] * 2, maps, captions=["a", "b"], masks=[np.ones((8, 8))] * 2,
                           boxes=[(1, 1, 5, 5)] * 2)
    assert len(fig.axes) == 2 * 4 + 2 * 2  # image, mask, two maps per row; a colour bar per map
    assert fig.axes[2].get_title() == "integrated gradients |attribution|"
    with pytest.raises(ValueError, match="one caption and one map per method"):
        attribution_grid([np.zeros((8, 8, 3))] * 2, maps, captions=["a"])
