"""Throughput of the lab's MediaPipe models against LiteRT, the reference runtime, on the same inputs.

Ways to run each ``.tflite`` model, timed side by side in one run:

- ``reference``: LiteRT's own ``Interpreter`` on the unmodified file, as a MediaPipe user runs it
  (batch 16: one batched invoke where ``resize_tensor_input`` works, else 16 invokes: BlazeFace's
  RESHAPEs pin its batch to 1);
- ``lab``: the lab's module with its default engine for no-gradient passes (``engine="auto"``:
  LiteRT on the file adapted once per batch size, behind the module's NCHW torch interface;
  :class:`autopsy.models.tflite.LiteRTEngine`), called as the incidents call it, inside a
  ``torch.inference_mode`` region, on images as the lab's preprocessing makes them (channels-last);
- ``torch``: the torch port itself (``engine="torch"``), what gradients run through;
- ``lab_interpreter`` (batch 1): the lab engine's own interpreter called as LiteRT's users call it,
  so that ``interface_us_per_call`` isolates what the module's interface adds to LiteRT's invoke.

``lab_over_reference`` is the issue's ratio (>= 1.0 wanted). Every runtime gets the same threads
(``--threads``, default 2: LiteRT ``num_threads``, ``torch.set_num_threads``). Inputs: FairFace
photos preprocessed as the wrappers do (random points for the blendshape model). Also records the
largest difference of each engine from the reference, and the machine's load.

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/mediapipe_throughput.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from autopsy import threads
from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import face_landmarker as fl
from autopsy.models import mediapipe as mp
from autopsy.models.tflite import load_tflite
from timing import ROUND_SECONDS, ROUNDS, rates, ratio  # noqa: E402 - benchmarks/ is the script's folder

BATCHES = (1, 16)


def reference_runner(data: bytes, batch: np.ndarray, n_threads: int):
    """LiteRT on the unmodified file: a callable giving its outputs for ``batch``, and how it batched."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=n_threads)
    index = interpreter.get_input_details()[0]["index"]
    mode = "single invoke"
    if len(batch) > 1:
        try:
            interpreter.resize_tensor_input(index, list(batch.shape), strict=False)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, batch)
            interpreter.invoke()
            if any(interpreter.get_tensor(d["index"]).shape[0] != len(batch) for d in interpreter.get_output_details()):
                raise ValueError("a RESHAPE in the graph pins the batch size to 1")
            mode = "resize_tensor_input (one batched invoke)"
        except Exception:  # noqa: BLE001 - fixed-batch model
            interpreter = Interpreter(model_content=data, num_threads=n_threads)
            mode = f"{len(batch)} invokes (the file's RESHAPEs pin the batch to 1)"
    interpreter.allocate_tensors()
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def run_one(x):
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return [interpreter.get_tensor(o) for o in outputs]

    if "invokes" in mode:
        def run():
            parts = [run_one(image[None]) for image in batch]
            # outputs with a batch axis of 1 are joined along it; those without one (blendshapes) are stacked
            return [np.concatenate(p) if p[0].shape[:1] == (1,) else np.stack(p) for p in zip(*parts)]
    else:
        def run():
            return run_one(batch)
    return run, mode


def models() -> dict:
    """name -> (file bytes, inputs maker(n) giving an NCHW/ND torch tensor)."""
    photos = [load_image(fetch(FAIRFACE_CONTEXT.asset(row))) for row in FAIRFACE_CONTEXT.rows[:16]]
    out = {}
    for stem, (size, letterbox, value_range) in mp.PREPROCESSING.items():
        tensors = torch.cat([mp.image_to_tensor(p, size, keep_aspect_ratio=letterbox, value_range=value_range)[0]
                             for p in photos])
        out[stem] = (fetch(mp.ASSETS[stem]).read_bytes(), tensors)
    crops = torch.cat([mp.image_to_tensor(p.crop((112, 90, 336, 314)), (192, 192), keep_aspect_ratio=False)[0]
                       for p in photos])
    out["face_landmarks_detector"] = (fl.read_member(fl.FACE_LANDMARKER_V2, "face_landmarks_detector.tflite"), crops)
    points = torch.from_numpy(np.random.default_rng(0).uniform(60, 200, (16, 146, 2)).astype(np.float32))
    out["face_blendshapes"] = (fl.read_member(fl.FACE_LANDMARKER_V2, "face_blendshapes.tflite"), points)
    return out


