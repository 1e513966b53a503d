"""Where a run's outputs go, and the metrics record every investigation writes.

Layout under an output root (default: the current directory, as the DVC pipeline uses it)::

    metrics/<slug>.json      numbers with intervals and n, tables, provenance, parameters
    outputs/<slug>/          figures and per-trial files
    reports/<slug>.html      the exported story
"""

from __future__ import annotations

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


def start_run(slug: str, out_dir, params: dict, progress=None):
    """The opening of every investigation: output folders made, torch seeded from ``params["seed"]``.

    Returns the run's paths and a progress callback (``progress(fraction, message)``; silent if None).
    """
    import torch

    paths = RunPaths(Path(out_dir), slug)
    paths.outputs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(params["seed"])
    return paths, progress or (lambda fraction, message: None)


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
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_run(paths: RunPaths, *, title: str, profile: str, params: dict, metrics: dict,
              tables: dict | None = None, assets: list[Asset] = (), figures: dict | None = None,
              started: float | None = None) -> dict:
    """Write ``metrics/<slug>.json`` atomically and return the record.

    Adds the perceived-labels note and, given ``started`` (a ``time.perf_counter()`` value), the
    run time to ``metrics``. The folders of a bring-your-own run (``images``, ``labels``) are
    left out of the recorded parameters: they are the user's local paths.
    """
    from autopsy.data import PERCEIVED_LABELS_NOTE

    metrics = {**metrics, "perceived_labels_note": PERCEIVED_LABELS_NOTE}
    if started is not None:
        metrics["runtime_seconds"] = round(time.perf_counter() - started, 1)
    params = {k: v for k, v in params.items() if k not in ("images", "labels")}
    record = _jsonable({
        "slug": paths.slug,
        "title": title,
        "profile": profile,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lab_version": autopsy.__version__,
        "git_commit": git_commit(),
        "params": params,
        "provenance": provenance(list(assets)),
        "metrics": metrics,
        "tables": tables or {},
        "figures": figures or {},
    })
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.metrics.with_suffix(".json.part")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False))
    tmp.replace(paths.metrics)
    return record
