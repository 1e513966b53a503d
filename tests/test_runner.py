"""The contract and the runner, on the minimal fixture incident (seconds, no files but its own)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autopsy import contract, runner
from autopsy.contract import ContractError, Findings, Incident, Stage
from autopsy.runs import MixedRunError, RunPaths, check_outputs_belong
from tests.fixtures.lab_fixture.alpha import ALPHA_WEIGHTS, INCIDENT as ALPHA

REPO = Path(__file__).resolve().parents[1]


def test_settings_come_from_named_profiles_and_refuse_unknown_names():
    assert ALPHA.settings("smoke").n_images == 8
    assert ALPHA.settings().n_images == 24  # quick is the default
    assert ALPHA.settings("smoke", {"n_images": 3}).n_images == 3
    with pytest.raises(ValueError, match="unknown setting.*n_imgs.*known: .*n_images"):
        ALPHA.settings("smoke", {"n_imgs": 3})
    with pytest.raises(ValueError, match="has no profile 'paper'"):
        ALPHA.settings("paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ALPHA.settings().seed = 1


def test_local_paths_stay_out_of_the_recorded_settings():
    config = ALPHA.settings("smoke", {"images": "/home/me/photos", "labels": "/home/me/labels.csv"})
    assert config.custom and "images" not in config.to_dict() and config.to_dict(local=True)["images"]
    assert ALPHA.profile_of(config) == "custom"


def _incident(**changes):
    fields = {f.name: getattr(ALPHA, f.name) for f in dataclasses.fields(ALPHA)}
    return Incident(**{**fields, **changes})


def test_the_contract_names_what_is_wrong():
    with pytest.raises(ContractError, match="stage 'scores' needs photos, which no earlier stage produces"):
        _incident(stages=ALPHA.stages[1:])
    with pytest.raises(ContractError, match="declare a 'smoke' profile"):
        _incident(profiles={"quick": ALPHA.profiles["quick"]})
    with pytest.raises(ContractError, match="keyword-only `weights=`"):
        _incident(models={"alpha": lambda weights=None: None})

    @dataclasses.dataclass(frozen=True)
    class Other:
        seed: int = 1

    with pytest.raises(ContractError, match="subclassing autopsy.contract.Config"):
        _incident(config=Other, profiles={"smoke": Other()})


def test_weights_pin_accepts_enums_and_none():
    import enum

    class Pins(enum.Enum):
        DEMO = ALPHA_WEIGHTS

    assert contract.weights_of(Pins.DEMO) is ALPHA_WEIGHTS and ALPHA_WEIGHTS.asset.name == "alpha.pt"
    assert contract.weights_of(None) is None
    with pytest.raises(TypeError, match="pinned Weights"):
        contract.weights_of("fastgaze")


def test_a_run_records_stages_publishes_atomically_and_stamps_one_run_id(tmp_path):
    seen = []
    record = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path, progress=lambda f, m: seen.append(f))
    paths = RunPaths(tmp_path, "alpha")
    assert [s["stage"] for s in record["stages"]] == ["photos", "scores", "findings"]
    assert all(s["seconds"] >= 0 and not s["resumed"] for s in record["stages"])
    assert seen == sorted(seen) and seen[-1] == 1.0
    on_disk = json.loads(paths.metrics.read_text())
    assert on_disk["run_id"] == json.loads((paths.outputs / "run.json").read_text())["run_id"] == record["run_id"]
    assert on_disk["metrics"]["n_images"] == 16 and on_disk["metrics"]["rate"]["n"] == 16
    assert (paths.outputs / "rate.png").is_file() and not paths.partial.exists() and not paths.lock.exists()
    assert on_disk["carbon"]["measured"]["energy_kwh"] > 0 and "CodeCarbon" in on_disk["carbon"]["measured"]["method"]
    check_outputs_belong(on_disk, paths.outputs)


def test_an_interrupted_run_leaves_the_last_run_intact_and_resumes(tmp_path):
    first = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path)
    calls = []

    def broken(ctx, photos, scores):
        calls.append("findings")
        raise KeyboardInterrupt

    stages = (*ALPHA.stages[:2], Stage("findings", broken))
    with pytest.raises(KeyboardInterrupt):
        runner.run(_incident(stages=stages), ALPHA.settings("smoke"), out_root=tmp_path)
    paths = RunPaths(tmp_path, "alpha")
    assert json.loads(paths.metrics.read_text())["run_id"] == first["run_id"]  # the old run still stands
    assert (paths.partial / "stages" / "scores.pkl").is_file() and not paths.lock.exists()
    again = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path, resume=True)
    assert [s["resumed"] for s in again["stages"]] == [False, True, False]  # photos is not saved: recomputed
    assert again["metrics"]["rate"] == first["metrics"]["rate"]


def test_resume_with_other_settings_starts_over(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        runner.run(_incident(stages=(*ALPHA.stages[:2], Stage("findings", _interrupt))), ALPHA.settings("smoke"),
                   out_root=tmp_path)
    record = runner.run(ALPHA, ALPHA.settings("smoke", {"seed": 7}), out_root=tmp_path, resume=True)
    assert not any(s["resumed"] for s in record["stages"])


def _interrupt(ctx, photos, scores):
    raise KeyboardInterrupt


def test_a_second_run_into_one_output_root_is_refused(tmp_path):
    paths = RunPaths(tmp_path, "alpha")
    paths.lock.parent.mkdir(parents=True)
    paths.lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(),
                                      "started": "now"}))
    with pytest.raises(runner.RunError, match="another run of this incident is writing"):
        runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path)
    paths.lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()}))
    runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path)  # a dead run's lock is taken over


def test_a_report_refuses_figures_from_another_run(tmp_path):
    runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path)
    paths = RunPaths(tmp_path, "alpha")
    run = json.loads(paths.metrics.read_text())
    (paths.outputs / "run.json").write_text(json.dumps({"run_id": "someone-else"}))
    with pytest.raises(MixedRunError, match="were mixed"):
        check_outputs_belong(run, paths.outputs)


def test_the_last_stage_must_return_findings(tmp_path):
    bad = _incident(stages=(*ALPHA.stages[:2], Stage("findings", lambda ctx, photos, scores: {"rate": 1})))
    with pytest.raises(runner.RunError, match="must return Findings"):
        runner.run(bad, ALPHA.settings("smoke"), out_root=tmp_path)


def test_the_fixture_runs_through_the_command_line_and_renders(tmp_path):
    env = {**os.environ, "AUTOPSY_INCIDENTS": "tests.fixtures.lab_fixture", "PYTHONPATH": str(REPO)}
    for args in (["run", "alpha", "--profile", "smoke"], ["report", "alpha"]):
        result = subprocess.run([sys.executable, "-m", "autopsy.cli", *args, "--out", str(tmp_path)],
                                capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
    html = (tmp_path / "reports" / "alpha.html").read_text()
    assert "data:image/png;base64" in html and "16 images" in html
    params = subprocess.run([sys.executable, "-m", "autopsy.cli", "params"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert "alpha:" in params.stdout and "n_images: 24" in params.stdout


def test_findings_is_a_frozen_record():
    f = Findings(metrics=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.metrics = 1


def test_a_run_that_fails_at_once_leaves_no_folders(tmp_path):
    def bad_photos(ctx):
        raise ValueError("labels are wrong")

    broken = _incident(stages=(Stage("photos", bad_photos, save=False), *ALPHA.stages[1:]))
    with pytest.raises(ValueError, match="labels are wrong"):
        runner.run(broken, ALPHA.settings("smoke"), out_root=tmp_path / "out")
    assert not (tmp_path / "out" / "outputs").exists()