def to_reference_layout(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if a.ndim == 4 else a)


def bare_interpreter(module, x: torch.Tensor):
    """The module's LiteRT interpreter called directly (set_tensor, invoke, get_tensor) on ``x``."""
    engine = module.__dict__["_reference"]
    interpreter, (index,) = engine._runner(len(x))
    array, outputs = to_reference_layout(x), [engine.index[n] for n in module.output_names]

    def run():
        interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(o) for o in outputs]
    return run


def measure(name: str, data: bytes, tensors: torch.Tensor, n_threads: int) -> dict:
    """The runtimes on one model, batch 1 and 16: rates, ratios and differences from the reference."""
    lab = load_tflite(data, name=name, engine="auto")
    port = load_tflite(data, name=name, engine="torch")
    entry = {}
    for batch_size in BATCHES:
        x = tensors[:batch_size]  # as the lab's preprocessing makes it: images channels-last in memory
        run_reference, mode = reference_runner(data, to_reference_layout(x), n_threads)

        def run_lab():
            return lab(x)

        def run_torch():
            return port(x)

        reference = run_reference()
        diffs = {}
        for engine, fn in (("lab", run_lab), ("torch", run_torch)):
            outs = fn()
            outs = outs if isinstance(outs, tuple) else (outs,)
            diffs[engine] = max(float(np.abs(to_reference_layout(o) - r).max()) for o, r in zip(outs, reference))
        runtimes = {"reference": run_reference, "lab": run_lab, "torch": run_torch}
        if batch_size == 1:  # the lab's own interpreter, called as LiteRT's users call it: what the interface costs
            runtimes["lab_interpreter"] = bare_interpreter(lab, x)
        gc.collect()
        samples = rates(runtimes, batch_size)
        timed = {k: float(np.median(v)) for k, v in samples.items()}
        entry[f"batch_{batch_size}"] = {
            **{f"{k}_images_per_s": round(v, 1) for k, v in timed.items()},
            "lab_over_reference": ratio(samples["lab"], samples["reference"]),
            "torch_over_reference": ratio(samples["torch"], samples["reference"]),
            "reference_batching": mode,
            "lab_engine": lab.engine,
            "max_abs_diff_from_reference": diffs,
        }
        if batch_size == 1:
            entry["batch_1"]["lab_interpreter_over_reference"] = ratio(samples["lab_interpreter"], samples["reference"])
            per_call = 1e6 / np.asarray(samples["lab"]) - 1e6 / np.asarray(samples["lab_interpreter"])
            entry["batch_1"]["interface_us_per_call"] = {
                "median": round(float(np.median(per_call)), 1),
                "range": [round(float(per_call.min()), 1), round(float(per_call.max()), 1)], "n_rounds": len(per_call),
                "what": "the lab module's call minus a bare call of its own interpreter, paired rounds"}
        del run_reference
    return entry


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    threads.configure(args.threads)
    load_start = os.getloadavg()
    results = {}
    with torch.inference_mode():  # one region around all passes, as the incidents run them
        for name, (data, tensors) in models().items():
            results[name] = measure(name, data, tensors, args.threads)
            print(name, json.dumps(results[name]), flush=True)
    return {
        "what": "images/s of the lab's MediaPipe models: default engine (LiteRT behind the module) and torch "
                "port, beside LiteRT on the unmodified file",
        "threads": args.threads,
        "torch": torch.__version__,
        "litert": _version("ai-edge-litert"),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} CPUs visible)".strip(),
        "inputs": "first 16 FairFace-context photos, preprocessed as the wrappers do (Face Landmarker: a central "
                  "crop; blendshapes: random points)",
        "timing": f"median of {ROUNDS} rounds of >= {ROUND_SECONDS} s per runtime, runtimes alternating round by round",
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
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
