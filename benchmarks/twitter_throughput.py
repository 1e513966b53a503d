"""CPU throughput of the fastgaze port, beside the same network in ONNX Runtime.

The network is Twitter's cropping saliency model (``fastgaze.vxm``; Theis et al. 2018,
arXiv 1801.05787; Yee et al. 2021, arXiv 2105.08667) as rebuilt by ``autopsy.models.vxm``.
For each input size (256x256, i.e. 256 px high at the working resolution of a square photo,
and 512x512) and batch size (1, 16) it times PyTorch eager (``torch.no_grad``) and ONNX
Runtime (CPUExecutionProvider) on the same random inputs, checks that their outputs agree, and
reports images per second (median of timed repetitions after warm-up). FLOPs per image are counted
analytically from the layer shapes: multiply-accumulates of every convolution (k_h x k_w x C_in
x C_out per output pixel, plus the separable 19-tap blur); FLOPs = 2 x MACs.

Run (a few minutes; 2 threads everywhere)::

    AUTOPSY_MIRROR=/work/shared/mirror PYTHONPATH=. python benchmarks/twitter_throughput.py

Writes ``benchmarks/results/twitter_throughput.json``. Timings on a shared machine vary; the
JSON records the load average at start and end.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autopsy.models.vxm import BLUR, CONV, POOL
from incidents.twitter_crop import model as fg

RESULTS = Path(__file__).parent / "results"
SIZES = ((256, 256), (512, 512))
BATCHES = (1, 16)
SECONDS_PER_CASE = 6.0
THREADS = 2


def conv_macs(specs, height: int, width: int) -> int:
    """Multiply-accumulates of one image through the network (convolutions and blur)."""
    macs, h, w, channels = 0, height, width, 3
    for s in specs:
        if s.type == CONV:
            kh, kw = s.kernel
            macs += h * w * s.out_channels * s.in_channels * kh * kw
            channels = s.out_channels
        elif s.type == POOL:
            h, w = h // s.pool, w // s.pool
        elif s.type == BLUR:
            macs += 2 * h * w * channels * s.blur_kernel  # separable: one pass per axis
    return macs


def _time(fn, seconds: float) -> list[float]:
    fn()  # warm-up
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    import onnx
    import onnxruntime as ort

    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()
    net = fg.build_model()
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fastgaze.onnx"
        torch.onnx.export(
            net, (torch.zeros(1, 3, 256, 256),), str(path), input_names=["image"], output_names=["saliency"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "saliency": {0: "batch", 2: "h", 3: "w"}},
            opset_version=17, dynamo=False,
        )
        onnx.checker.check_model(onnx.load(str(path)))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for height, width in SIZES:
            macs = conv_macs(net.specs, height, width)
            for batch in BATCHES:
                x = (rng.uniform(0, 255, (batch, 3, height, width)) - 117.0).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.no_grad():
                    reference = net(xt).numpy()
                onnx_out = session.run(None, {"image": x})[0]
                diff = float(np.abs(reference - onnx_out).max())
                scale = float(np.abs(reference).max())

                def run_torch():
                    with torch.no_grad():
                        net(xt)

                def run_onnx():
                    session.run(None, {"image": x})

                for runtime, fn in (("torch", run_torch), ("onnxruntime", run_onnx)):
                    times = _time(fn, SECONDS_PER_CASE)
                    median = statistics.median(times)
                    rows.append({
                        "runtime": runtime, "height": height, "width": width, "batch": batch,
                        "images_per_s": batch / median, "ms_per_batch_median": 1000 * median,
                        "ms_per_batch_min": 1000 * min(times), "repetitions": len(times),
                        "gflops_per_image": 2 * macs / 1e9,
                        "achieved_gflops_per_s": 2 * macs * batch / median / 1e9,
                        "max_abs_diff_vs_torch": diff if runtime == "onnxruntime" else 0.0,
                        "output_max_abs": scale,
                    })
                    r = rows[-1]
                    print(f"{runtime:12s} {height}x{width} batch {batch:2d}: {r['images_per_s']:7.2f} img/s "
                          f"(max |diff| {diff:.2e})", flush=True)
    agree = all(r["max_abs_diff_vs_torch"] <= 1e-4 * max(1.0, r["output_max_abs"]) for r in rows)
    result = {
        "model": fg.FASTGAZE.name,
        "flops": {f"{h}x{w}": {"macs": conv_macs(net.specs, h, w), "gflops": 2 * conv_macs(net.specs, h, w) / 1e9}
                  for h, w in SIZES},
        "flops_note": "analytic: convolution multiply-accumulates (k*k*Cin*Cout per output pixel) plus the "
                      "separable blur; FLOPs = 2 * MACs; ReLU/PReLU/pooling not counted",
        "outputs_agree": agree,
        "agreement_tolerance": "max |torch - onnxruntime| <= 1e-4 * max(1, max |output|)",
        "results": rows,
        "environment": {
            "torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": THREADS,
            "load_average_start": load_start, "load_average_end": os.getloadavg(),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "twitter_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    if not agree:
        raise SystemExit("torch and onnxruntime outputs disagree; see twitter_throughput.json")


if __name__ == "__main__":
    main()
