"""The Ray engine on a local instance with 2 CPUs: the same numbers as the local engine, resume,
bad items, dead workers, setup errors. One Ray instance serves the module (it takes seconds to start)."""

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install -e '.[scale]'` (ray is not installed)")

from autopsy import runner  # noqa: E402
from autopsy.contract import Incident, Stage  # noqa: E402
from autopsy.engines import ItemError, LocalEngine  # noqa: E402
from autopsy.ray_engine import RayEngine  # noqa: E402
from autopsy.runs import RunPaths  # noqa: E402
from autopsy.shards import map_shards  # noqa: E402
from tests.fixtures.lab_fixture.alpha import INCIDENT as ALPHA  # noqa: E402
from tests.fixtures.lab_fixture.alpha import build  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL_STORE = 500 * 1024**2  # the machine is shared: keep the object store small


def _numbers(record: dict) -> dict:
    """A run's metrics without its wall time (which differs between any two runs)."""
    return {k: v for k, v in record["metrics"].items() if k != "runtime_seconds"}


@pytest.fixture(scope="module")
def engine():
    engine = RayEngine(num_cpus=2, object_store_memory=SMALL_STORE)
    yield engine
    engine.close()
    assert not ray.is_initialized()


def test_the_fixture_incident_writes_identical_metrics_on_ray_and_locally(engine, tmp_path):
    seen = []
    on_ray = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path / "ray", engine=engine,
                        progress=lambda f, m: seen.append(m))
    local = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path / "local", engine=LocalEngine())
    assert on_ray["engine"] == "ray" and local["engine"] == "local"
    assert _numbers(on_ray) == _numbers(local) and on_ray["metrics"]["n_images"] == 16
    assert any(m.startswith("scores: images: 16/16 (") and "/s, ETA" in m for m in seen)


# -- a sharded variant of the fixture: the scores stage writes Parquet shards of 4 images -------------------

def _counted(calls_dir, kill_at):
    """Score an (index, image) item, leaving a file per call; the first run is killed at item ``kill_at``."""
    def func(net, item):
        index, image = item
        Path(calls_dir, f"{index}-{uuid.uuid4().hex}").touch()
        if index == kill_at and not Path(calls_dir, "killed").exists():
            Path(calls_dir, "killed").touch()
            raise RuntimeError("the run is killed here")
        with torch.inference_mode():
            return {"score": float(net(torch.from_numpy(image)[None])[0, 0])}
    return func


def _sharded(func):
    def scores(ctx, photos):
        """Score every image, four per shard."""
        shards = map_shards(ctx, "scores", func, list(enumerate(photos["images"])), setup=lambda: build(weights=None),
                            shard_size=4)
        return shards.table["score"].to_numpy()

    # photos is saved here: the runner keeps an interrupted run's folder (and so its shards) once a stage is saved
    photos = dataclasses.replace(ALPHA.stages[0], save=True)
    fields = {f.name: getattr(ALPHA, f.name) for f in dataclasses.fields(ALPHA)}
    return Incident(**{**fields, "stages": (photos, Stage("scores", scores), ALPHA.stages[2])})


def _calls(calls_dir) -> list[int]:
    return sorted(int(p.name.split("-")[0]) for p in Path(calls_dir).iterdir() if p.name != "killed")


def test_a_killed_sharded_run_resumes_on_ray_without_redoing_finished_shards(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "num_workers", 1)  # one worker: batches finish in order, so shards 0 and 1 are done
    calls = tmp_path / "calls"
    calls.mkdir()
    incident = _sharded(_counted(calls, kill_at=10))
    with pytest.raises(ItemError, match="scores item 10 .*the run is killed here"):
        runner.run(incident, ALPHA.settings("smoke"), out_root=tmp_path, engine=engine)
    shards = RunPaths(tmp_path, "alpha").partial / "shards"
    assert sorted(p.name for p in shards.glob("scores-*.parquet")) == ["scores-00000.parquet", "scores-00001.parquet"]
    record = runner.run(incident, ALPHA.settings("smoke"), out_root=tmp_path, engine=engine, resume=True)
    made = _calls(calls)
    assert all(made.count(i) == 1 for i in range(8))  # the finished shards were read, not recomputed
    assert set(made) == set(range(16))
    local = runner.run(ALPHA, ALPHA.settings("smoke"), out_root=tmp_path / "local")
    assert _numbers(record) == _numbers(local)


def test_shards_on_ray_match_the_local_engine_and_skip_bad_items(engine, tmp_path):
    from PIL import Image

    from autopsy.contract import Config
    from autopsy.data import load_image
    from autopsy.runner import RunContext

    items = []
    for k in range(10):
        path = tmp_path / f"p{k}.png"
        path.write_bytes(b"broken") if k == 7 else Image.new("RGB", (20 + k, 20), (k, k, k)).save(path)
        items.append({"path": str(path)})

    def width(state, item):
        return {"width": load_image(item["path"]).width + state}

    found = {}
    for name, eng in (("ray", engine), ("local", LocalEngine())):
        eng.on_error = "skip"
        ctx = RunContext("alpha", Config(), "smoke", tmp_path / name, eng)
        found[name] = map_shards(ctx, "widths", width, items, setup=lambda: 100, shard_size=3)
    engine.on_error = "stop"
    assert found["ray"].table.equals(found["local"].table) and found["ray"].table["width"].tolist()[-1] == 129
    assert found["ray"].exclusions == found["local"].exclusions
    assert [e.file for e in found["ray"].exclusions.items] == [items[7]["path"]]


def _die_once(marker, item):
    if item == 3 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker process dies, as when a machine is lost or memory runs out
    return item * item


def test_a_dead_workers_items_are_retried(engine, tmp_path):
    marker = str(tmp_path / "died")
    assert engine.map(_die_once, list(range(8)), setup=lambda: marker) == [i * i for i in range(8)]
    assert os.path.exists(marker)


def _missing_model():
    raise FileNotFoundError("model.bin is not in the cache; run `autopsy fetch`")


def test_a_failing_setup_raises_its_own_error(engine):
    with pytest.raises(FileNotFoundError, match="model.bin is not in the cache"):
        engine.map(lambda state, x: x, [1, 2, 3], setup=_missing_model)
    assert engine.map(lambda state, x: x + state, np.arange(3), setup=lambda: 1) == [1, 2, 3]  # the engine goes on


def test_the_command_line_runs_on_ray_with_the_same_metrics(tmp_path):
    env = {**os.environ, "AUTOPSY_INCIDENTS": "tests.fixtures.lab_fixture", "PYTHONPATH": str(REPO)}
    for engine in ("local", "ray"):
        result = subprocess.run([sys.executable, "-m", "autopsy.cli", "run", "alpha", "--profile", "smoke",
                                 "--engine", engine, "--on-error", "skip", "--out", str(tmp_path / engine)],
                                capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    metrics = [json.loads((tmp_path / e / "metrics" / "alpha.json").read_text()) for e in ("local", "ray")]
    assert _numbers(metrics[0]) == _numbers(metrics[1]) and metrics[1]["engine"] == "ray"
