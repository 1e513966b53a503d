"""Score candidate readings of ``fastgaze.vxm`` against what Twitter's own binary printed.

Question: which reading of the model file, and which pipeline around it, reproduces the score
grids that Twitter's ``candidate_crops`` binary printed (Yee et al. 2021, arXiv 2105.08667; the
model of Theis et al. 2018, arXiv 1801.05787)?

Ground truth: ``../shared/twitter-calibration`` (see its README): the binary's 20x17 grid for
``dummy.jpeg`` read off two figures (sd 0.0024 between readings, +-0.02 at the peaks) and the
20x14 grids of two emoji composites (+-0.04), each with its printed salient point; the exact
200-point grid the binary printed for a private 548x1106 image (geometry and score range).

Every hypothesis changes one thing in the binary's reading (``binary``: imagecore's decode and
resize, R/G/B minus the Caffe means, the stored weights as PyTorch cross-correlation, PReLU,
NNPACK's ceil-mode pooling, no blur) or restores an earlier guess of the port. Scores per image:
Pearson r with the digitised grid, largest and typical (sd) absolute difference, the mean
difference, the grid maximum, and whether the salient point equals the printed one.

Run (about a minute on 2 CPU cores)::

    AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/twitter_calibration.py

Writes ``benchmarks/results/twitter_calibration.json`` and ``.md`` (no calibration data: only
scores of the comparisons).
"""

from __future__ import annotations

import io
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import PIL
import torch
from PIL import Image, ImageCms, features
from torch import nn
from torch.nn import functional as F

from autopsy.assets import fetch
from autopsy.models.vxm import build_network, load_weights, read_vxm
from incidents.twitter_crop import model as fg

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO.parent / "shared" / "twitter-calibration"
RESULTS = Path(__file__).parent / "results"
TOLERANCE = {"twitter_dummy": 0.02, "emoji_d_l": 0.04, "emoji_l_d": 0.04}  # the digitising uncertainty


# -- the calibration set ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    path: Path
    size: tuple[int, int]
    scores: np.ndarray  # (rows, cols), the digitised grid in the binary's row-major order
    xy: np.ndarray  # (rows * cols, 2) the printed/derived cell points
    point: tuple[int, int]
    tolerance: float


def load_calibration(root: Path = CALIBRATION) -> tuple[list[Case], dict]:
    """The digitised cases and the exact private grid from ``root/calibration.json``."""
    data = json.loads((root / "calibration.json").read_text())
    cases = []
    for d in data["digitised"]:
        pts = np.asarray(d["all_points_xy_score"], dtype=np.float64)
        cols = len(np.unique(pts[:, 0]))
        cases.append(Case(d["id"], root / d["image"]["file"], tuple(d["image"]["size"]), pts[:, 2].reshape(-1, cols),
                          pts[:, :2], tuple(d["salient_point"]), TOLERANCE.get(d["id"], 0.04)))
    return cases, data["exact_without_image"][0]


def parse_printed(lines: list[str]) -> dict:
    """The binary's ``show_all_points`` output: salient point, crops, then ``x y score`` lines."""
    rows = [line.split() for line in lines]
    grid = np.array([[float(v) for v in r] for r in rows if len(r) == 3])
    return {"point": tuple(int(v) for v in rows[0]), "crops": [tuple(int(v) for v in r) for r in rows[1:] if len(r) == 4],
            "grid": grid}


# -- readings ----------------------------------------------------------------------------------


def _pil_resize(path, size, method, dct=False):
    with Image.open(path) as im:
        if dct:
            im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
        return np.asarray(im.convert("RGB").resize(size, method))


def _srgb(path, size):
    """Apply the embedded ICC profile (to sRGB) before imagecore's resize (the binary does not)."""
    with Image.open(path) as im:
        im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
        rgb = im.convert("RGB")
        if "icc_profile" in im.info:
            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            rgb = ImageCms.profileToProfile(rgb, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        return fg.imagecore_resize(np.asarray(rgb), size)


def _float_resize(path, size, dct):
    with Image.open(path) as im:
        if dct:
            im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
        x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32).copy()).permute(2, 0, 1)[None]
    return fg.resize_tensor(x, size)[0].permute(1, 2, 0).numpy()


