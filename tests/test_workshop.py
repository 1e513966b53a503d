"""autopsy.workshop: question banks, the SQLite workshop file (round trip, scoring, reopen, concurrency), export."""

import csv
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autopsy import workshop as ws

REPO = Path(__file__).resolve().parents[1]
BANKS = {slug: REPO / "incidents" / slug / "assessment.yaml"
         for slug in ("twitter_crop", "zoom_matting", "face_hiring")}


def bank_dict(incident="alpha") -> dict:
    """A small valid bank: one question per section, the first with three graded choices."""
    sections = {}
    for section in ws.SECTIONS:
        sections[section] = [{
            "id": f"{incident}-{section}", "text": f"A question on {section}?",
            "choices": [{"id": "a", "text": "wrong", "points": 0}, {"id": "b", "text": "right", "points": 2},
                        {"id": "c", "text": "half right", "points": 1}],
            "evidence": ["metrics.rate", "figure:rate.png"],
        }]
    sections["bias_fairness"].append({"id": f"{incident}-extra", "text": "Another?", "evidence": "tables.groups",
                                      "choices": [{"id": "y", "text": "yes", "points": 1},
                                                  {"id": "n", "text": "no", "points": 0}]})
    return {"incident": incident, "title": incident.title(), "sections": sections}


def write_bank(tmp_path, data, name="assessment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def bank(tmp_path):
    return ws.load_assessment(write_bank(tmp_path, bank_dict()))


# --------------------------------------------------------------------------- question banks


@pytest.mark.parametrize("slug", sorted(BANKS))
def test_every_incident_bank_validates_and_covers_the_six_sections(slug):
    bank = ws.load_assessment(BANKS[slug])
    assert bank.incident == slug
    assert bank.sections == list(ws.SECTIONS)
    for question in bank.questions:
        assert question.evidence and question.max_points > 0
        assert question.explanation, f"{question.id}: say why, after the answer"


def test_a_valid_bank_loads_with_points_and_evidence(bank):
    assert len(bank.questions) == 7
    assert bank.max_points("bias_fairness") == 3.0
    q = bank.question("alpha-extra")
    assert q.section == "bias_fairness" and q.evidence == ("tables.groups",)  # one string becomes a list
    assert q.choice("y").points == 1
    with pytest.raises(ws.WorkshopError, match="no choice 'z'"):
        q.choice("z")


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d["sections"].pop("privacy"), r"section\(s\) privacy missing"),
    (lambda d: d["sections"].update(ethics=d["sections"]["privacy"]), r"unknown section\(s\) ethics"),
    (lambda d: d["sections"]["privacy"][0].update(id="alpha-robustness"),
     r"question id 'alpha-robustness' is used twice"),
    (lambda d: d["sections"]["privacy"][0].update(evidence=["secrets.key"]),
     r"question 'alpha-privacy'.*evidence 'secrets.key'"),
    (lambda d: d["sections"]["privacy"][0].update(evidence=["figure:../../etc/passwd"]),
     r"question 'alpha-privacy'.*must name an image file"),
    (lambda d: d["sections"]["privacy"][0].update(evidence=[]), r"question 'alpha-privacy'.*'evidence'"),
    (lambda d: [c.update(points=0) for c in d["sections"]["privacy"][0]["choices"]],
     r"question 'alpha-privacy': no choice is worth any points"),
    (lambda d: d["sections"]["privacy"][0]["choices"][0].update(points=-1), r"question 'alpha-privacy'.*points -1"),
    (lambda d: d["sections"]["privacy"][0].update(choices=[{"id": "a", "text": "only", "points": 1}]),
     r"question 'alpha-privacy': give at least two choices"),
    (lambda d: d["sections"]["privacy"][0].update(hint="x"), r"question 'alpha-privacy': unknown key\(s\) hint"),
    (lambda d: d["sections"]["privacy"][0].update(id="Bad Id"), r"section 'privacy', question 1: id 'Bad Id'"),
    (lambda d: d.pop("title"), r"missing top-level key 'title'"),
])
def test_a_broken_bank_is_refused_naming_the_file_and_the_question(tmp_path, breakage, message):
    data = bank_dict()
    breakage(data)
    path = write_bank(tmp_path, data)
    with pytest.raises(ws.AssessmentError, match=message) as err:
        ws.load_assessment(path)
    assert str(path) in str(err.value)


