"""Run an incident's investigation: its stages in order, timed, with progress, resumable, isolated.

Every run writes into its own folder, ``outputs/.<slug>.partial/``, which holds a saved copy of each
finished stage's output (``stages/<name>.pkl``). Only when the last stage has returned are the
figures and files switched into ``outputs/<slug>/`` and ``metrics/<slug>.json`` replaced, both
stamped with one ``run_id``; an interrupted run leaves the previous run untouched, and
``resume=True`` continues it from its finished stages (if its settings are the same). A lock file
keeps two runs of one incident from writing into one output root at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autopsy import carbon, threads
from autopsy.contract import Config, Findings, Incident
from autopsy.engines import LocalEngine
from autopsy.runs import RunPaths, build_record, write_json_atomic


class RunError(RuntimeError):
    """A run cannot start or finish; the message says why and what to do."""


@dataclass
class RunContext:
    """What a stage receives besides its inputs."""

    slug: str
    config: Config
    profile: str
    out: Path  # this run's own folder: figures and per-item files go here
    engine: object = field(default_factory=LocalEngine)
    report: Callable[[float, str], None] = lambda fraction, message: None

    @property
    def seed(self) -> int:
        return self.config.seed

    def progress(self, fraction: float, message: str = "") -> None:
        """Progress within the current stage (0..1)."""
        self.report(min(max(float(fraction), 0.0), 1.0), message)

    def map(self, func: Callable, items, *, setup: Callable | None = None, desc: str = "items") -> list:
        """``[func(state, item) for item in items]`` with ``state = setup()`` once per worker, on the run's engine."""
        return self.engine.map(func, list(items), setup=setup, progress=self.progress, desc=desc)