def _shifted(path, size, dx, dy):
    """imagecore's Lanczos-3 with every sample position moved by (dx, dy) input pixels (float, rounded)."""
    with Image.open(path) as im:
        im.draft("RGB", (im.size[0] // 2, im.size[1] // 2))
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    mx, my = (_shifted_matrix(n_in, n_out, d) for n_in, n_out, d in ((rgb.shape[1], size[0], dx), (rgb.shape[0], size[1], dy)))
    return np.clip(np.round(np.einsum("ij,jkc->ikc", my, np.einsum("kj,ijc->ikc", mx, rgb))), 0, 255)


def _shifted_matrix(n_in, n_out, delta, taps=12):
    f32 = np.float32
    ratio, inv = f32(n_out) / f32(n_in), f32(n_in) / f32(n_out)
    window = f32(min(f32(taps * 0.5 - f32(1e-5)), f32(taps * 0.25) * inv))
    sample = (np.arange(n_out, dtype=f32) + f32(0.5)) * inv - f32(1e-5) + f32(delta)
    start = np.floor(sample - window + f32(0.5)).astype(np.int64)
    count = np.floor(sample + window + f32(0.5)).astype(np.int64) - start
    k = np.arange(taps)
    pos = ratio * ((start[:, None] + k).astype(f32) - sample[:, None] + f32(0.5))
    weight = np.where(k < count[:, None], fg._sinc(pos) * fg._sinc(pos * f32(1 / 3)), 0)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out)[:, None], np.clip(start[:, None] + k, 0, n_in - 1)), weight / weight.sum(1, keepdims=True))
    return matrix


DECODERS: dict[str, tuple[str, Callable]] = {
    "imagecore": ("imagecore (JPEG DCT 1/2 pre-shrink, Lanczos-3 fixed point): the binary",
                  lambda p, s: fg.binary_image(p)),
    "imagecore_no_dct": ("imagecore on the fully decoded JPEG (2x2 average, then Lanczos-3)",
                         lambda p, s: fg.imagecore_resize(np.asarray(Image.open(p).convert("RGB")), s)),
    "imagecore_float": ("imagecore's filter in float (model.resize_tensor) after the DCT pre-shrink",
                        lambda p, s: _float_resize(p, s, True)),
    "imagecore_float_no_dct": ("model.score_grid's path: float imagecore filter on the decoded image",
                               lambda p, s: _float_resize(p, s, False)),
    "icc_srgb": ("embedded ICC profile converted to sRGB first (lcms; read option off in the binary)",
                 lambda p, s: _srgb(p, s)),
    **{f"imagecore_shift_{name}": (f"imagecore's filter with sample positions moved by {d} input px",
                                   lambda p, s, d=d: _shifted(p, s, *d))
       for name, d in (("x+", (0.25, 0)), ("x-", (-0.25, 0)), ("y+", (0, 0.25)), ("y-", (0, -0.25)))},
    "pil_lanczos_dct": ("PIL Lanczos after the DCT pre-shrink", lambda p, s: _pil_resize(p, s, Image.Resampling.LANCZOS, True)),
    "pil_lanczos": ("PIL Lanczos on the full decode (the issue's starting point)",
                    lambda p, s: _pil_resize(p, s, Image.Resampling.LANCZOS)),
    "pil_bicubic": ("PIL bicubic on the full decode", lambda p, s: _pil_resize(p, s, Image.Resampling.BICUBIC)),
    "pil_bilinear": ("PIL bilinear on the full decode", lambda p, s: _pil_resize(p, s, Image.Resampling.BILINEAR)),
}

INPUTS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "rgb_minus_caffe": ("R-103.939, G-116.779, B-123.68 (the binary's planes)", fg.to_network_input),
    "bgr_minus_caffe": ("BGR planes minus (103.939, 116.779, 123.68) (the port's earlier guess)",
                        lambda x: fg.to_network_input(x.flip(1))),
    "rgb_minus_imagenet": ("R-123.68, G-116.779, B-103.939 (means in RGB order)",
                           lambda x: fg.to_network_input(x.flip(1)).flip(1)),
    "raw_rgb": ("raw RGB 0-255", lambda x: x),
}