def test_unreadable_or_missing_banks_say_so(tmp_path):
    with pytest.raises(ws.AssessmentError, match="no such file"):
        ws.load_assessment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sections: [unclosed")
    with pytest.raises(ws.AssessmentError, match="not readable YAML"):
        ws.load_assessment(bad)


def test_evidence_resolves_values_estimates_tables_and_figures(tmp_path):
    (tmp_path / "rate.png").write_bytes(b"\x89PNG fake")
    run = {"metrics": {"rate": {"value": 0.58, "low": 0.55, "high": 0.61, "n": 1000, "test": "Wilson 95%"},
                       "n": 540, "empty": None},
           "tables": {"groups": [{"group": "A"}]}, "figures": {"rate.png": "The rate per group"}}
    est = ws.resolve_evidence("metrics.rate", run, tmp_path)
    assert est.kind == "estimate" and est.text() == "0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)"
    assert ws.resolve_evidence("metrics.n", run).text() == "540"
    assert ws.resolve_evidence("tables.groups", run).kind == "table"
    fig = ws.resolve_evidence("figure:rate.png", run, tmp_path)
    assert fig.kind == "figure" and fig.path == tmp_path / "rate.png" and fig.caption == "The rate per group"
    for ref in ("metrics.nope", "metrics.empty", "figure:other.png"):
        assert not ws.resolve_evidence(ref, run, tmp_path).found
    assert "run it" in ws.resolve_evidence("metrics.rate", None).caption


# --------------------------------------------------------------------------- the database


def test_answers_round_trip_score_per_section_and_survive_a_reopen(tmp_path, bank):
    path = tmp_path / "sub" / "workshop.sqlite"
    shop = ws.Workshop.open(path, name="Friday workshop")
    assert shop.join("Ada") == "Ada" and shop.join("  ada ") == "Ada"  # case-insensitive, stored spelling kept
    shop.join("Grace")
    assert shop.record_answer("Ada", bank, "alpha-data_consent", "b") == 2
    shop.record_answer("Ada", bank, "alpha-data_consent", "c")  # changing an answer replaces it
    shop.record_answer("Ada", bank, "alpha-bias_fairness", "b")
    shop.record_answer("Ada", bank, "alpha-extra", "n")
    shop.record_answer("Grace", bank, "alpha-bias_fairness", "a")
    with pytest.raises(ws.WorkshopError, match="no question"):
        shop.record_answer("Ada", bank, "nope", "a")
    with pytest.raises(ws.WorkshopError, match="no participant 'Linus'"):
        shop.record_answer("Linus", bank, "alpha-extra", "y")

    reopened = ws.Workshop.open(path)  # what the app does after a restart
    assert reopened.meta["name"] == "Friday workshop" and reopened.participants() == ["Ada", "Grace"]
    answers = reopened.answers()
    assert len(answers) == 4 and set(answers.columns) >= {"nickname", "incident", "section", "question_id", "answer",
                                                         "points", "answered_at"}
    scores = reopened.section_scores(banks={"alpha": bank}).set_index(["nickname", "section"])
    assert scores.loc[("Ada", "data_consent"), "score"] == pytest.approx(0.5)  # 1 of 2 points
    bias = scores.loc[("Ada", "bias_fairness"), ["points", "max_points", "answered", "questions"]]
    assert bias.tolist() == [2, 3, 2, 2]
    assert scores.loc[("Grace", "bias_fairness"), "score"] == 0
    assert list(reopened.section_scores(nickname="grace")["nickname"]) == ["Grace"]


def test_nicknames_only(tmp_path):
    shop = ws.Workshop.open(tmp_path / "w.sqlite")
    for bad in ("", "   ", "ada@example.org", "x" * 31, "<script>"):
        with pytest.raises(ws.WorkshopError, match="a nickname only"):
            shop.join(bad)
    assert shop.join("Zoë-2") == "Zoë-2"


def test_a_folder_or_a_foreign_file_is_refused(tmp_path):
    with pytest.raises(ws.WorkshopError, match="is a folder"):
        ws.Workshop.open(tmp_path)
    other = tmp_path / "notes.sqlite"
    other.write_text("not a database " * 100)
    with pytest.raises(ws.WorkshopError, match="not a workshop database"):
        ws.Workshop.open(other)


def test_predict_then_reveal_tallies_against_the_outcome(tmp_path):
    shop = ws.Workshop.open(tmp_path / "w.sqlite")
    for name in ("Ada", "Grace", "Linus"):
        shop.join(name)
    card = ws.Scenario(id="alpha/one", incident="alpha", title="t", prompt="p?", choices=("left", "right"),
                       caption="c", picture=lambda: None, reveal=lambda: ws.Outcome("left", "because"))
    shop.record_prediction("Ada", card, "right")
    shop.record_prediction("Ada", card, "left")  # may change until the reveal
    shop.record_prediction("Grace", card, "right")
    with pytest.raises(ws.WorkshopError, match="not a choice"):
        shop.record_prediction("Linus", card, "middle")
    shop.reveal(card, card.reveal().answer)
    with pytest.raises(ws.WorkshopError, match="already revealed"):
        shop.record_prediction("Linus", card, "left")
    assert shop.revealed() == {"alpha/one": "left"}
    predictions = shop.predictions().set_index("nickname")
    assert predictions.loc["Ada", "correct"] == 1 and predictions.loc["Grace", "correct"] == 0
    tally = shop.tally().iloc[0]
    assert (tally["predictions"], tally["revealed"], tally["correct"]) == (2, 2, 1)
    assert tally["by_choice"] == {"left": 1, "right": 1}
    share = tally["share_correct"]
    assert share["value"] == 0.5 and share["n"] == 2 and share["test"].startswith("Wilson") and share["warning"]

    # self-paced: a participant reveals a card to themselves only, after predicting
    shop.record_prediction("Linus", "alpha/two", "right")
    with pytest.raises(ws.WorkshopError, match="has not predicted"):
        shop.reveal_for("Grace", "alpha/two", "right")
    shop.reveal_for("Linus", "alpha/two", "right")
    assert "alpha/two" not in shop.revealed()
    with pytest.raises(ws.WorkshopError, match="already revealed"):
        shop.record_prediction("Linus", "alpha/two", "left")
    shop.record_prediction("Grace", "alpha/two", "left")  # still open for the others


def test_sessions_and_reset(tmp_path, bank):
    shop = ws.Workshop.open(tmp_path / "w.sqlite")
    assert shop.current_session() is None
    first = shop.start_session("alpha")
    second = shop.start_session("beta")  # starting a session ends the previous one
    assert shop.current_session() == second and second.id != first.id
    shop.join("Ada")
    shop.record_answer("Ada", bank, "alpha-extra", "y")
    shop.record_prediction("Ada", "alpha/one", "left")
    shop.reveal("alpha/one", "left")
    shop.reset("scenarios")
    assert shop.predictions().empty and shop.revealed() == {} and len(shop.answers()) == 1
    shop.reset("all")
    assert shop.participants() == [] and shop.answers().empty
    shop.end_session()
    assert shop.current_session() is None
    with pytest.raises(ws.WorkshopError, match="reset scope"):
        shop.reset("everything")


def test_concurrent_sessions_all_land(tmp_path, bank):
    path = tmp_path / "w.sqlite"
    ws.Workshop.open(path)
    names = [f"p{i}" for i in range(6)]
    errors = []

    def participant(name):
        try:
            shop = ws.Workshop(path)  # each Streamlit session holds its own handle
            shop.join(name)
            for question in bank.questions:
                shop.record_answer(name, bank, question.id, question.choices[1].id)
                shop.section_scores(nickname=name)
        except Exception as err:  # noqa: BLE001 -- surfaced below
            errors.append(err)

    threads = [threading.Thread(target=participant, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    shop = ws.Workshop(path)
    assert len(shop.answers()) == len(names) * len(bank.questions)
    with shop._connect(write=False) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --------------------------------------------------------------------------- comparison and export


def test_comparison_by_incident_has_intervals_and_by_participant_is_exact(tmp_path, bank):
    other = ws.load_assessment(write_bank(tmp_path, bank_dict("beta"), "beta.yaml"))
    shop = ws.Workshop.open(tmp_path / "w.sqlite")
    picks = {"Ada": "b", "Grace": "a", "Linus": "c", "Ken": "b"}
    for name, pick in picks.items():
        shop.join(name)
        for question in bank.in_section("data_consent") + other.in_section("data_consent"):
            shop.record_answer(name, bank if question.id.startswith("alpha") else other, question.id, pick)
    scores = shop.section_scores()
    by_incident = ws.comparison(scores, by="incident", n_resamples=300)
    alpha = by_incident[(by_incident.group == "alpha") & (by_incident.section == "data_consent")].iloc[0]
    assert alpha["value"] == pytest.approx((1 + 0 + 0.5 + 1) / 4) and alpha["n"] == 4
    assert alpha["low"] <= alpha["value"] <= alpha["high"] and "bootstrap" in alpha["test"] and alpha["warning"]
    by_person = ws.comparison(scores, by="nickname").set_index("group")
    assert by_person.loc["Linus", "value"] == 0.5 and by_person.loc["Linus", "n"] == 1
    fig = ws.comparison_figure(by_incident, title="By incident")
    assert len(fig.axes[0].patches) == 2  # one bar per incident in the one section answered
    assert fig.axes[0].get_ylim()[0] == 0
    one = ws.comparison(scores[scores.nickname == "Ada"], by="incident")
    assert one["warning"].iloc[0] == "one participant: no interval" and pd.isna(one["low"].iloc[0])


def test_export_opens_in_a_spreadsheet_and_as_json(tmp_path, bank):
    shop = ws.Workshop.open(tmp_path / "w.sqlite")
    shop.join("Zoë")
    shop.record_answer("Zoë", bank, "alpha-privacy", "b")
    shop.record_prediction("Zoë", "alpha/one", "left")
    shop.reveal("alpha/one", "right")
    written = shop.export(tmp_path / "export", banks={"alpha": bank})
    names = {p.name for p in written}
    assert names == {"participants.csv", "answers.csv", "section_scores.csv", "predictions.csv", "scenario_tally.csv",
                     "workshop.json"}
    answers = pd.read_csv(tmp_path / "export" / "answers.csv")
    assert answers.loc[0, "nickname"] == "Zoë" and answers.loc[0, "points"] == 2
    with open(tmp_path / "export" / "section_scores.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["section"] == "privacy" and float(rows[0]["score"]) == 1.0
    tally = pd.read_csv(tmp_path / "export" / "scenario_tally.csv")
    assert tally.loc[0, "share_correct_value"] == 0 and tally.loc[0, "share_correct_n"] == 1
    assert (tmp_path / "export" / "answers.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # spreadsheets read UTF-8
    doc = json.loads((tmp_path / "export" / "workshop.json").read_text(encoding="utf-8"))
    assert doc["answers"][0]["nickname"] == "Zoë" and doc["workshop"]["schema_version"] == "1"
    assert doc["predictions"][0]["correct"] == 0


# --------------------------------------------------------------------------- the app's workshop pages (AppTest)

APP = str(REPO / "app" / "streamlit_app.py")
FIXTURE_PACKAGE = "tests.fixtures.lab_fixture"


def app(monkeypatch, out: Path, page: str, *, package: str = FIXTURE_PACKAGE, workshop: Path | None = None):
    """The viewer as `autopsy app --out OUT [--workshop FILE]` starts it, on one page."""
    import sys

    from streamlit.navigation.page import calc_hash
    from streamlit.testing.v1 import AppTest

    argv = ["streamlit_app.py", "--out", str(out), "--incidents", package]
    if workshop is not None:
        argv += ["--workshop", str(workshop)]
    monkeypatch.setattr(sys, "argv", argv)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    at._page_hash = calc_hash(page)  # st.Page(callable, url_path=page); AppTest.switch_page wants files
    at.run()
    assert not at.exception, at.exception
    return at


def page_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in (*at.info, *at.error, *at.warning, *at.success)] + [h.value for h in at.subheader]
    return "\n".join(str(p) for p in parts)


def join(at, nickname: str):
    at.text_input(key="workshop-nickname-input").input(nickname)
    next(b for b in at.button if b.label == "Join the workshop").click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def fixture_bank(tmp_path, monkeypatch):
    """The fixture incident 'alpha' gets a question bank (the fixture package itself ships none)."""
    path = write_bank(tmp_path, bank_dict("alpha"), "alpha.yaml")
    real = ws.assessment_path
    monkeypatch.setattr(ws, "assessment_path", lambda incident: path if incident.slug == "alpha" else real(incident))
    return ws.load_assessment(path)


def test_workshop_page_saves_answers_scores_sections_and_survives_a_restart(monkeypatch, tmp_path, fixture_bank):
    out, db = tmp_path / "out", tmp_path / "elsewhere" / "friday.sqlite"
    at = app(monkeypatch, out, "workshop", workshop=db)
    assert at.title[0].value == "Workshop: assess an incident"
    join(at, "ada@example.org")
    assert any("a nickname only" in e.value for e in at.error)
    join(at, "Ada")
    assert "You take part as **Ada**." in page_text(at)
    assert "has not been run here yet" in page_text(at)  # the evidence needs a run
    at.radio(key="ws-alpha-alpha-data_consent").set_value("c").run()
    at.radio(key="ws-alpha-alpha-bias_fairness").set_value("b").run()
    assert not at.exception, at.exception
    text = page_text(at)
    assert "**1 / 2 points.**" in text and "Section score: **1 / 2 points (50%)** on 1 of 1 question(s)" in text
    assert "Section score: **2 / 2 points (100%)** on 1 of 2 question(s)" in text  # over the answered ones
    assert at.get("image"), "no comparison chart"
    assert ws.Workshop(db).answers()["answer"].tolist() == ["c", "b"]

    restarted = app(monkeypatch, out, "workshop", workshop=db)  # a new server process, same file
    join(restarted, "ada")
    assert restarted.radio(key="ws-alpha-alpha-data_consent").value == "c"
    assert "Section score: **1 / 2 points (50%)**" in page_text(restarted)


def test_workshop_page_shows_the_runs_evidence_beside_the_question(monkeypatch, tmp_path, fixture_bank):
    import matplotlib.pyplot as plt

    out = tmp_path / "out"
    (out / "metrics").mkdir(parents=True)
    run = {"slug": "alpha", "title": "Alpha", "profile": "quick", "created": "2026-01-01T00:00:00+00:00",
           "metrics": {"rate": {"value": 0.58, "low": 0.55, "high": 0.61, "n": 1000, "test": "Wilson 95%"}},
           "tables": {"groups": [{"group": "A", "rate": 0.5}]}, "figures": {"rate.png": "Rate per group"}}
    (out / "metrics" / "alpha.json").write_text(json.dumps(run))
    (out / "outputs" / "alpha").mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(["A"], [0.5])
    fig.savefig(out / "outputs" / "alpha" / "rate.png")
    plt.close(fig)
    at = join(app(monkeypatch, out, "workshop"), "Grace")
    text = page_text(at)
    assert "`metrics.rate` — 0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)" in text
    assert any("Rate per group" in str(image.proto) for image in at.get("image"))
    assert (out / "workshop.sqlite").is_file()  # the default workshop file lives in the output folder


def test_facilitator_page_shows_scores_by_section_and_exports(monkeypatch, tmp_path, fixture_bank):
    out = tmp_path / "out"
    shop = ws.Workshop.open(out / "workshop.sqlite")
    for name, pick in (("Ada", "b"), ("Grace", "a")):
        shop.join(name)
        shop.record_answer(name, fixture_bank, "alpha-privacy", pick)
    at = app(monkeypatch, out, "facilitator")
    assert at.title[0].value == "Workshop: facilitator"
    assert "**2 participant(s):** Ada, Grace" in page_text(at)
    scores = at.table[0].value
    assert scores.loc["Ada", "Alpha · Privacy"] == "100%" and scores.loc["Grace", "Alpha · Privacy"] == "0%"
    labels = [b.label for b in at.get("download_button")]
    assert "answers.csv (2 rows)" in labels and "Everything (workshop.json)" in labels


@pytest.fixture
def fixture_cards(monkeypatch):
    """Two synthetic predict-then-reveal cards for the fixture incident (mechanics; the real ones are below)."""
    import numpy as np
    from PIL import Image

    def reveal(answer):
        return ws.Outcome(answer, f"The model chose {answer}.", image=Image.new("RGB", (8, 8), (0, 114, 178)))

    cards = [ws.Scenario(id=f"alpha/card-{i}", incident="alpha", title=f"Card {i}", prompt="Which side?",
                         choices=("left", "right"), caption="A synthetic picture.",
                         picture=lambda: Image.fromarray(np.zeros((8, 16, 3), np.uint8)),
                         reveal=lambda i=i: reveal(("left", "right")[i % 2])) for i in (1, 2)]  # 1: right, 2: left
    real = ws.scenarios_for
    monkeypatch.setattr(ws, "scenarios_for", lambda slug, package="incidents", *, outputs=None:
                        cards if slug == "alpha" else real(slug, package, outputs=outputs))
    return cards


def test_scenarios_self_paced_predict_then_reveal(monkeypatch, tmp_path, fixture_cards):
    from app import scenarios as page

    page._cards.clear(), page.outcome.clear(), page.picture.clear()
    at = join(app(monkeypatch, tmp_path, "scenarios"), "Ada")
    assert at.title[0].value == "Workshop: predict, then reveal"
    reveal = at.button(key="reveal-alpha/card-2")
    assert reveal.disabled, "reveal before predicting"
    at.radio(key="sc-alpha/card-2").set_value("right").run()
    at.button(key="reveal-alpha/card-2").click().run()
    assert not at.exception, at.exception
    assert "**left.** You predicted: right." in page_text(at) and "The model chose left." in page_text(at)
    assert at.radio(key="sc-alpha/card-2").disabled
    table = ws.Workshop(tmp_path / "workshop.sqlite").predictions()
    assert table[["nickname", "scenario_id", "prediction", "outcome", "correct"]].values.tolist() == [
        ["Ada", "alpha/card-2", "right", "left", 0]]


def test_facilitated_session_reveals_to_everyone(monkeypatch, tmp_path, fixture_cards):
    from app import scenarios as page

    page._cards.clear(), page.outcome.clear(), page.picture.clear()
    facilitator = app(monkeypatch, tmp_path, "facilitator")
    facilitator.button(key="fa-start").click().run()
    assert "Session running on **Alpha incident**" in page_text(facilitator)

    ada = join(app(monkeypatch, tmp_path, "scenarios"), "Ada")
    assert "Facilitated session on **Alpha incident**" in page_text(ada)
    assert not ada.get("button") or all(b.key != "reveal-alpha/card-1" for b in ada.button)  # only the facilitator
    ada.radio(key="sc-alpha/card-1").set_value("right").run()
    assert "The facilitator reveals the answer." in page_text(ada)

    facilitator.run()
    assert "1 prediction(s): left: 0; right: 1" in page_text(facilitator)
    facilitator.button(key="fa-reveal-alpha/card-1").click().run()
    assert not facilitator.exception, facilitator.exception
    assert "1 of 1 participant(s) predicted the model's choice." in page_text(facilitator)
    ada.button(key="sc-refresh").click().run()
    assert "**right.** You predicted it." in page_text(ada)

    facilitator.checkbox(key="fa-reset-sure").check().run()
    facilitator.button(key="fa-reset-scenarios").click().run()
    assert ws.Workshop(tmp_path / "workshop.sqlite").revealed() == {}


def test_real_twitter_card_reveals_with_the_incidents_model(monkeypatch, tmp_path):
    """The Twitter cards on the real incident package: photos from the mirror, Twitter's model decides."""
    from app import scenarios as page

    page._cards.clear(), page.outcome.clear(), page.picture.clear()
    cards = ws.scenarios_for("twitter_crop")
    assert [c.id for c in cards] == ["twitter_crop/bf-wm", "twitter_crop/wm-bf", "twitter_crop/wf-bm",
                                     "twitter_crop/bm-wf"]
    assert all("perceived" in c.caption for c in cards)
    at = app(monkeypatch, tmp_path, "scenarios", package="incidents")
    join(at, "Ada")
    at.selectbox(key="sc-incident").select("twitter_crop").run()
    at.radio(key="sc-twitter_crop/bf-wm").set_value("The left face").run()
    at.button(key="reveal-twitter_crop/bf-wm").click().run()
    assert not at.exception, at.exception
    outcome = page.outcome("twitter_crop/bf-wm", cards[0])
    assert outcome.answer in cards[0].choices and "most salient point" in outcome.explanation
    x, _ = outcome.measured["point"]
    assert (x < outcome.measured["seam_x"]) == (outcome.answer == "The left face")
    assert f"**{outcome.answer}.**" in page_text(at)


def test_zoom_cards_add_the_runs_hardest_adult_photo_and_reveal_with_the_runs_measurement(tmp_path):
    """The Zoom cards on the real models: the outcome is what measure_photo says, read against the run's line."""
    from autopsy.data import FAIRFACE_CONTEXT
    from incidents.zoom_matting import scenarios

    rows = {r["file"]: r for r in FAIRFACE_CONTEXT.rows}
    adult = next(f for f, r in rows.items() if r["age"] not in scenarios.MINOR_AGES and r["race"] == "Indian")
    child = next(f for f, r in rows.items() if r["age"] in scenarios.MINOR_AGES)
    pd.DataFrame({"file": [adult, child, "my_own_photo.jpg", next(iter(rows))],
                  "coverage": [0.3, 0.1, 0.0, float("nan")]}).to_csv(tmp_path / "photos.csv", index=False)
    assert scenarios.hardest(tmp_path) == adult  # not the child, not a bring-your-own photo, not a missing face
    assert scenarios.hardest(tmp_path / "nowhere") is None
    cards = ws.scenarios_for("zoom_matting", outputs=tmp_path)
    assert len(cards) == 5 and cards[-1].id == f"zoom_matting/{Path(adult).stem}"
    assert all("perceived" in c.caption and c.choices == scenarios.CHOICES for c in cards)

    outcome = cards[-1].reveal()
    measured = outcome.measured
    if not measured["face_found"]:
        assert outcome.answer == "No face is found"
    else:
        assert outcome.answer == ("The head is erased" if measured["coverage"] < 0.5 else "The head stays")
        assert f"{measured['coverage']:.0%}" in outcome.explanation
    assert outcome.image.size == cards[-1].picture().size
