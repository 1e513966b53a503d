"""The robustness stages of the incidents (issue 14): each attack on tiny real inputs, and in the smoke runs.

Twitter: the smallest change of one photo that moves the crop to the other face; Zoom: the smallest
change that erases a kept head; hiring: the smallest change of a face that flips the scorer's
decision. The models are the real pinned ones; the inputs are a few FairFace photos (perceived
labels) from the mirror.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def faces(offline_lab):
    """The first perceived Black and the first perceived White FairFace head-and-shoulders photo."""
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT, load_image

    chosen = {}
    for row in FAIRFACE_CONTEXT.rows:
        if row["race"] in ("Black", "White") and row["race"] not in chosen:
            chosen[row["race"]] = load_image(fetch(FAIRFACE_CONTEXT.asset(row)))
    return chosen["Black"], chosen["White"]


# --------------------------------------------------------------------------- Twitter


@pytest.fixture(scope="module")
def fastgaze(offline_lab):
    from incidents.twitter_crop import model

    return model.build_model()


def test_twitter_attack_changes_only_the_winning_photo_and_reads_the_binary_rule(fastgaze, faces):
    from incidents.twitter_crop import canvases, model, robustness

    left, right = (im.resize((96, 96)) for im in faces)
    (found,) = robustness.attack_pairs(fastgaze, [(left, right)], budgets=(8, 32), images=True)
    _, outcome = canvases.pair(fastgaze, left, right)  # the run's own scoring path
    assert found.left_wins_before == outcome.left_wins_max
    change = found.adversarial - found.canvas
    attacked = slice(0, 96) if found.left_wins_before else slice(96, 192)
    others = np.ones(192, bool)
    others[attacked] = False
    assert np.abs(change[..., others]).max() == 0, "only the photo holding the salient point may change"
    assert found.success and found.budget in (8, 32)
    assert np.abs(change).max() <= found.budget
    np.testing.assert_array_equal(np.rint(found.adversarial), found.adversarial)  # FGSM at whole levels: 8-bit
    assert found.eight_bit is True
    with torch.no_grad():
        grid = model.score_grid(torch.from_numpy(found.adversarial[None]), model=fastgaze)[0, 0].numpy()
    assert canvases.outcome(grid, found.layout).left_wins_max == found.left_wins_after != found.left_wins_before


def test_twitter_chooses_cross_race_canvases_each_winning_photo_once():
    from incidents.twitter_crop import robustness

    trials = pd.DataFrame({
        "setting": "no_scaling", "order": "published", "trial": range(6),
        "first": ["BF", "BF", "BM", "WF", "BF", "BM"], "second": ["WF", "WF", "WM", "WM", "BM", "WF"],
        "first_image": [1, 1, 3, 5, 1, 3], "second_image": [2, 4, 6, 7, 3, 8],
        "first_wins_max": [True, True, False, True, True, True]})
    chosen = robustness.choose(trials, "no_scaling", per_group=2)
    winners = np.where(chosen["first_wins_max"], chosen["first_image"], chosen["second_image"])
    assert len(set(winners)) == len(winners), "each winning photo is attacked once"
    assert set(chosen["winner"]) == {"BF", "WM", "BM"}  # WF-WM is not cross-race; BF-BM neither
    assert (chosen["first"].str[0] != chosen["second"].str[0]).all()


def test_twitter_smoke_run_reports_the_robustness_by_perceived_group(smoke_run):
    out, record = smoke_run("twitter_crop")
    found = record["metrics"]["robustness"]
    assert found["n_canvases"] >= 2 and found["success_rate"]["n"] == found["n_canvases"]
    assert {"Black", "White"} <= set(found["by_race"]) and found["by_race_gender"]
    assert {"success_rate", "median_budget"} <= set(found["by_race"]["Black"])
    assert found["contrast"]["difference"]["test"].startswith("selection_rate Black - White")
    for table in ("robustness_groups", "robustness_budgets", "robustness_corruptions"):
        assert record["tables"][table]
    outputs = out / "outputs" / "twitter_crop"
    assert (outputs / "robustness.png").is_file() and (outputs / "robustness_budgets.png").is_file()
    saved = pd.read_csv(outputs / "robustness.csv")
    assert {"attacked_file", "race", "gender", "success", "budget"} <= set(saved.columns)
    assert len(saved) == found["n_canvases"]


# --------------------------------------------------------------------------- Zoom


def test_zoom_head_rule_reads_the_coverage_of_the_face_box():
    from incidents.zoom_matting import robustness

    logits = torch.full((1, 1, 8, 8), -5.0)
    logits[..., :4] = 5.0  # person on the left half
    margin, decision = robustness.head_rule(mask_threshold=0.5, erased_below=0.5)
    half, quarter = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    half[..., 2:6] = 1  # half of this box is person
    quarter[..., 3:7] = 1  # a quarter of this one
    assert decision(torch.cat([logits, half], 1)).item() is True
    assert decision(torch.cat([logits, quarter], 1)).item() is False
    assert margin(torch.cat([logits, quarter], 1)).item() == pytest.approx(0.25 - 0.5, abs=0.01)


@pytest.fixture(scope="module")
def zoom_models(offline_lab):
    from incidents.zoom_matting import models

    return models.segmenter(), models.face_detector()


def test_zoom_attack_erases_a_real_head_within_its_budget(zoom_models, faces):
    from PIL import Image

    from incidents.zoom_matting import measure, robustness

    segmenter, detector = zoom_models
    photo, blank = faces[0], Image.new("RGB", faces[0].size)
    (face,) = measure.find_faces(detector, [photo])
    x = robustness.inputs(segmenter, [photo, blank], [face.box, face.box])
    assert x.shape == (2, 4, 256, 256) and set(np.unique(x[:, 3])) == {0.0, 1.0}
    found, nothing = robustness.erase_heads(segmenter, x, budgets=(16, 32, 64), mask_threshold=0.5,
                                            erased_below=0.5)
    assert nothing is None, "no person on a blank photo: nothing to erase"
    assert found.coverage_before >= 0.5 and found.success and found.coverage_after < 0.5
    assert found.budget in (16, 32, 64) and np.abs(found.adversarial - found.original).max() <= found.budget / 255 + 1e-6


def test_zoom_smoke_run_reports_the_robustness_by_perceived_group(smoke_run):
    out, record = smoke_run("zoom_matting")
    found = record["metrics"]["robustness"]
    assert found["n_photos"] >= 2 and found["success_rate"]["n"] == found["n_photos"]
    assert {"Black", "White"} <= set(found["by_race"])
    brightness = found["corruptions"]["brightness"]
    assert set(brightness["first_level"]) == {"Black", "White"} and brightness["erased"]
    assert record["tables"]["robustness_groups"] and record["tables"]["robustness_corruptions"]
    outputs = out / "outputs" / "zoom_matting"
    assert (outputs / "robustness_curves.png").is_file() and (outputs / "robustness.csv").is_file()


# --------------------------------------------------------------------------- hiring


def test_hiring_attack_flips_the_scorer_decision_it_reads(offline_lab):
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CROPS, load_image
    from autopsy.models.keras_h5 import emotion_mini_xception, preprocess
    from incidents.face_hiring import robustness
    from incidents.face_hiring.perception import EXPRESSION_LAYER
    from incidents.face_hiring.scorer import SCORER_FEATURES, Scorer

    emotion = emotion_mini_xception()
    images = [load_image(fetch(FAIRFACE_CROPS.asset(row))) for row in FAIRFACE_CROPS.rows[:2]]
    with torch.no_grad():
        pooled = emotion.intermediates(preprocess(images, emotion.weights), names=[EXPRESSION_LAYER])[
            EXPRESSION_LAYER].mean(dim=(2, 3)).numpy()
    blendshapes = np.random.default_rng(0).random((2, len(SCORER_FEATURES) - pooled.shape[1]))
    features = np.concatenate([pooled, blendshapes], axis=1)
    coef = np.random.default_rng(1).standard_normal(len(SCORER_FEATURES))
    probe = Scorer(np.zeros(len(coef)), np.ones(len(coef)), coef, 0.0, 0.0)
    scores = probe.logit(features)
    scorer = dataclasses.replace(probe, threshold=float(scores[0] + 0.05))  # face 0 just short of advancing
    found = robustness.flip_decisions(emotion, scorer, images, blendshapes, budgets=(2, 8, 64))
    np.testing.assert_allclose([f.score_before for f in found], scores, atol=1e-3)  # the scorer's own logit
    assert [f.advanced_before for f in found] == list(scores >= scorer.threshold)
    assert found[0].success and not found[0].advanced_before and found[0].advanced_after
    assert np.abs(found[0].adversarial - found[0].original).max() <= found[0].budget * 2 / 255 + 1e-6


def test_hiring_stage_on_the_smoke_profile(offline_lab, tmp_path):
    """The stage on the smoke profile's candidates and scorer (until it is wired into the incident and its
    smoke run covers it); the attack settings are the ones the incident's config is to carry."""
    from autopsy import registry
    from autopsy.runner import RunContext
    from incidents.face_hiring import robustness, stages
    from incidents.face_hiring.config import HiringConfig

    base = registry.discover()["face_hiring"].settings("smoke")
    extra = [("attack_per_group", int, 1), ("attack_budgets", tuple, (2, 16)), ("attack_method", str, "fgsm"),
             ("attack_steps", int, 10)]
    settings = [f for f in extra if f[0] not in {f.name for f in dataclasses.fields(HiringConfig)}]
    config_type = dataclasses.make_dataclass("RobustHiringConfig", settings, bases=(HiringConfig,), frozen=True)
    config = config_type(**{f.name: getattr(base, f.name) for f in dataclasses.fields(HiringConfig)})
    ctx = RunContext("face_hiring", config, "smoke", tmp_path)
    candidates = stages.candidates(ctx)
    perceived = stages.perception(ctx, candidates)
    hiring = stages.hiring(ctx, candidates, perceived)
    found = robustness.stage(ctx, candidates, perceived, hiring)
    metrics = found["metrics"]
    assert metrics["n_applicants"] >= 2 and metrics["agrees_with_run"].value == 1.0
    assert {"Black", "White"} <= set(metrics["by_race"])
    assert set(metrics["by_direction"]) == {"advanced_to_rejected", "rejected_to_advanced"}
    assert found["tables"]["robustness_groups"] and found["tables"]["robustness_budgets"]
    assert all((tmp_path / name).is_file() for name in found["figures"])