@dataclass(frozen=True)
class Reading:
    name: str
    factor: str
    description: str
    decoder: str = "imagecore"
    input: str = "rgb_minus_caffe"
    blur: str | None = None
    activation: str = "prelu"  # prelu | relu | identity
    kernels: str = "stored"  # stored | flipped | transposed | ohwi
    pooling: str = "ceil"  # ceil | floor | floor_padded
    dtype: torch.dtype = torch.float32
    winograd: bool = False  # 3x3 layers as NNPACK computes them: Winograd F(6x6, 3x3) in float32


READINGS = (
    Reading("binary", "all", "the binary's reading (every fact below at its binary value)"),
    Reading("blur_replicate", "blur", "Gaussian blur (19, std 3) applied, replicate padding", blur="replicate"),
    Reading("blur_reflect", "blur", "Gaussian blur applied, reflect padding", blur="reflect"),
    Reading("blur_zeros", "blur", "Gaussian blur applied, zero padding", blur="zeros"),
    Reading("act_relu", "type-4 activation", "type 4 read as ReLU (slope ignored)", activation="relu"),
    Reading("act_identity", "type-4 activation", "type 4 read as no activation", activation="identity"),
    Reading("kernels_flipped", "kernel orientation", "3x3 kernels flipped (true convolution)", kernels="flipped"),
    Reading("kernels_transposed", "kernel orientation", "3x3 kernels transposed (kh <-> kw)", kernels="transposed"),
    Reading("kernels_ohwi", "weight layout", "weight bytes read as (out, kh, kw, in)", kernels="ohwi"),
    Reading("pool_floor", "pooling", "floor-mode pooling (PyTorch default; compared on the common cells)", pooling="floor"),
    Reading("pool_floor_padded", "pooling", "floor-mode pooling on an input zero-padded to a multiple of 16",
            pooling="floor_padded"),
    Reading("input_bgr", "input", INPUTS["bgr_minus_caffe"][0], input="bgr_minus_caffe"),
    Reading("input_rgb_imagenet", "input", INPUTS["rgb_minus_imagenet"][0], input="rgb_minus_imagenet"),
    Reading("input_raw", "input", INPUTS["raw_rgb"][0], input="raw_rgb"),
    *(Reading(f"decode_{k}", "decode/resize", v[0], decoder=k) for k, v in DECODERS.items() if k != "imagecore"),
    Reading("float64", "arithmetic", "network in float64 (float32 rounding as the residual?)", dtype=torch.float64),
    Reading("winograd", "arithmetic", "3x3 layers by Winograd F(6x6, 3x3) in float32, NNPACK's algorithm for them",
            winograd=True),
    Reading("issue_start", "earlier guesses", "the issue's starting point: PIL Lanczos, RGB minus means, blur replicate",
            decoder="pil_lanczos", blur="replicate"),
    Reading("port_before", "earlier guesses", "the port before the issue, run at the binary's size: BGR, blur replicate, "
            "floor pooling", decoder="pil_bilinear", input="bgr_minus_caffe", blur="replicate", pooling="floor"),
)


def build_reading(reading: Reading, entries) -> nn.Module:
    entries = dict(entries)
    for i, spec in enumerate(fg.FASTGAZE_LAYERS):
        w = entries.get(f"{i}w")
        if w is None or w.shape[-1] == 1:
            continue
        if reading.kernels == "flipped":
            entries[f"{i}w"] = np.ascontiguousarray(w[:, :, ::-1, ::-1])
        elif reading.kernels == "transposed":
            entries[f"{i}w"] = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
        elif reading.kernels == "ohwi":
            o, c, kh, kw = w.shape
            entries[f"{i}w"] = np.ascontiguousarray(w.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
    net = build_network(list(fg.FASTGAZE_LAYERS), blur=reading.blur, ceil_mode=reading.pooling == "ceil")
    load_weights(net, entries)
    if reading.activation != "prelu":
        for name, layer in list(net.layers.named_children()):
            if isinstance(layer, nn.PReLU):
                net.layers._modules[name] = nn.ReLU() if reading.activation == "relu" else nn.Identity()
    return net.eval().to(reading.dtype)


def run_reading(reading: Reading, net: nn.Module, case: Case) -> np.ndarray:
    size = fg.fit_size(*case.size)
    pixels = DECODERS[reading.decoder][1](case.path, size)
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32).copy()).permute(2, 0, 1)[None].to(reading.dtype)
    x = INPUTS[reading.input][1](x)
    if reading.pooling == "floor_padded":
        x = F.pad(x, (0, -x.shape[-1] % fg.STRIDE, 0, -x.shape[-2] % fg.STRIDE))
    if reading.winograd:
        return winograd_forward(net, x[0].numpy())
    with torch.no_grad():
        return net(x)[0, 0].double().numpy()


