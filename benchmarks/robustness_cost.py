"""What each probe of ``autopsy.robustness`` costs on the real Twitter cropping model.

The model is Twitter's ``fastgaze.vxm`` (Theis et al. 2018, arXiv 1801.05787) as ported in
``incidents.twitter_crop.model``; the inputs are pairs of FairFace photos (Kärkkäinen & Joo 2021,
CC BY 4.0; from the mirror), each photo resized to SIDE x SIDE and joined side by side, as in the
paired-crop protocol, at a small size (a 64 x 128 canvas, a 4 x 8 saliency grid). The decision is
which photo holds the salient point: ``region_max_margin`` of the left half against the right
half. Every attack perturbs only the photo that currently wins (a mask), in 0-255 RGB pixels.

For each probe it records the wall time per pair, the forward and backward passes per pair (images
through the network, counted by the toolkit), and, for context only (n is tiny), the success rate
with its Wilson interval and the median budget with its bootstrap interval. It is a cost
benchmark: nothing here measures a disparity between groups.

Run (a minute or two; 2 threads)::

    AUTOPSY_MIRROR=/work/shared/mirror PYTHONPATH=. python benchmarks/robustness_cost.py

Writes ``benchmarks/results/robustness_cost.json``. Timings on a shared machine vary; the JSON
records the load average at start and end.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autopsy import robustness as rb
from autopsy.data import FAIRFACE_CONTEXT, load_image_set
from incidents.twitter_crop import model as fg

RESULTS = Path(__file__).parent / "results"
SIDE = 64  # each photo of a pair, in pixels
THREADS = 2
LINF_BUDGETS = (0.25, 0.5, 1, 2, 4, 8, 16)  # 0-255 pixel levels
L2_BUDGETS = (16, 32, 64, 128, 256, 512)  # 0-255 pixel levels, over the whole photo (3 x 64 x 64 values)


def pairs() -> tuple[np.ndarray, list[str]]:
    """(N, 3, SIDE, 2 * SIDE) RGB canvases in 0-255 from consecutive FairFace photos, one per race x gender."""
    photos = load_image_set(FAIRFACE_CONTEXT, limit_per_group=1)
    rgb = [np.asarray(Image.open(p).convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32)
           for p in photos["path"]]
    n = len(rgb) // 2 * 2
    canvases = [np.concatenate([rgb[i], rgb[i + 1]], axis=1).transpose(2, 0, 1) for i in range(0, n, 2)]
    return np.stack(canvases), [str(f) for f in photos["file"][:n]]


def pass_times(forward, x: np.ndarray, repeats: int = 5) -> dict:
    """Median milliseconds per pair of one forward pass and one forward + backward pass, batch of all pairs."""
    batch = torch.from_numpy(x)
    forward_ms, both_ms = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            forward(batch)
        forward_ms.append(1000 * (time.perf_counter() - start) / len(x))
        grad = batch.clone().requires_grad_(True)
        start = time.perf_counter()
        forward(grad).sum().backward()
        both_ms.append(1000 * (time.perf_counter() - start) / len(x))
    return {"forward_ms_per_pair": statistics.median(forward_ms),
            "forward_backward_ms_per_pair": statistics.median(both_ms), "repeats": repeats}


def main() -> None:
    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()
    net = fg.build_model()  # the pinned Twitter file
    forward = lambda rgb: net(fg.to_network_input(rgb))  # noqa: E731  (0-255 RGB -> the network's input)
    x, files = pairs()
    n = len(x)
    with torch.no_grad():
        out = forward(torch.from_numpy(x))
    left = np.zeros(out.shape[-2:], bool)  # grid cells whose centre lies on the left photo
    left[:, : SIDE // fg.STRIDE] = True
    target = rb.region_max_margin(left, ~left)
    left_wins = (target(out) > 0).numpy()
    mask = np.zeros((n, 1, SIDE, 2 * SIDE), np.float32)  # perturb the winning photo only
    for i, wins in enumerate(left_wins):
        mask[i, :, :, :SIDE] = float(wins)
        mask[i, :, :, SIDE:] = float(not wins)
    common = dict(target=target, mask=mask, bounds=(0.0, 255.0))
    unit = pass_times(forward, x)

    probes = {
        "fgsm_linf_eps4": lambda: rb.fgsm(forward, x, eps=4.0, **common),
        "pgd_linf_eps4_10steps": lambda: rb.pgd(forward, x, eps=4.0, steps=10, **common),
        "pgd_l2_eps128_10steps": lambda: rb.pgd(forward, x, eps=128.0, norm=2, steps=10, **common),
        "minimal_budget_fgsm_linf": lambda: rb.minimal_budget(forward, x, budgets=LINF_BUDGETS, method="fgsm",
                                                              **common),
        "minimal_budget_pgd_linf_10steps": lambda: rb.minimal_budget(forward, x, budgets=LINF_BUDGETS, steps=10,
                                                                     **common),
        "minimal_budget_pgd_l2_10steps": lambda: rb.minimal_budget(forward, x, budgets=L2_BUDGETS, norm=2, steps=10,
                                                                   **common),
        "one_pixel_de_pop50_gen5": lambda: rb.pixel_attack(forward, x, population=50, generations=5, **common),
        "corruption_gaussian_noise_7_levels": lambda: rb.corruption_curve(forward, x, target=target,
                                                                          corruption="gaussian_noise",
                                                                          bounds=(0.0, 255.0)),
        "corruption_jpeg_7_levels": lambda: rb.corruption_curve(forward, x, target=target, corruption="jpeg",
                                                                bounds=(0.0, 255.0)),
        "corruption_brightness_5_levels": lambda: rb.corruption_curve(forward, x, target=target,
                                                                      corruption="brightness", bounds=(0.0, 255.0)),
    }
    rows = []
    for name, run in probes.items():
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        row = {"probe": name, "pairs": n, "seconds_per_pair": seconds / n, "seconds_total": seconds,
               "forward_per_pair": float(result.forward_per_item),
               "backward_per_pair": float(getattr(result, "backward_per_item", 0.0)),
               "success_rate": result.success_rate().to_dict()}
        if not name.startswith(("fgsm_", "pgd_")):
            row["median_budget"] = result.median_budget().to_dict()
            row["budget_units"] = ("severity step (1 = mildest level)" if name.startswith("corruption") else
                                   "pixels changed" if name.startswith("one_pixel") else
                                   "L2 norm, 0-255 pixel levels" if "_l2" in name else "L-inf, 0-255 pixel levels")
        rows.append(row)
        print(f"{name:38s} {row['seconds_per_pair']:7.3f} s/pair  {row['forward_per_pair']:7.1f} fwd  "
              f"{row['backward_per_pair']:6.1f} bwd  success {row['success_rate']['value']:.2f}", flush=True)

    import art

    result = {
        "model": fg.FASTGAZE.name,
        "inputs": {"canvas": [3, SIDE, 2 * SIDE], "range": "RGB 0-255", "pairs": n, "photos": files,
                   "photos_source": "FairFace (Kärkkäinen & Joo 2021, CC BY 4.0), one per race x gender label; "
                                    "labels are perceived attributes annotated by others",
                   "decision": "salient point on the left or right photo (region_max_margin on the 4 x 8 grid)",
                   "perturbed": "the photo that holds the salient point (mask)"},
        "budgets": {"linf": list(LINF_BUDGETS), "l2": list(L2_BUDGETS)},
        "note": "forward/backward passes count images through the network: the toolkit's evaluations before and "
                "after each attack and ART's own success check (2 forwards per PGD call) included. The passes do "
                "not depend on the machine; seconds do (see pass_times and the load average). Success rates and "
                f"budgets are context for the cost, not findings (n = {n} pairs).",
        "pass_times": unit,
        "results": rows,
        "environment": {
            "torch": torch.__version__, "adversarial-robustness-toolbox": art.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": THREADS,
            "load_average_start": load_start, "load_average_end": os.getloadavg(),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "robustness_cost.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
