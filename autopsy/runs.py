"""Where a run's outputs go, and the metrics record every investigation writes.

Layout under an output root (default: the current directory, as the DVC pipeline uses it)::

    metrics/<slug>.json      numbers with intervals and n, tables, provenance, parameters
    outputs/<slug>/          figures and per-trial files
    reports/<slug>.html      the exported story
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import autopsy
from autopsy.assets import Asset


@dataclass(frozen=True)
class RunPaths:
    root: Path
    slug: str

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / f"{self.slug}.json"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs" / self.slug

    @property
    def report(self) -> Path:
        return self.root / "reports" / f"{self.slug}.html"

    @property
    def partial(self) -> Path:
        """The folder a run writes into until it succeeds (see :mod:`autopsy.runner`)."""
        return self.root / "outputs" / f".{self.slug}.partial"

    @property
    def lock(self) -> Path:
        return self.root / "outputs" / f".{self.slug}.lock"


def provenance(assets: list[Asset]) -> list[dict]:
    """One row per artefact; files of one image set fold into a row with a combined SHA-256.

    A set's SHA-256 is the hash of its sorted "sha256  mirror_path" lines, so it changes if
    any file or the membership changes.
    """
    groups: dict[str, list[Asset]] = defaultdict(list)
    for asset in assets:
        groups[asset.name.split("/")[0] if "/" in asset.name else asset.name].append(asset)
    rows = []
    for name, members in groups.items():
        first = members[0]
        if len(members) == 1 and "/" not in first.name:
            sha, url = first.sha256, first.url
        else:
            lines = sorted(f"{a.sha256}  {a.mirror_path}" for a in members)
            sha = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            url = first.url.rsplit("/", 1)[0] + "/"
        rows.append({
            "name": name, "count": len(members), "sha256": sha, "url": url,
            "licence": first.licence, "citation": first.citation, "source_page": first.source_page,
        })
    return rows


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return _jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False))
    tmp.replace(path)


def build_record(paths: RunPaths, *, incident, config, profile: str, findings, run_id: str, stages: list,
                 runtime_seconds: float, engine: str = "local", carbon=None) -> dict:
    """The run record written to ``metrics/<slug>.json``: numbers, tables, figures, provenance, timings.

    The perceived-labels note and the run time join the metrics. The folders of a bring-your-own run
    (``images``, ``labels``) are left out of the recorded parameters: they are the user's local paths.
    """
    from autopsy.data import PERCEIVED_LABELS_NOTE

    metrics = {**_jsonable(findings.metrics), "perceived_labels_note": PERCEIVED_LABELS_NOTE,
               "runtime_seconds": round(runtime_seconds, 1)}
    return _jsonable({
        "slug": paths.slug,
        "run_id": run_id,
        "title": incident.title,
        "profile": profile,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lab_version": autopsy.__version__,
        "git_commit": git_commit(),
        "engine": engine,
        "params": config.to_dict(),
        "provenance": provenance(list(incident.assets(config))),
        "metrics": metrics,
        "tables": dict(findings.tables),
        "figures": dict(findings.figures),
        "summary": list(findings.summary),
        "stages": stages,
        "carbon": carbon,
    })


class MixedRunError(ValueError):
    """The figures folder and the metrics file come from different runs."""


def check_outputs_belong(run: dict, outputs: Path) -> None:
    """Refuse to render a report whose figures folder was written by another run than its metrics."""
    stamp = Path(outputs) / "run.json"
    if "run_id" not in run:
        return  # a record from before runs carried ids: nothing to compare
    try:
        folder = json.loads(stamp.read_text())
    except (OSError, ValueError):
        raise MixedRunError(f"{outputs} does not say which run wrote it (no readable run.json); "
                            f"run `autopsy run {run.get('slug', 'SLUG')}` again") from None
    if folder.get("run_id") != run["run_id"]:
        raise MixedRunError(f"{outputs} holds run {folder.get('run_id')} but the metrics are from run "
                            f"{run['run_id']}; the two were mixed (an interrupted copy?): run "
                            f"`autopsy run {run.get('slug', 'SLUG')}` again")
