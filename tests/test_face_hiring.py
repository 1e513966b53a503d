"""Face-based hiring: the smoke run through the runner, the simulated labels, the scorer and its
provenance, bring-your-own photos, and the explorer. (The data loaders and the perception features
are tested in test_face_hiring_data.py; the model ports in test_keras_h5.py and test_face_landmarker.py.)"""

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from autopsy import runner, story
from autopsy.runs import RunPaths
from autopsy.trained import weights_sha256
from incidents.face_hiring import INCIDENT, audit, data, failure, scorer, simulate
from incidents.face_hiring.config import CALLBACKS_BLACK, CALLBACKS_WHITE, PROFILES
from incidents.face_hiring.perception import BLENDSHAPE_COLUMNS, EXPRESSION_COLUMNS

REPO = Path(__file__).resolve().parents[1]


def _people(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"race": rng.choice(["Black", "White", "East Asian"], n),
                         "gender": rng.choice(["Female", "Male"], n)})


def _features(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic perception rows: random expression features and blendshapes in [0, 1]."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, len(EXPRESSION_COLUMNS))), columns=list(EXPRESSION_COLUMNS))
    return pd.concat([table, pd.DataFrame(rng.random((n, len(BLENDSHAPE_COLUMNS))), columns=list(BLENDSHAPE_COLUMNS))],
                     axis=1)


# -- the simulated historical decisions ---------------------------------------------------------------


def test_beta_0_gives_no_group_gap_and_beta_1_the_bertrand_mullainathan_ratio():
    n = 20_000
    people, features = _people(n), _features(n)
    history = simulate.simulate(features, people, PROFILES["quick"], seed=1)
    black, white = (people["race"] == "Black").to_numpy(), (people["race"] == "White").to_numpy()
    assert history.expected(0.0).mean() == pytest.approx(PROFILES["quick"].base_rate, abs=1e-9)
    # by construction every group has the same merit, so the same expected rate at beta = 0 ...
    assert history.expected(0.0)[black].mean() / history.expected(0.0)[white].mean() == pytest.approx(1.0, abs=0.03)
    # ... and at beta = 1 the disfavoured group's is Bertrand & Mullainathan's ratio of it
    ratio = CALLBACKS_BLACK / CALLBACKS_WHITE
    assert history.expected(1.0)[black].mean() / history.expected(1.0)[white].mean() == pytest.approx(ratio, abs=0.03)
    assert history.expected(0.5)[black].mean() / history.expected(0.5)[white].mean() == pytest.approx(
        1 - 0.5 * (1 - ratio), abs=0.03)
    decided = {b: history.decisions(b) for b in (0.0, 0.5, 1.0)}
    assert (decided[1.0] <= decided[0.5]).all() and (decided[0.5] <= decided[0.0]).all()  # common random numbers
    assert (decided[1.0][~black] == decided[0.0][~black]).all()  # only the disfavoured group is touched
    assert decided[1.0][black].mean() / decided[1.0][white].mean() == pytest.approx(ratio, abs=0.05)
    # the expression term is standard normal within each race x gender cell
    cell = people["race"] + people["gender"]
    means = pd.Series(history.expression).groupby(cell.to_numpy()).mean()
    assert means.abs().max() < 0.01 and history.expression.std() == pytest.approx(1.0, abs=0.02)


def test_the_simulation_is_seeded_and_its_settings_checked():
    people, features = _people(300), _features(300)
    config = PROFILES["quick"]
    first = simulate.simulate(features, people, config, seed=3)
    assert (first.decisions(1.0) == simulate.simulate(features, people, config, seed=3).decisions(1.0)).all()
    assert not (first.uniform == simulate.simulate(features, people, config, seed=4).uniform).all()
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 3.02\]"):
        config.replace(beta=5.0)
    with pytest.raises(ValueError, match="callback_rates must be"):
        config.replace(callback_rates=(0.05, 0.1))
    with pytest.raises(ValueError, match="expression_share must lie strictly between 0 and 1"):
        config.replace(expression_share=1.5)


# -- the scorer ---------------------------------------------------------------------------------------


def test_the_scorer_is_trained_once_with_its_provenance():
    features = _features(200, seed=2)
    decisions = (features["bs_mouthSmileLeft"] + np.random.default_rng(0).normal(0, 0.3, 200) > 0.5).astype(int)
    first = scorer.train(features, decisions, c=0.1, seed=7, beta=0.5)
    again = scorer.train(features, decisions, c=0.1, seed=7, beta=0.5)
    record = first.provenance
    assert record == again.provenance and record.name == scorer.NAME and record.seed == 7
    assert set(record.data) == {"features", "decisions"} and record.config["beta"] == 0.5
    weights = {"mean": first.mean, "scale": first.scale, "coef": first.coef, "intercept": np.array([first.intercept]),
               "threshold": np.array([first.threshold])}
    assert weights_sha256(weights) == record.weights_sha256
    assert first.decide(features).mean() == pytest.approx(decisions.mean(), abs=0.02)  # advances the history's share
    with pytest.raises(ValueError, match="needs the perception columns"):
        first.logit(features.drop(columns=["bs_jawOpen"]))
    with pytest.raises(ValueError, match="all 1; the scorer needs both outcomes"):
        scorer.fit_weights(features.to_numpy(), np.ones(200, dtype=int), c=0.1)


