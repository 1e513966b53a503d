"""Throughput of the torch ports of the MediaPipe models against LiteRT, on the same inputs.

Both runtimes get 2 threads (``torch.set_num_threads(2)``, LiteRT ``num_threads=2``, XNNPACK on).
Inputs are FairFace-context photos preprocessed as the wrappers do. Batch 16 for LiteRT uses
``resize_tensor_input`` to a batch of 16 where the model gives batch-16 outputs, else 16
sequential invokes (BlazeFace's RESHAPEs pin the batch to 1); the JSON says which. Also records the max abs difference between the two on these inputs.

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/mediapipe_throughput.py
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import mediapipe as mp
from autopsy.models.tflite import load_tflite

THREADS = 2
ROUND_SECONDS = 0.4


def rate(fn, images: int, rounds: int = 5) -> float:
    """Median images/s over short rounds (the machine is shared; the median drops load bursts).

    Each runtime is timed on its own, with the other's threads gone: XNNPACK's and torch's
    worker threads both spin while waiting, and interleaving them in one process on 2 cores
    slows torch by an order of magnitude.
    """
    fn()  # warm up
    samples = []
    for _ in range(rounds):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < ROUND_SECONDS or runs < 2:
            fn()
            runs += 1
        samples.append(images * runs / (time.perf_counter() - start))
    return float(np.median(samples))


def litert_runner(path: Path, batch: np.ndarray):
    """A callable running ``batch`` (NHWC) through LiteRT, and how batching was done."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=THREADS)
    index = interpreter.get_input_details()[0]["index"]
    mode = "single invoke"
    if len(batch) > 1:
        try:
            interpreter.resize_tensor_input(index, list(batch.shape), strict=False)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, batch)
            interpreter.invoke()
            batched = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
            if any(out.shape[0] != len(batch) for out in batched):
                raise ValueError("a RESHAPE in the graph pins the batch size to 1")
            mode = "resize_tensor_input (one batched invoke)"
        except Exception:  # fixed-batch model (reshape constants etc.)
            interpreter = Interpreter(model_path=str(path), num_threads=THREADS)
            mode = "16 sequential invokes (resize_tensor_input unusable: batch pinned by RESHAPE)"
    interpreter.allocate_tensors()
    outputs = [d["index"] for d in interpreter.get_output_details()]

    if "sequential" in mode:
        def run():
            results = []
            for image in batch:
                interpreter.set_tensor(index, image[None])
                interpreter.invoke()
                results.append([interpreter.get_tensor(o) for o in outputs])
            return [np.concatenate(parts) for parts in zip(*results)]
    else:
        def run():
            interpreter.set_tensor(index, batch)
            interpreter.invoke()
            return [interpreter.get_tensor(o) for o in outputs]
    return run, mode


def main() -> dict:
    torch.set_num_threads(THREADS)
    photos = [load_image(fetch(FAIRFACE_CONTEXT.asset(row))) for row in FAIRFACE_CONTEXT.rows[:16]]
    results = {}
    for stem, (size, letterbox, value_range) in mp.PREPROCESSING.items():
        path = fetch(mp.ASSETS[stem])
        module = load_tflite(path)
        tensors = torch.cat([mp.image_to_tensor(p, size, keep_aspect_ratio=letterbox, value_range=value_range)[0]
                             for p in photos])
        entry = {}
        for batch_size in (1, 16):
            x = tensors[:batch_size].contiguous()
            nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
            run_litert, mode = litert_runner(path, nhwc)

            def run_torch():
                with torch.inference_mode():
                    return module(x)

            ours = run_torch()
            ours = ours if isinstance(ours, tuple) else (ours,)
            ref = run_litert()
            diff = max(float(np.abs((o.permute(0, 2, 3, 1) if o.dim() == 4 else o).numpy() - r).max())
                       for o, r in zip(ours, ref))
            litert_ips = rate(run_litert, batch_size)
            del run_litert
            gc.collect()
            torch_ips = rate(run_torch, batch_size)
            entry[f"batch_{batch_size}"] = {
                "torch_images_per_s": round(torch_ips, 1),
                "litert_images_per_s": round(litert_ips, 1),
                "torch_over_litert": round(torch_ips / litert_ips, 3),
                "litert_batching": mode,
                "max_abs_diff": diff,
            }
        results[stem] = entry
        print(stem, json.dumps(entry))
    return {
        "what": "images/s of the torch ports (autopsy.models.tflite) vs LiteRT (XNNPACK) on the same inputs",
        "threads": THREADS,
        "torch": torch.__version__,
        "litert": _version("ai-edge-litert"),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} CPUs visible)".strip(),
        "inputs": "first 16 FairFace-context photos, preprocessed as the wrappers do",
        "timing": f"median of 5 rounds of >= {ROUND_SECONDS} s; LiteRT timed first, then torch with the interpreter freed",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "note": "shared 2-core machine; other jobs were running, so absolute rates are noisy, ratios less so",
        "results": results,
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    report = main()
    out = Path(__file__).parent / "results" / "mediapipe_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