def _winograd_matrices(points=(0, 1, -1, 2, -2, 0.5, -0.5), m=6, r=3):
    """A^T, G, B^T of Lavin & Gray's F(m, r) (arXiv 1509.09308) for the given points and infinity."""
    p = np.asarray(points, dtype=np.float64)
    n = m + r - 1
    at = np.vstack([np.append(p ** k, float(k == m - 1)) for k in range(m)])
    denom = np.array([np.prod([a - b for b in p if b != a]) for a in p])
    g = np.vstack([(p[:, None] ** np.arange(r)) / denom[:, None], np.eye(r)[-1]])
    bt = np.zeros((n, n))
    for i in range(len(p)):
        bt[i] = np.pad(np.polynomial.polynomial.polyfromroots(np.delete(p, i)), (0, 1))[:n]
    bt[-1] = np.polynomial.polynomial.polyfromroots(p)[:n]
    return at, g, bt


def _winograd_conv(x, w, b, at, g, bt):
    c, h, wd = x.shape
    th, tw = -(-h // 6), -(-wd // 6)
    padded = np.zeros((c, th * 6 + 2, tw * 6 + 2), np.float32)
    padded[:, 1:h + 1, 1:wd + 1] = x
    rows, cols = (np.arange(n)[:, None] * 6 + np.arange(8) for n in (th, tw))
    tiles = padded[:, rows][:, :, :, cols].transpose(0, 1, 3, 2, 4)  # (c, th, tw, 8, 8)
    v = np.einsum("ij,cabjk,lk->ilcab", bt, tiles, bt).reshape(64, c, th * tw)
    u = np.einsum("ij,ocjk,lk->iloc", g, w, g).reshape(64, w.shape[0], c)
    mm = np.matmul(u, v).reshape(8, 8, w.shape[0], th, tw)
    y = np.einsum("ij,jkoab,lk->oaibl", at, mm, at).reshape(w.shape[0], th * 6, tw * 6)[:, :h, :wd]
    return y + b[:, None, None]


def winograd_forward(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """The network with every 3x3 convolution computed by float32 Winograd F(6x6, 3x3)."""
    at, g, bt = (a.astype(np.float32) for a in _winograd_matrices())
    x = x.astype(np.float32)
    for layer in net.layers:
        if isinstance(layer, nn.Conv2d):
            w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            x = (_winograd_conv(x, w, b, at, g, bt) if w.shape[-1] == 3
                 else np.einsum("oc,chw->ohw", w[:, :, 0, 0], x) + b[:, None, None]).astype(np.float32)
        elif isinstance(layer, nn.Identity):
            continue
        else:
            x = layer(torch.from_numpy(x)[None])[0].detach().numpy()
    return x[0].astype(np.float64)


def compare(scores: np.ndarray, case: Case) -> dict:
    rows, cols = min(scores.shape[0], case.scores.shape[0]), min(scores.shape[1], case.scores.shape[1])
    ours, ref = scores[:rows, :cols], case.scores[:rows, :cols]
    diff = ours - ref
    flat = np.where(np.isnan(scores), -np.inf, scores)
    r, c = np.unravel_index(int(np.argmax(flat)), scores.shape)
    xs, ys, _ = fg.grid_geometry(case.size, fg.fit_size(*case.size))
    point = (int(xs[c]), int(ys[r])) if scores.shape == case.scores.shape else None
    worst = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
    return {
        "grid": list(scores.shape), "cells_compared": int(rows * cols),
        "pearson_r": float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1]),
        "max_abs_error": float(np.abs(diff).max()), "worst_cell": [int(v) for v in worst],
        "sd_error": float(diff.std()), "mean_error": float(diff.mean()),
        "cells_beyond_tolerance": int((np.abs(diff) > case.tolerance).sum()),
        "max_score": float(scores.max()), "printed_max": float(case.scores.max()),
        "salient_point": list(point) if point else None, "printed_point": list(case.point),
        "point_equal": point == case.point,
    }


