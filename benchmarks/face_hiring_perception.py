"""Time per face of the hiring incident's perception features, and the landmarker's region choice.

1. **Time**: :func:`incidents.face_hiring.perception.perceive` on FairFace crops (``--faces`` per
   perceived race x gender cell), 2 torch threads, batch 32: seconds per face for the whole call
   and for each model alone (median of ``--rounds``), and the process's peak resident memory.
2. **Region** (``--route-faces``, every 14th crop by default: 200): blendshapes from the fixed
   centred region (``face="crop"``, side ``CROP_REGION_SCALE`` x the crop) and from the bare crop,
   against MediaPipe's own route (BlazeFace, rotated 1.5x box) on the crops BlazeFace detects:
   Spearman correlation per blendshape and mean absolute difference; BlazeFace misses by group.

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/face_hiring_perception.py

Writes ``benchmarks/results/face_hiring_perception.json``. The machine is shared: the JSON records
the load average; absolute times are noisy, the per-model split less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from autopsy.assets import fetch
from autopsy.data import FAIRFACE_CROPS, load_image
from autopsy.models import face_landmarker as fl
from autopsy.models.keras_h5 import preprocess
from incidents.face_hiring import data, perception

RESULTS = Path(__file__).parent / "results" / "face_hiring_perception.json"
KEY_BLENDSHAPES = ("mouthSmileLeft", "mouthSmileRight", "jawOpen", "browInnerUp", "browDownLeft",
                   "eyeBlinkLeft", "mouthFrownLeft", "eyeSquintLeft")


def median_seconds(fn, rounds: int) -> float:
    fn()  # warm up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def timing(models, images, rounds: int) -> dict:
    n = len(images)
    x_emotion = preprocess(images)
    regions = [perception._crop_region(image) for image in images]

    def landmarks_only():
        with torch.inference_mode():
            for start in range(0, n, 32):
                chunk = zip(images[start:start + 32], regions[start:start + 32])
                x = torch.cat([fl.crop_to_tensor(image, region) for image, region in chunk])
                models.landmarker.landmarks(x)

    points = torch.rand(n, 478, 2) * 200

    def run(fn):
        return median_seconds(fn, rounds) / n

    with torch.inference_mode():
        parts = {
            "emotion_mini_xception": run(lambda: models.emotion(x_emotion)),
            "gender_mini_xception": run(lambda: models.gender(x_emotion)),
            "preprocess_mini_xception": run(lambda: preprocess(images)),
            "landmarks_with_region_sampling": run(landmarks_only),
            "blendshapes": run(lambda: models.landmarker.blendshapes(points)),
        }
    whole = run(lambda: perception.perceive(models, images, batch_size=32))
    return {"faces": n, "seconds_per_face": round(whole, 4),
            "seconds_per_face_by_part": {k: round(v, 4) for k, v in parts.items()},
            "estimated_minutes_for_2800_faces": round(whole * 2800 / 60, 1)}


def routes(models, rows) -> dict:
    images = [load_image(fetch(FAIRFACE_CROPS.asset(row))) for row in rows]
    reference = models.landmarker.analyse(images, roi="detect")
    found = reference.detected
    misses = Counter(row["race"] for row, ok in zip(rows, found) if not ok)
    boxes = [r.width / fl.ROI_SCALE for r in reference.regions if r is not None]
    out = {
        "faces": len(images),
        "blazeface_detected": int(found.sum()),
        "blazeface_misses_by_race": dict(sorted(misses.items())),
        "median_box_side_px_of_224": round(float(np.median(boxes)), 1),
        "median_abs_head_roll_degrees": round(float(np.degrees(np.median(
            [abs(r.rotation) for r in reference.regions if r is not None]))), 1),
        "detected_route_presence_below_0.5": int((reference.presence[found] < 0.5).sum()),
        "routes": {},
    }
    for label, scale in (("bare crop (scale 1.0)", 1.0), (f"centred region (scale {perception.CROP_REGION_SCALE})",
                                                           perception.CROP_REGION_SCALE)):
        regions = [fl.Region(im.width / 2, im.height / 2, scale * max(im.size), scale * max(im.size)) for im in images]
        result = models.landmarker.analyse(images, regions=regions)
        ours, ref = result.blendshapes[found], reference.blendshapes[found]
        out["routes"][label] = {
            "mean_abs_diff_51_named": round(float(np.abs(ours[:, 1:] - ref[:, 1:]).mean()), 4),
            "spearman": {name: round(float(spearmanr(ours[:, fl.BLENDSHAPE_NAMES.index(name)],
                                                     ref[:, fl.BLENDSHAPE_NAMES.index(name)])[0]), 3)
                         for name in KEY_BLENDSHAPES},
            "presence_below_0.5": int((result.presence < 0.5).sum()),
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=5, help="crops per perceived race x gender cell for timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--route-every", type=int, default=14, help="every Nth crop for the region comparison")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_start = os.getloadavg()[0]
    models = perception.PerceptionModels.load()
    images = [load_image(path) for path in data.candidates(limit_per_group=args.faces)["path"]]
    record = {
        "what": "seconds per face of incidents.face_hiring.perception.perceive (face='crop'), and the "
                "landmarker region compared with MediaPipe's detected route",
        "threads": 2,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} ({os.cpu_count()} CPUs visible)",
        "load_average_1min_at_start": round(load_start, 2),
        "timing": timing(models, images, args.rounds),
        "region": routes(models, FAIRFACE_CROPS.rows[::args.route_every]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "note": "shared 2-core machine; other jobs were running, so absolute times are noisy",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
