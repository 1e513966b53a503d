"""CPU throughput of the fastgaze port, beside the same network in ONNX Runtime, side by side.

The network is Twitter's cropping saliency model (``fastgaze.vxm``; Theis et al. 2018,
arXiv 1801.05787; Yee et al. 2021, arXiv 2105.08667) as rebuilt by ``autopsy.models.vxm``.
For each input size (256x256, i.e. 256 px high at the working resolution of a square photo,
and 512x512) and batch size (1, 16) it times, on the same random inputs:

- ``lab``: the port as the lab runs it, ``net(x)`` in ``torch.inference_mode`` (channels-last
  convolutions, ReLUs in place, a batch taken a few images at a time to stay in cache);
- ``torch_nchw`` (``--with-nchw``): the port as it ran before (plain NCHW tensors through ``net.layers``), for scale;
- ``onnxruntime``: ONNX Runtime (CPUExecutionProvider) on an ONNX export of the port.

``lab_over_onnxruntime`` is the ratio the lab keeps >= 1.0. Runtimes alternate round by round
(median of the rounds), every one with the same threads (``--threads``, default 2). Outputs are
checked to agree (1e-4 of the output's scale). FLOPs per image are counted analytically from the
layer shapes: multiply-accumulates of every convolution (k_h x k_w x C_in x C_out per output
pixel, plus the separable 19-tap blur); FLOPs = 2 x MACs.

Run (a few minutes)::

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/twitter_throughput.py

Writes ``benchmarks/results/twitter_throughput.json`` with the load average at start and end.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from autopsy.models.vxm import BLUR, CONV, POOL
from incidents.twitter_crop import model as fg
from timing import ROUND_SECONDS, ROUNDS, rates, ratio  # one timing rule for every port

RESULTS = Path(__file__).parent / "results"
SIZES = ((256, 256), (512, 512))
BATCHES = (1, 16)
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


def main() -> None:
    import argparse

    import onnx
    import onnxruntime as ort

    from autopsy import threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--with-nchw", action="store_true", help="also time the plain NCHW port (slow: for scale)")
    args = parser.parse_args()
    threads.configure(args.threads)
    load_start = os.getloadavg()
    net = fg.build_model()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
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
        nchw = fg.build_model().to(memory_format=torch.contiguous_format)
        for height, width in SIZES:
            macs = conv_macs(net.specs, height, width)
            for batch in BATCHES:
                x = (rng.uniform(0, 255, (batch, 3, height, width)) - 117.0).astype(np.float32)
                xt = torch.from_numpy(x)

                def run_lab():
                    with torch.inference_mode():
                        return net(xt)

                def run_nchw():
                    with torch.no_grad():
                        return nchw.layers(xt)

                def run_onnx():
                    return session.run(None, {"image": x})[0]

                runtimes = {"lab": run_lab, "onnxruntime": run_onnx, **({"torch_nchw": run_nchw} if args.with_nchw else {})}
                reference = run_lab().numpy()
                diffs = {k: float(np.abs(np.asarray(fn()) - reference).max()) for k, fn in runtimes.items() if k != "lab"}
                scale = float(np.abs(reference).max())
                samples = rates(runtimes, batch)
                median = {k: float(np.median(v)) for k, v in samples.items()}  # images/s
                row = {"height": height, "width": width, "batch": batch, "gflops_per_image": 2 * macs / 1e9,
                       **{f"{k}_images_per_s": round(v, 2) for k, v in median.items()},
                       **{f"{k}_achieved_gflops_per_s": round(2 * macs * v / 1e9, 1) for k, v in median.items()},
                       "lab_over_onnxruntime": ratio(samples["lab"], samples["onnxruntime"]),
                       "max_abs_diff_from_lab": diffs, "output_max_abs": scale}
                rows.append(row)
                print(f"{height}x{width} batch {batch:2d}: lab {row['lab_images_per_s']:7.2f} img/s, "
                      f"ORT {row['onnxruntime_images_per_s']:7.2f}: "
                      f"lab/ORT {row['lab_over_onnxruntime']['median']:.2f} {row['lab_over_onnxruntime']['ci95']} (max |diff| {max(diffs.values()):.2e})", flush=True)
    agree = all(max(r["max_abs_diff_from_lab"].values()) <= 1e-4 * max(1.0, r["output_max_abs"]) for r in rows)
    result = {
        "model": fg.FASTGAZE.name,
        "flops": {f"{h}x{w}": {"macs": conv_macs(net.specs, h, w), "gflops": 2 * conv_macs(net.specs, h, w) / 1e9}
                  for h, w in SIZES},
        "flops_note": "analytic: convolution multiply-accumulates (k*k*Cin*Cout per output pixel) plus the "
                      "separable blur; FLOPs = 2 * MACs; ReLU/PReLU/pooling not counted",
        "outputs_agree": agree,
        "agreement_tolerance": "max |runtime - lab| <= 1e-4 * max(1, max |output|)",
        "timing": f"median of {ROUNDS} rounds of >= {ROUND_SECONDS} s per runtime, runtimes alternating round by round",
        "results": rows,
        "environment": {
            "torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": args.threads,
            "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "twitter_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    if not agree:
        raise SystemExit("the runtimes' outputs disagree; see twitter_throughput.json")


if __name__ == "__main__":
    main()