def test_the_face_scorer_module_is_the_scorer_on_the_face(mirror):
    """The differentiable face -> score path gives the trained scorer's own logit."""
    from autopsy.data import load_image
    from autopsy.models.keras_h5 import preprocess
    from incidents.face_hiring.perception import PerceptionModels, perceive

    from autopsy.assets import fetch

    images = [load_image(fetch(data.FAIRFACE_CROPS.asset(r))) for r in data.FAIRFACE_CROPS.rows[:3]]
    models = PerceptionModels.load()
    table = perceive(models, images, features=True)
    fitted = scorer.Scorer.from_weights(scorer.fit_weights(_features(60).to_numpy(), np.arange(60) % 2, c=0.1))
    for k in range(3):
        module = scorer.FaceScorer(models.emotion, fitted, table.loc[k, list(BLENDSHAPE_COLUMNS)].to_numpy(float))
        with torch.no_grad():
            logit = module(preprocess(images[k], models.emotion.weights))[0, 0].item()
        assert logit == pytest.approx(fitted.logit(table.iloc[[k]])[0], abs=1e-3)


# -- the perception audit and the failure, on planted effects --------------------------------------------


def test_matched_smile_regression_recovers_a_planted_gap():
    rng = np.random.default_rng(0)
    people = _people(3000)
    smile = rng.random(3000)
    planted = 0.08 * (people["race"] == "Black").to_numpy()
    scores = pd.DataFrame({"smile": smile, "negative": 0.6 - 0.5 * smile + planted + rng.normal(0, 0.05, 3000),
                           "happy": smile + rng.normal(0, 0.05, 3000), "angry": rng.random(3000) * 0.1})
    found = audit.matched_smile(scores, people)
    gap = found["negative"]["Black vs White"]
    assert gap.low < 0.08 < gap.high and gap.p_value < 1e-6 and gap.n == 3000
    assert found["happy"]["Black vs White"].low < 0 < found["happy"]["Black vs White"].high


def test_folds_hold_every_cell_and_the_audit_names_the_pairs():
    people = _people(90)
    fold = failure.folds(people, k=2, seed=0)
    counts = pd.crosstab(people["race"] + people["gender"], fold)
    assert (counts[0] - counts[1]).abs().max() <= 1
    decisions = np.r_[np.ones(45, dtype=int), np.zeros(45, dtype=int)]
    found = failure.audit_decisions(decisions, decisions, people, PROFILES["quick"], n_boot=50, seed=0)
    assert "Black / White" in found["race"]["disparate_impact"].ratio.test
    assert "Female / Male" in found["gender"]["disparate_impact"].ratio.test
    assert "Black Female / White Male" in found["race x gender"]["disparate_impact"].ratio.test


# -- the smoke run ------------------------------------------------------------------------------------


def test_smoke_run_through_the_runner(smoke_run):
    out, record = smoke_run("face_hiring")
    assert [s["stage"] for s in record["stages"]] == [s.name for s in INCIDENT.stages]
    m = record["metrics"]
    assert m["candidates"]["left_out"]["minors"]["n"] == 737  # counted, never dropped silently
    assert m["candidates"]["n_analysed"] + m["candidates"]["left_out"]["low_face_presence"]["n"] == \
        m["candidates"]["n_perceived"]
    assert "simulated" in m["simulation"]["labels"]
    for key in ("beta_0", "beta_1"):
        fits = m["scorer"][key]["provenance"]
        assert len(fits) == 2 and all(len(f["weights_sha256"]) == 64 and f["config"]["beta"] == float(key[-1])
                                      for f in fits)
        assert set(m["disparate_impact"][key]) == set(failure.ATTRIBUTES)
        assert {"value", "low", "high", "n", "test"} <= set(m["equal_opportunity"][key]["race"])
    assert m["examined"]["weights_sha256"] == m["scorer"]["beta_1"]["provenance"][0]["weights_sha256"]
    assert m["labels"]["neuroticism_reads_as"] == "emotional stability" and m["labels"]["correlation"][
        "neuroticism"]["value"] > 0.8
    assert {"randomisation_check", "faithfulness", "probe"} <= set(m["autopsy"])
    assert m["published"]["bertrand_mullainathan"]["ratio"] == pytest.approx(0.668, abs=1e-3)
    for name in ("first_impressions", "perception", "gender_shades", "by_beta", "group_metrics", "probe",
                 "mitigation"):
        assert record["tables"][name], name
    paths = RunPaths(out, "face_hiring")
    assert all((paths.outputs / name).is_file() for name in record["figures"])
    assert {"perception.png", "by_beta.png", "tradeoff.png", "attribution.png"} <= set(record["figures"])


