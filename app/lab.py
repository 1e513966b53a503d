"""What the viewer knows about the lab: the output root, the registered incidents, each run's status.

Plain functions (no Streamlit), so tests and benchmarks can use them directly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from autopsy import registry
from autopsy.runs import RunPaths


@dataclass(frozen=True)
class Lab:
    out: Path  # output root holding metrics/, outputs/, reports/
    incidents: dict = field(default_factory=dict)  # slug -> Incident
    error: str | None = None  # why discovery failed, if it did
    workshop: Path | None = None  # the workshop database (--workshop; default <out>/workshop.sqlite)

    def paths(self, slug: str) -> RunPaths:
        return RunPaths(self.out, slug)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options after ``--`` in ``streamlit run app/streamlit_app.py -- --out DIR``."""
    parser = argparse.ArgumentParser(prog="streamlit_app.py", add_help=False)
    parser.add_argument("--out", default=".", help="output root (default: the current directory)")
    parser.add_argument("--incidents", default="incidents", help="package to discover incidents in")
    parser.add_argument("--workshop", default=None, help="workshop database file (default: <out>/workshop.sqlite)")
    args, _ = parser.parse_known_args(argv)
    return args


def load(argv: list[str]) -> Lab:
    args = parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    workshop = Path(args.workshop).expanduser().resolve() if args.workshop else out / "workshop.sqlite"
    try:
        return Lab(out=out, incidents=registry.discover(args.incidents), workshop=workshop)
    except Exception as err:  # a broken incident package must not take the viewer down
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return Lab(out=out, error=f"Could not load the incidents from `{args.incidents}`: {detail}", workshop=workshop)


@dataclass(frozen=True)
class RunStatus:
    state: str  # "ready" | "not run" | "broken"
    message: str
    profile: str | None = None
    created: str | None = None


def run_status(lab: Lab, slug: str) -> RunStatus:
    """Whether the incident has a run under ``lab.out`` and what it was."""
    paths = lab.paths(slug)
    if not paths.metrics.is_file():
        return RunStatus("not run", f"Not run yet here (no {paths.metrics.relative_to(lab.out)})")
    try:
        run = json.loads(paths.metrics.read_text())
    except (OSError, ValueError) as err:
        return RunStatus("broken", f"The run record {paths.metrics} is unreadable: {err}")
    created = run.get("created")
    when = created
    try:
        when = dt.datetime.fromisoformat(created).strftime("%d %b %Y, %H:%M UTC")
    except (TypeError, ValueError):
        pass
    profile = run.get("profile", "?")
    return RunStatus("ready", f"Run found: {profile} profile, {when}", profile=profile, created=created)
