"""Fair under load: an incident's quick profile alone, then beside one CPU-bound process.

Runs ``autopsy run SLUG --params params.yaml`` in a child process twice: on the quiet machine,
then while a busy loop (one Python process spinning on one core) runs beside it, and records the
ratio of the two wall times. A fair share of a 2-core machine with one competitor is at most 2x;
the lab's target is 1.6x. The run sizes its thread pools once, when it starts, to the cores that
are free (:mod:`autopsy.threads`); ``--threads N`` fixes them instead (``AUTOPSY_THREADS=N``), to
measure the old behaviour (``--threads 2``: every pool as wide as the machine).

    AUTOPSY_MIRROR=../shared/mirror python benchmarks/under_load.py twitter_crop

Writes ``benchmarks/results/under_load_<slug>.json`` (``under_load_<slug>_threads<N>.json`` with
``--threads``), with the machine's load before each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"


def timed_run(slug: str, params: str, env: dict) -> dict:
    """Wall time of one quick-profile run in a child process, and the threads it chose."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "autopsy.cli", "run", slug, "--params", params, "--out", out],
                                capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.perf_counter() - started
        record = json.loads((Path(out) / "metrics" / f"{slug}.json").read_text()) if result.returncode == 0 else {}
    if result.returncode != 0:
        sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
    return {"wall_seconds": round(wall, 1), "load_average_before": [round(x, 2) for x in load],
            "threads": record.get("threads"), "stages": record.get("stages")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slug")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--threads", type=int, help="fix the thread pools (AUTOPSY_THREADS) instead of following free cores")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "AUTOPSY_THREADS"}
    if args.threads:
        env["AUTOPSY_THREADS"] = str(args.threads)
    quiet = timed_run(args.slug, args.params, env)
    print(f"quiet: {quiet['wall_seconds']} s", flush=True)
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(2.0)  # the competitor is running before the run looks at the machine
        loaded = timed_run(args.slug, args.params, env)
    finally:
        busy.kill()
        busy.wait()
    print(f"beside a busy loop: {loaded['wall_seconds']} s", flush=True)
    ratio = loaded["wall_seconds"] / quiet["wall_seconds"]
    record = {
        "slug": args.slug, "profile": "quick", "competitor": f"one CPU-bound process: python -c {BUSY_LOOP!r}",
        "thread_policy": f"fixed: AUTOPSY_THREADS={args.threads}" if args.threads else "free cores at run start (autopsy.threads)",
        "quiet": quiet, "beside_busy_loop": loaded, "ratio": round(ratio, 2), "target_ratio": 1.6,
        "fair_share_ratio": round(os.cpu_count() / max(1, os.cpu_count() - 1), 2),
        "cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    name = f"under_load_{args.slug}" + (f"_threads{args.threads}" if args.threads else "") + ".json"
    destination = REPO / "benchmarks" / "results" / name
    destination.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("quiet", "beside_busy_loop")}, indent=2))


if __name__ == "__main__":
    main()
