"""Wall time and peak memory of the zoom_matting quick profile on two cores.

Runs ``investigate`` in this process with torch limited to 2 threads, times it, reads the peak
resident memory (``resource.getrusage``) and the CPU time, records the machine's load before and
after (the lab's machines are shared: read wall time beside the load and the CPU time), and writes
benchmarks/results/zoom_quick_profile.json.

    AUTOPSY_MIRROR=../shared/mirror python benchmarks/zoom_quick_profile.py [--out DIR]
"""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output root (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from incidents.zoom_matting import INCIDENT

    steps = []
    started = time.perf_counter()

    def progress(fraction, message):
        steps.append({"t": round(time.perf_counter() - started, 1), "fraction": round(fraction, 2), "step": message})
        print(f"[{steps[-1]['t']:7.1f}s] {message}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    cpu_before = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        record = INCIDENT.investigate(Path(args.out or tmp), {"profile": "quick"}, progress=progress)
        wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "slug": "zoom_matting", "profile": "quick", "torch_threads": args.threads,
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak_kib / 1024),
        "cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "n_photos": record["metrics"]["n_photos"],
        "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "steps": steps,
    }
    destination = REPO / "benchmarks" / "results" / "zoom_quick_profile.json"
    destination.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