def geometry_check(exact: dict) -> dict:
    """The binary's printed 200-point grid for the private 548x1106 image vs the geometry rule."""
    printed = parse_printed(exact["lines"])
    size = (548, 1106)
    resized = fg.fit_size(*size)
    xs, ys, ratio = fg.grid_geometry(size, resized)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    ours = np.stack([x.ravel(), y.ravel()], 1)
    grid = printed["grid"]
    same_shape = ours.shape == grid[:, :2].shape
    return {
        "size": list(size), "resized": list(resized), "ratio": ratio, "cells": int(len(grid)),
        "grid_shape_equal": same_shape,
        "max_abs_point_difference": float(np.abs(ours - grid[:, :2]).max()) if same_shape else None,
        "printed_point": list(printed["point"]),
        "printed_point_is_argmax_cell": tuple(int(v) for v in grid[int(np.argmax(grid[:, 2])), :2]) == printed["point"],
        "score_range": [float(grid[:, 2].min()), float(grid[:, 2].max())],
    }


def main() -> dict:
    if not (CALIBRATION / "calibration.json").is_file():
        sys.exit(f"the calibration set was not found at {CALIBRATION}")
    cases, exact = load_calibration()
    entries = read_vxm(fetch(fg.FASTGAZE))
    started = time.time()
    rows = []
    for reading in READINGS:
        net = build_reading(reading, entries)
        per_case = {case.id: compare(run_reading(reading, net, case), case) for case in cases}
        rows.append({"name": reading.name, "factor": reading.factor, "description": reading.description,
                     "results": per_case})
        print(f"{reading.name:28s} " + "  ".join(f"r={v['pearson_r']:.4f} max={v['max_abs_error']:.3f}"
                                                for v in per_case.values()), flush=True)
    result = {
        "question": "which reading of fastgaze.vxm reproduces the score grids Twitter's binary printed",
        "calibration": str(CALIBRATION.relative_to(REPO.parent)),
        "tolerance": TOLERANCE,
        "readings": rows,
        "geometry": geometry_check(exact),
        "seconds": round(time.time() - started, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "pillow": PIL.__version__,
                    "libjpeg_turbo": features.version("libjpeg_turbo"), "cpu_count": torch.get_num_threads(),
                    "load_average": list(__import__("os").getloadavg())},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "twitter_calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "twitter_calibration.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    ids = list(result["readings"][0]["results"])
    head = ("| reading | factor | " + " | ".join(f"{i}: r / max / sd / point" for i in ids) + " |\n|---|---|"
            + "---|" * len(ids) + "\n")
    lines = []
    for row in result["readings"]:
        cells = []
        for i in ids:
            v = row["results"][i]
            mark = "=" if v["point_equal"] else ("n/a" if v["salient_point"] is None else "differs")
            cells.append(f"{v['pearson_r']:.4f} / {v['max_abs_error']:.3f} / {v['sd_error']:.3f} / {mark}")
        lines.append(f"| `{row['name']}`: {row['description']} | {row['factor']} | " + " | ".join(cells) + " |")
    g = result["geometry"]
    return (
        "# FastGaze readings vs Twitter's binary\n\n"
        "Produced by `AUTOPSY_MIRROR=../shared/mirror PYTHONPATH=. python benchmarks/twitter_calibration.py`.\n"
        "Per image: Pearson r with the digitised grid, largest and sd of the absolute difference, and whether the\n"
        f"salient point equals the printed one. Digitising uncertainty: {result['tolerance']}.\n\n"
        + head + "\n".join(lines) + "\n\n"
        f"Geometry, private {g['size'][0]}x{g['size'][1]} image: resized {g['resized']}, r = {g['ratio']:.6f}, "
        f"{g['cells']} printed cells, same grid: {g['grid_shape_equal']}, largest point difference "
        f"{g['max_abs_point_difference']:.2g} px (printing keeps 6 digits); printed point {g['printed_point']} is the "
        f"argmax cell: {g['printed_point_is_argmax_cell']}; printed scores span {g['score_range'][0]:.3f} to "
        f"{g['score_range'][1]:.3f}.\n\n"
        f"Machine: {result['machine']}; {result['seconds']} s.\n"
    )


if __name__ == "__main__":
    main()