def test_smoke_run_report_renders(smoke_run, tmp_path):
    out, _ = smoke_run("face_hiring")
    paths = RunPaths(out, "face_hiring")
    resolved = story.resolve(story.parse(INCIDENT.story), story.load_run(paths.metrics), paths.outputs)
    html = story.render_html(resolved, tmp_path / "face_hiring.html").read_text()
    for needle in ("perceived", "simulated", "CC BY-NC 4.0", "Bertrand", "Rhue", "Gender Shades"):
        assert needle in html, needle


def test_builders_take_weights_none_without_reading_files(monkeypatch):
    def refuse(self):
        raise AssertionError(f"weights=None must not read {self.name}")

    monkeypatch.setattr(type(INCIDENT.weights["emotion"]), "fetch", refuse)
    assert INCIDENT.build("emotion", weights=None)(torch.zeros(1, 1, 64, 64)).shape == (1, 7)
    assert INCIDENT.build("gender", weights=None)(torch.zeros(1, 1, 64, 64)).shape == (1, 2)
    assert INCIDENT.build("landmarker", weights=None).blendshapes(torch.zeros(1, 478, 2)).shape == (1, 52)


# -- bring your own photos ----------------------------------------------------------------------------


def test_bring_your_own_unseen_photos_and_a_faceless_one(tmp_path, mirror):
    """Head-and-shoulders photos the crops never included, cropped to their faces; a wall is reported."""
    context = mirror / "fairface-context"
    with open(context / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    chosen = pd.DataFrame(rows).query("race in ['Black', 'White', 'Indian']")
    chosen = chosen[~chosen["age"].isin(["0-2", "3-9", "10-19"])].groupby(["race", "gender"]).head(4)
    images = tmp_path / "photos"
    images.mkdir()
    for name in chosen["file"]:
        shutil.copy(context / name, images / name)
    Image.new("RGB", (300, 300), (180, 170, 160)).save(images / "wall.png")
    listed = [[r.file, r.race, r.gender, r.age] for r in chosen.itertuples()] + [["wall.png", "White", "Male", ""]]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["file", "race", "gender", "age"], *listed])
    config = INCIDENT.settings("smoke", {"images": str(images), "labels": str(labels), "limit_per_group": None})
    record = runner.run(INCIDENT, config, out_root=tmp_path / "out")
    m = record["metrics"]
    assert record["profile"] == "custom" and "images" not in record["params"]
    assert m["candidates"]["n_perceived"] == len(listed)
    assert "wall.png" in m["candidates"]["left_out"]["low_face_presence"]["files"]
    # some of these small, dim photos are profiles the landmark model barely sees: reported, not dropped
    assert m["candidates"]["n_analysed"] + len(m["candidates"]["left_out"]["low_face_presence"]["files"]) == len(listed)
    assert m["candidates"]["n_analysed"] >= len(chosen) // 2
    assert {p["name"] for p in record["provenance"]} >= {"fer2013_mini_XCEPTION.102-0.66.hdf5", "first-impressions"}
    assert not any(p["name"].startswith("fairface") for p in record["provenance"])


def test_bring_your_own_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="needs both images"):
        data.load(PROFILES["smoke"].replace(images=str(tmp_path)))
    assert data.adult("20-29", 20) and not data.adult("10-19", 20) and data.adult("more than 70", 20)
    assert data.adult("", 20) and data.adult("3-9", None)


# -- the explorer ---------------------------------------------------------------------------------------


def _explorer_script(repo: str, out: str):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, repo)
    from app.explorers import face_hiring
    from app.lab import Lab
    from incidents.face_hiring import explore

    explore.REFERENCE_PER_GROUP = 3  # a small reference set keeps the test in seconds
    face_hiring.show(Lab(out=Path(out)), SimpleNamespace(slug="face_hiring", title="Face-based hiring"))


@pytest.fixture(scope="module")
def cached_crops(offline_lab):
    from autopsy.assets import fetch

    for row in data.FAIRFACE_CROPS.rows[:2]:
        fetch(data.FAIRFACE_CROPS.asset(row))


def test_the_explorer_reads_a_face_scores_it_and_edits_it(tmp_path, cached_crops):
    from streamlit.testing.v1 import AppTest

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    at = AppTest.from_function(_explorer_script, args=(str(REPO), str(tmp_path)), default_timeout=180).run()
    assert not at.exception
    assert any("Upload a photo" in i.value for i in at.info)
    at.radio(key="fh-source").set_value("From your cache of the public sets").run()
    assert not at.exception and not at.error
    assert at.metric and at.metric[0].label.startswith("Employability score")
    assert any(i.proto.imgs[0].alt.startswith("The face as the models read it") for i in at.get("image"))
    at.select_slider(key="fh-skin").set_value(9).run()
    assert not at.exception and any("Monk Skin Tone level 9" in c.value for c in at.caption)
    assert at.metric[0].delta  # the edited face is scored against the original
    at.select_slider(key="fh-skin").set_value("original")
    at.select_slider(key="fh-beta").set_value(0.0).run()
    assert not at.exception and any("β = 0:" in c.value for c in at.caption)
    assert at.metric and at.metric[0].label.startswith("Employability score")