def config_hash(slug: str, config: Config) -> str:
    """Identifies the settings of a run (bring-your-own paths included: other photos, other run)."""
    payload = json.dumps({"slug": slug, **config.to_dict(local=True)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run(incident: Incident, config: Config | None = None, *, out_root=".", resume: bool = False,
        engine=None, progress: Callable[[float, str], None] | None = None) -> dict:
    """Run ``incident``'s stages on ``config`` (default: its quick profile); return the run record.

    ``progress(fraction, message)`` hears about the whole run (fraction of the stages' shares).
    """
    config = config or incident.settings()
    paths = RunPaths(Path(out_root), incident.slug)
    progress = progress or (lambda fraction, message: None)
    engine = engine or LocalEngine()
    key = config_hash(incident.slug, config)
    fresh = not paths.outputs.parent.exists()
    try:
        return _run(incident, config, paths, key, resume, engine, progress)
    except BaseException:
        if fresh and paths.outputs.parent.is_dir() and not any(paths.outputs.parent.iterdir()):
            paths.outputs.parent.rmdir()  # a run that failed at once leaves no empty outputs/ behind
        raise


def _run(incident: Incident, config: Config, paths: RunPaths, key: str, resume: bool, engine, progress) -> dict:
    import torch

    threads.configure()  # torch, LiteRT and ONNX Runtime use the cores that are free now (or $AUTOPSY_THREADS)
    with _lock(paths):
        partial = _prepare_partial(paths, key, resume)
        ctx = RunContext(incident.slug, config, incident.profile_of(config), partial, engine)
        torch.manual_seed(config.seed)
        outputs: dict = {}
        timings = []
        total = sum(s.share for s in incident.stages)
        done = 0.0
        started = time.perf_counter()
        mode = "process" if getattr(engine, "name", "local") == "local" else "machine"  # Ray workers are other processes
        with carbon.measure_emissions(country=config.carbon_country, tracking_mode=mode) as measured, \
                _tidy_on_failure(partial, paths):
            for position, stage in enumerate(incident.stages):
                base, share = done / total, stage.share / total
                ctx.report = lambda f, m, base=base, share=share, name=stage.name: progress(
                    base + share * f, f"{name}: {m}" if m else name)
                ctx.report(0.0, stage.description)
                t0 = time.perf_counter()
                saved = partial / "stages" / f"{stage.name}.pkl"
                resumed = stage.save and saved.is_file()
                if resumed:
                    outputs[stage.name] = _load_stage(saved, stage.name)
                else:
                    outputs[stage.name] = stage.func(ctx, **{n: outputs[n] for n in stage.needs})
                    if stage.save:
                        _save_stage(saved, outputs[stage.name])
                timings.append({"stage": stage.name, "seconds": round(time.perf_counter() - t0, 2),
                                "resumed": resumed})
                done += stage.share
                _release_unread(outputs, incident.stages[position + 1:])
        findings = outputs[incident.stages[-1].name]
        if not isinstance(findings, Findings):
            raise RunError(f"{incident.slug}: the last stage {incident.stages[-1].name!r} must return Findings, "
                           f"got {type(findings).__name__}")
        if not isinstance(findings.metrics, incident.metrics):
            raise RunError(f"{incident.slug}: Findings.metrics is a {type(findings.metrics).__name__}, "
                           f"expected {incident.metrics.__name__}")
        record = build_record(
            paths, incident=incident, config=config, profile=ctx.profile, findings=findings,
            run_id=f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
            stages=timings, runtime_seconds=time.perf_counter() - started,
            engine=getattr(engine, "name", "local"), carbon=carbon.carbon_section(measured.record))
        record["threads"] = threads.current()
        _publish(paths, partial, record)
        progress(1.0, "done")
        return record


# -- the run's own folder ------------------------------------------------------------------------------


def _release_unread(outputs: dict, later) -> None:
    """Drop the outputs no later stage reads (a stage's photos or masks can hold a gigabyte);
    the last stage's own output is kept: it is the run's findings."""
    if not later:
        return
    read = {name for stage in later for name in stage.needs}
    unread = [n for n in outputs if n not in read]
    for name in unread:
        del outputs[name]
    if unread:
        threads.release_freed_memory()


def _prepare_partial(paths: RunPaths, key: str, resume: bool) -> Path:
    partial = paths.partial
    stamp = partial / "settings.sha"
    if partial.exists():
        same = stamp.is_file() and stamp.read_text().strip() == key
        if not (resume and same):
            shutil.rmtree(partial)
    (partial / "stages").mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return partial


class _tidy_on_failure:
    """If a run fails before any stage has finished, leave nothing behind: there is nothing to resume."""

    def __init__(self, partial: Path, paths: RunPaths):
        self.partial, self.paths = partial, paths

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        finished = any((self.partial / "stages").glob("*.pkl")) or any((self.partial / "shards").glob("*.parquet"))
        if kind is not None and not finished:
            shutil.rmtree(self.partial, ignore_errors=True)
        return False


def _save_stage(path: Path, value) -> None:
    tmp = path.with_suffix(".pkl.part")
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def _load_stage(path: Path, name: str):
    # Only the lab's own stage outputs, written by this runner into the run's folder, are read back.
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - our own file, written by _save_stage above
    except Exception as err:  # a torn or stale file: say which, and how to start over
        raise RunError(f"the saved output of stage {name!r} ({path}) cannot be read ({err}); "
                       "run again without --resume to start over") from err


def _publish(paths: RunPaths, partial: Path, record: dict) -> None:
    """Switch the finished run into place: figures folder first, then the metrics that name it."""
    shutil.rmtree(partial / "stages", ignore_errors=True)
    (partial / "settings.sha").unlink(missing_ok=True)
    write_json_atomic(partial / "run.json", {k: record[k] for k in ("slug", "run_id", "created", "profile")})
    old = paths.outputs.with_name(f".{paths.slug}.old")
    shutil.rmtree(old, ignore_errors=True)
    if paths.outputs.exists():
        paths.outputs.replace(old)
    partial.replace(paths.outputs)
    write_json_atomic(paths.metrics, record)
    shutil.rmtree(old, ignore_errors=True)


class _lock:
    """``outputs/.<slug>.lock`` holds the running process's id; a second run is refused with a message."""

    def __init__(self, paths: RunPaths):
        self.path = paths.lock

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                if holder and _alive(holder):
                    raise RunError(
                        f"another run of this incident is writing into {self.path.parent.parent} "
                        f"(process {holder['pid']} on {holder['host']}, started {holder['started']}); "
                        "wait for it to finish, or use another --out") from None
                self.path.unlink(missing_ok=True)  # left by a run that died
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}, f)
            return self
        raise RunError(f"could not take the run lock {self.path}; remove it if no run is going on")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's run: cannot check, assume it is going on
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True
