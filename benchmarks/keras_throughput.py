"""Throughput of the lab's mini-Xception ports against Keras, their reference runtime, side by side.

The hiring incident's expression and perceived-gender models (Arriaga, Valdenegro-Toro & Plöger
2017, arXiv 1710.07557) are Keras HDF5 files; ``autopsy.models.keras_h5`` reads them into torch.
Keras 3 loading the same file is the reference (as in ``tests/test_keras_h5.py``). For batch 1 and
16, on the same preprocessed FairFace faces, it times:

- ``reference``: Keras, as its users run inference — the faster of ``model.predict_on_batch(x)``
  and ``model(x, training=False)`` (recorded which);
- ``lab``: the port, ``model(x)`` in ``torch.inference_mode``, as the incident calls it.

``lab_over_reference`` is the issue's ratio (>= 1.0 wanted). Both get the same threads
(``--threads``, default 2); median of short rounds, runtimes alternating round by round. Also records
the largest difference between the two outputs and the machine's load.

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/keras_throughput.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from autopsy import threads
from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CONTEXT, load_image
from autopsy.models import keras_h5 as k

from timing import ROUND_SECONDS, ROUNDS, rates, ratio  # one timing rule for every port

BATCHES = (1, 16)


def faces(n: int = 16) -> list:
    """Central crops of the first FairFace-context photos (where the face is, at that scale)."""
    return [load_image(fetch(FAIRFACE_CONTEXT.asset(row))).crop((112, 90, 336, 314)) for row in FAIRFACE_CONTEXT.rows[:n]]


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    threads.configure(args.threads)
    load_start = os.getloadavg()
    photos = faces()
    results = {}
    for task, build in (("emotion", k.emotion_mini_xception), ("gender", k.gender_mini_xception)):
        lab = build()
        reference_model = keras.models.load_model(str(fetch(lab.weights.asset)), compile=False)
        x_all = k.preprocess(photos, lab.weights)
        entry = {}
        for batch_size in BATCHES:
            x = x_all[:batch_size].contiguous()
            nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())

            def run_lab():
                with torch.inference_mode():
                    return lab(x)

            ways = {"predict_on_batch": lambda: reference_model.predict_on_batch(nhwc),
                    "call(training=False)": lambda: reference_model(nhwc, training=False)}
            diff = float(np.abs(run_lab().numpy() - np.asarray(ways["predict_on_batch"]())).max())
            gc.collect()
            samples = rates({**ways, "lab": run_lab}, batch_size)
            timed = {k: float(np.median(v)) for k, v in samples.items()}
            fastest = max(ways, key=timed.get)
            entry[f"batch_{batch_size}"] = {
                "lab_images_per_s": round(timed["lab"], 1),
                "reference_images_per_s": round(timed[fastest], 1),
                "reference_way": fastest,
                "reference_ways_images_per_s": {w: round(timed[w], 1) for w in ways},
                "lab_over_reference": ratio(samples["lab"], samples[fastest]),
                "max_abs_diff_probabilities": diff,
            }
        results[f"{task}_mini_xception"] = entry
        print(task, json.dumps(entry), flush=True)
    return {
        "what": "images/s of the lab's mini-Xception ports (torch) beside Keras 3 loading the same HDF5 file",
        "threads": args.threads,
        "torch": torch.__version__,
        "keras": version("keras"),
        "keras_backend": keras.backend.backend(),
        "machine": f"{platform.machine()} ({os.cpu_count()} CPUs visible)",
        "inputs": "central crops of the first 16 FairFace-context photos, preprocessed by keras_h5.preprocess",
        "timing": f"median of {ROUNDS} rounds of >= {ROUND_SECONDS} s per runtime, runtimes alternating round by round",
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "results": results,
    }


if __name__ == "__main__":
    report = main()
    out = Path(__file__).parent / "results" / "keras_throughput.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