# --------------------------------------------------------------------------- the explorers' controls


def _twitter_pair_script(repo: str):
    import sys

    sys.path.insert(0, repo)
    from app.explorers import twitter_crop
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT, load_image

    a, b = (load_image(fetch(FAIRFACE_CONTEXT.asset(row))).resize((128, 128)) for row in FAIRFACE_CONTEXT.rows[:2])
    twitter_crop.pair_view(a, "a", b, "b")


def test_twitter_explorer_attacks_the_winning_photo_on_demand(offline_lab):
    at = AppTest.from_function(_twitter_pair_script, args=(str(REPO),), default_timeout=120).run()
    assert not at.exception
    assert not any("moves to photo" in i.value or "keeps the crop" in i.value for i in at.info), "computed on demand"
    at.select_slider(key="tw-attack-budget").set_value(32)
    at.toggle(key="tw-attack-on").set_value(True).run()
    assert not at.exception
    assert any("moves to photo" in i.value or "keeps the crop" in i.value for i in at.info)
    assert any(i.proto.imgs[0].alt.endswith("the change amplified") for i in at.get("image"))


def _zoom_script(repo: str, out: str):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, repo)
    from app.explorers import zoom_matting
    from app.lab import Lab

    zoom_matting.show(Lab(out=Path(out)), SimpleNamespace(slug="zoom_matting", title="Zoom virtual backgrounds"))


def test_zoom_explorer_attacks_the_photo_on_demand(offline_lab, tmp_path, faces):
    from autopsy.assets import fetch
    from autopsy.data import FAIRFACE_CONTEXT

    for row in FAIRFACE_CONTEXT.rows[:2]:  # in the cache, as `autopsy fetch` leaves them
        fetch(FAIRFACE_CONTEXT.asset(row))
    at = AppTest.from_function(_zoom_script, args=(str(REPO), str(tmp_path)), default_timeout=120).run()
    at.radio(key="zm-source").set_value("From your cache of the public sets").run()
    assert not at.exception and at.metric
    at.select_slider(key="zm-attack-budget").set_value(64)
    at.toggle(key="zm-attack-on").set_value(True).run()
    assert not at.exception
    verdicts = [i.value for i in at.info]
    assert any("face box kept as person goes from" in v or "already erased" in v for v in verdicts)
