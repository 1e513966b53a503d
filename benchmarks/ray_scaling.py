"""Images per second of a real per-image pass against the number of Ray workers, beside the local engine.

The pass is what a large Twitter-cropping audit does per photo: read the photo from its path inside
the worker, Twitter's decode-and-resize (``model.preprocess(path, resize=True)``), the FastGaze
network (the port of ``fastgaze.vxm``), the salient point; rows go to Parquet shards through
:func:`autopsy.shards.map_shards`, the path a 100,000-photo audit takes. Engines: local with one
torch thread per item (the default, the same arithmetic as a Ray worker), local with torch's own
thread count, Ray with 1 and 2 workers (one thread each) on a local instance of all cores.

Each configuration makes a warm-up pass (worker processes started, files in the page cache), then
``--rounds`` passes over ``--images`` FairFace-context photos, the configurations interleaved
round by round so that a burst of load from other work on the machine hits each of them. The
JSON keeps every round, the median rate with its min-max range, the 1-minute load average around
each round, this process's CPU seconds per photo for the local engine (the per-item cost that
does not depend on how busy the machine is), and whether every configuration found the same
salient cells (they must: the same arithmetic).

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/ray_scaling.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from autopsy.assets import fetch
from autopsy.contract import Config
from autopsy.data import FAIRFACE_CONTEXT
from autopsy.engines import LocalEngine
from autopsy.ray_engine import RayEngine
from autopsy.runner import RunContext
from autopsy.shards import map_shards
from incidents.twitter_crop import model

OUT = Path(__file__).parent / "results" / "ray_scaling.json"


def salient(net, path: str) -> dict:
    """One photo: the binary's resize, the network, the best cell (what the crop is centred on)."""
    with torch.inference_mode():
        grid = net(model.preprocess(path, resize=True))[0, 0].numpy()
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return {"path": path, "row": int(row), "col": int(col), "peak": float(grid.max())}


def photo_paths(n: int) -> list[str]:
    assets = FAIRFACE_CONTEXT.assets()
    if n > len(assets):
        raise ValueError(f"--images {n}: the FairFace-context set has {len(assets)} photos")
    return [str(fetch(a)) for a in assets[:n]]


def timed(engine, paths: list[str], shard_size: int) -> tuple[float, float, np.ndarray]:
    """Wall and this process's CPU seconds for one sharded pass over ``paths`` (fresh run folder),
    and the salient cells found."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext("bench", Config(), "bench", Path(tmp), engine)
        wall, cpu = time.perf_counter(), time.process_time()
        done = map_shards(ctx, "salient", salient, paths, setup=model.build_model, shard_size=shard_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, done.table[["row", "col", "peak"]].to_numpy()


def summary(name: str, workers: int, runs: list, loads: list, n: int) -> dict:
    rates = [n / wall for wall, _, _ in runs]
    out = {"engine": name, "workers": workers, "images": n, "rounds_seconds": [round(w, 2) for w, _, _ in runs],
           "images_per_second": {"median": round(statistics.median(rates), 3), "min": round(min(rates), 3),
                                 "max": round(max(rates), 3), "n_rounds": len(runs)},
           "wall_seconds_per_image_per_worker": round(workers / statistics.median(rates), 4),
           "load_average_1min_around_rounds": [[round(a, 2), round(b, 2)] for a, b in loads]}
    if name.startswith("local"):  # the whole pass runs in this process: its CPU time is the per-item cost
        out["cpu_seconds_per_image"] = round(statistics.median(cpu / n for _, cpu, _ in runs), 4)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192, help="photos per pass (default 192)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    paths = photo_paths(args.images)
    ray_engine = RayEngine(num_cpus=cores, object_store_memory=500 * 1024**2)
    configs = [("local, 1 thread", LocalEngine(threads=1), 1),
               (f"local, torch default ({torch.get_num_threads()} threads)", LocalEngine(threads=None), 1),
               *[(f"ray, {w} worker{'s' * (w > 1)}", ray_engine, w) for w in sorted({1, 2, cores})]]
    runs = {name: [] for name, _, _ in configs}
    loads = {name: [] for name, _, _ in configs}
    try:
        for name, engine, workers in configs:  # warm-up: workers started, the model file and photos cached
            ray_engine.num_workers = workers
            timed(engine, paths[: 4 * workers], args.shard_size)
        for _ in range(args.rounds):  # rounds interleaved, so a burst of load on the machine hits every engine
            for name, engine, workers in configs:
                ray_engine.num_workers = workers
                before = os.getloadavg()[0]
                runs[name].append(timed(engine, paths, args.shard_size))
                loads[name].append((before, os.getloadavg()[0]))
                print(f"{name:<36} {len(paths) / runs[name][-1][0]:6.2f} images/s", flush=True)
    finally:
        ray_engine.close()
    rows = [summary(name, workers, runs[name], loads[name], len(paths)) for name, _, workers in configs]
    reference = runs["local, 1 thread"][0][2]
    same = {name: all(np.array_equal(cells, reference) for _, _, cells in found) for name, found in runs.items()}
    rate = {r["engine"]: r["images_per_second"]["median"] for r in rows}
    record = {
        "what": "images/s of a per-photo FastGaze pass (read from path, binary resize, network, salient cell) "
                "through autopsy.shards.map_shards, by engine and number of Ray workers",
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": cores, "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "ray": ray.__version__,
                    "note": "a machine shared with other work; the load averages say how busy it was"},
        "settings": {"images": args.images, "rounds": args.rounds, "shard_size": args.shard_size,
                     "photos": "FairFace-context, 448x448 (CC BY 4.0)"},
        "results": rows,
        "same_salient_cells_as_local_1_thread": same,
        "speedup_2_workers_vs_1": round(rate["ray, 2 workers"] / rate["ray, 1 worker"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}; identical results: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
