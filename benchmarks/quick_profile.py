"""Wall time and peak memory of an incident's quick profile on this machine.

Runs ``autopsy run SLUG --params params.yaml`` in a child process (so imports count, as they
do for a user) with torch limited to the machine's cores, and records the wall time, the peak
resident memory of the child and the machine's load, into benchmarks/results/quick_profile_<slug>.json.

    AUTOPSY_MIRROR=../shared/mirror python benchmarks/quick_profile.py twitter_crop [--keep-metrics FILE]
"""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slug")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--keep-metrics", metavar="FILE", help="also copy the run's metrics JSON here (to compare runs)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "autopsy.cli", "run", args.slug, "--params", args.params,
                                 "--out", out], capture_output=True, text=True)
        wall = time.perf_counter() - started
        metrics = Path(out) / "metrics" / f"{args.slug}.json"
        run = json.loads(metrics.read_text()) if metrics.is_file() else {}
        if args.keep_metrics and metrics.is_file():
            Path(args.keep_metrics).write_text(metrics.read_text())
    if result.returncode != 0:
        sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = {
        "slug": args.slug, "profile": "quick", "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak_kib / 1024),
        "cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "machine": platform.machine(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": run.get("threads"), "stages": {s["stage"]: s["seconds"] for s in run.get("stages", [])},
        "progress_log": result.stderr.strip().splitlines()[-14:],
    }
    destination = REPO / "benchmarks" / "results" / f"quick_profile_{args.slug}.json"
    destination.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "progress_log"}, indent=2))


if __name__ == "__main__":
    main()
