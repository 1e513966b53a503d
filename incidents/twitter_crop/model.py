"""Twitter's image-cropping saliency model (``fastgaze.vxm``) and the pipeline its binary ran.

The model is the pruned, distilled gaze predictor of Theis, Korshunova, Tejani & Huszár,
"Faster gaze prediction with dense networks and Fisher pruning" (arXiv 1801.05787, 2018),
released by Twitter with the audit of Yee, Tantipongpipat & Mishra, "Image Cropping on Twitter:
Fairness Metrics, their Limitations, and the Importance of Representation, Design, and Agency"
(arXiv 2105.08667, 2021; code: github.com/twitter-research/image-crop-analysis, Apache-2.0).
Twitter ran it through a closed program, ``candidate_crops``; :mod:`autopsy.models.vxm` rebuilds
the network from the file and this module rebuilds the program around it, as read from the
released binary and checked against its printed outputs (``docs/twitter_model.md``,
``benchmarks/twitter_calibration.py``, ``tests/test_twitter_calibration.py``):

1. **Decode and resize** with Twitter's imagecore library (``ResizeCropOperation``, AspectFit into
   320x320, quality High): target ``round(side * s)`` with ``s = min(320 / W, 320 / H)`` in float32;
   a JPEG is first decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg-turbo) while that
   stays at least the target size, other images are halved by 2x2 averaging; then a separable
   Lanczos-3 filter (up to 12 taps, 16.16 fixed point, rounded to bytes after each axis) shrinks
   to the target, or a 4x4 Lanczos-2 filter enlarges to it.
2. **Input**: planar float32 R - 103.939, G - 116.779, B - 123.68 on 0-255 values (Caffe's BGR
   means applied to RGB planes, as the binary does).
3. **Network**: the file's convolutions with NNPACK's ceil-mode 2x2 pooling; the file's Gaussian
   blur is never applied. The output is a ``ceil(W'/16) x ceil(H'/16)`` grid of raw scores.
4. **Point**: cell (i, j) sits at ``min(16 j + 8, W' - 1) * r``, ``min(16 i + 8, H' - 1) * r``
   with ``r = min(W / W', H / H')`` (float32); the salient point is the first maximum in
   row-major order, truncated with ``int()``. No centre bias.

:func:`saliency_map` runs steps 1-4 exactly (pass a JPEG's path to get step 1's DCT pre-shrink);
:func:`score_grid` runs the same resize as a linear torch operation, so attribution and
counterfactual search can differentiate through it. The old input convention of this port
(BGR, shorter side 192 px) survives only as the ablation :func:`legacy_preprocess`.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from autopsy.assets import Asset, fetch
from autopsy.contract import Weights, weights_of
from autopsy.models.vxm import BLUR, CONV, POOL, PRELU, RELU, LayerSpec, VxmNetwork, build_network, load_weights, read_vxm

FASTGAZE = Asset(
    name="fastgaze.vxm",
    url=(
        "https://raw.githubusercontent.com/twitter-research/image-crop-analysis/"
        "d66ad3bb3881fdbd12a27e04c3e57cc8fd772dd1/bin/fastgaze.vxm"
    ),
    sha256="b76cefc218ec8969cc62b26ad0f41111800421287e7f2725d808da1d90afbdf7",
    size=489616,
    licence="Apache-2.0",
    citation=(
        "Theis, L., Korshunova, I., Tejani, A. & Huszár, F. Faster gaze prediction with dense networks "
        "and Fisher pruning. arXiv:1801.05787 (2018). Released with Yee, K., Tantipongpipat, U. & "
        "Mishra, S. Image Cropping on Twitter: Fairness Metrics, their Limitations, and the Importance "
        "of Representation, Design, and Agency. arXiv:2105.08667 (2021)."
    ),
    source_page="https://github.com/twitter-research/image-crop-analysis",
    mirror_path="models/fastgaze.vxm",
)

#: The long side the binary fits every image into (imagecore AspectFit into BOX x BOX).
BOX = 320
#: Output stride of the network: one score per 16 x 16 resized pixels.
STRIDE = 16
#: Subtracted from the R, G, B planes (0-255): Caffe's BGR means, in the order the binary uses them.
PLANE_MEANS = (103.939, 116.779, 123.68)
#: Twitter's crop aspect ratios (height / width), as in image_crop_analysis.
ASPECT_RATIOS = (0.56, 1.0, 1.14, 2.0)

FASTGAZE_WEIGHTS = Weights(
    name="fastgaze",
    files=(FASTGAZE,),
    transforms={
        "resize": f"imagecore AspectFit into {BOX}x{BOX}, quality High: long side {BOX}, short side "
                  "roundf(short * min(320/W, 320/H)); Lanczos-3 (12 taps, 16.16 fixed point) to shrink, "
                  "Lanczos-2 4x4 to enlarge, 2x2 averages first while the image is at least twice the target",
        "jpeg": "libjpeg-turbo DCT-domain decode at 1/2, 1/4 or 1/8 while the result stays >= the target",
        "input": "planar float32 NCHW, R-103.939, G-116.779, B-123.68 on 0-255 values",
        "network": "file convolutions, NNPACK ceil-mode 2x2 pooling, Gaussian blur not applied",
        "output": "raw scores on a ceil(W'/16) x ceil(H'/16) grid; point min(16i+8, dim'-1) * min(W/W', H/H')",
        "salient_point": "first maximum in row-major order, coordinates truncated with int()",
    },
    meta={
        "task": "saliency (gaze prediction) for automatic image cropping",
        "papers": ("arXiv:1801.05787", "arXiv:2105.08667"),
        "binary": "twitter-research/image-crop-analysis@d66ad3bb:bin/mac/candidate_crops "
                  "(sha256 d445c97385f4eb7342427787868282a915de627f73e38e2989f3bcc68d7f93cc)",
        "published": "Yee et al. 2021 (abstract): 8% difference from demographic parity in favour of women "
                     "and 4% in favour of white individuals, on paired WikiCeleb photos",
        "licence": "Apache-2.0",
    },
)


def _conv(cin, cout, k, act=RELU):
    return LayerSpec(CONV, cin, cout, (k, k), act)


_POOL = LayerSpec(POOL, pool=2)

#: The architecture stored in ``fastgaze.vxm`` (checked against the file on every load).
FASTGAZE_LAYERS: tuple[LayerSpec, ...] = (
    _conv(3, 43, 3), _conv(43, 44, 3), _POOL,
    _conv(44, 49, 3), _conv(49, 56, 3), _POOL,
    _conv(56, 44, 3), _conv(44, 38, 3), _POOL,
    _conv(38, 31, 3), _conv(31, 20, 3), _POOL,
    _conv(20, 18, 3), _conv(18, 10, 3),
    _conv(10, 7, 1, PRELU), _conv(7, 7, 1, PRELU), _conv(7, 2, 1, PRELU), _conv(2, 1, 1, PRELU),
    LayerSpec(BLUR, blur_kernel=19, blur_std=3.0),
)


def build_model(*, weights: Weights | None = FASTGAZE_WEIGHTS, blur: str | None = None) -> VxmNetwork:
    """FastGaze as Twitter's binary runs it (ceil-mode pooling, no blur), in eval mode.

    ``weights=None`` gives the same architecture with random parameters and reads no file.
    ``blur="replicate"`` (or ``"reflect"``, ``"zeros"``) applies the file's blur, an ablation.
    """
    if isinstance(weights, str):
        raise TypeError(f"weights={weights!r}: pass weights=FASTGAZE_WEIGHTS (the pinned Twitter file) or None")
    weights = weights_of(weights)
    model = build_network(list(FASTGAZE_LAYERS), blur=blur)
    if weights is None:
        return model.eval()
    path = fetch(weights.asset)
    return load_weights(model, read_vxm(path), source=path).eval()


@functools.lru_cache(maxsize=1)
def _default_model() -> VxmNetwork:
    return build_model()


# -- geometry ---------------------------------------------------------------------------------


def fit_size(width: int, height: int, box: int = BOX) -> tuple[int, int]:
    """(W', H') imagecore's AspectFit gives: ``roundf(side * min(box / W, box / H))`` in float32."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = min(np.float32(box) / np.float32(width), np.float32(box) / np.float32(height))
    # roundf of a float32 product; x + 0.5 is exact in double, so floor gives roundf's result
    return tuple(max(1, math.floor(float(scale * np.float32(v)) + 0.5)) for v in (width, height))


def grid_geometry(size: tuple[int, int], resized: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """The binary's cell points in original pixels: (xs, ys, r), float32."""
    (width, height), (w, h) = size, resized
    ratio = min(np.float32(width) / np.float32(w), np.float32(height) / np.float32(h))
    xs = np.minimum(STRIDE * np.arange(-(-w // STRIDE)) + STRIDE // 2, w - 1).astype(np.float32) * ratio
    ys = np.minimum(STRIDE * np.arange(-(-h // STRIDE)) + STRIDE // 2, h - 1).astype(np.float32) * ratio
    return xs, ys, float(ratio)


# -- imagecore's resize -----------------------------------------------------------------------


def _sinc(x: np.ndarray) -> np.ndarray:
    # imagecore computes sin in double "to be consistent across systems" and keeps float results
    xpi = x.astype(np.float64) * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(x == 0, 1.0, np.sin(xpi) / xpi)
    return out.astype(np.float32)


def _shrink_kernel(n_in: int, n_out: int, taps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """imagecore's FilterKernelAdaptive (Lanczos-3, quality High): first tap and normalised weights."""
    f32 = np.float32
    ratio, inv = f32(n_out) / f32(n_in), f32(n_in) / f32(n_out)
    window = f32(min(f32(taps * 0.5 - f32(1e-5)), f32(taps * 0.25) * inv))
    sample = (np.arange(n_out, dtype=f32) + f32(0.5)) * inv - f32(1e-5)
    start = ((sample - window) + f32(0.5)).astype(np.int64)  # C's (int): truncation towards zero
    count = ((sample + window) + f32(0.5)).astype(np.int64) - start
    k = np.arange(taps)
    pos = ratio * ((start[:, None] + k[None, :]).astype(f32) - sample[:, None] + f32(0.5))
    weight = _sinc(pos) * _sinc(pos * f32(1 / (taps * 0.25)))
    weight = np.where(k[None, :] < count[:, None], weight, f32(0))
    return start, (weight * (f32(1) / _running_sum(weight))[:, None]).astype(f32)


def _running_sum(weight: np.ndarray) -> np.ndarray:
    # left-to-right float32 sums, as imagecore's loops add (numpy's sum adds pairwise)
    return np.cumsum(weight, axis=1, dtype=np.float32)[:, -1]


def _grow_kernel(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """imagecore's FilterKernelFixed (Lanczos-2, 4 taps starting one before ``start``)."""
    f32 = np.float32
    inv = f32(n_in) / f32(n_out)
    pos = np.maximum(f32(0), (np.arange(n_out, dtype=f32) + f32(0.5)) * inv - f32(0.5))
    start = np.floor(pos).astype(np.int64)
    frac = pos - np.floor(pos)
    x = np.stack([frac + 1, frac, 1 - frac, 2 - frac], 1).astype(np.float64) * math.pi
    x = np.maximum(x, 1e-6)
    weight = (np.sin(x) * np.sin(x * 0.5) / (x * x)).astype(f32)
    return start - 1, (weight * (f32(1) / _running_sum(weight))[:, None]).astype(f32)


def _taps(start: np.ndarray, n_taps: int, n_in: int) -> np.ndarray:
    # imagecore pads by replicating edge pixels, i.e. clamps tap indices
    return np.clip(start[:, None] + np.arange(n_taps)[None, :], 0, n_in - 1)


def _shrink_axis(rgb: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    start, weight = _shrink_kernel(rgb.shape[axis], n_out)
    fixed = (weight * np.float32(65536)).astype(np.int32)
    taps = _taps(start, weight.shape[1], rgb.shape[axis])
    shape = [1] * rgb.ndim
    shape[axis] = n_out
    # Tap by tap (no (..., n_out, taps, ...) temporary: ~3x faster). Integer sums are exact in any
    # order, and |255 * 65536 * 12| < 2**31, so int32 holds them.
    total = np.zeros([n_out if a == axis else d for a, d in enumerate(rgb.shape)], np.int32)
    for k in range(weight.shape[1]):
        total += np.take(rgb, taps[:, k], axis=axis).astype(np.int32) * fixed[:, k].reshape(shape)
    return np.clip((total + (1 << 15) - 1) >> 16, 0, 255).astype(np.uint8)


def _grow(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    sx, wx = _grow_kernel(rgb.shape[1], width)
    sy, wy = _grow_kernel(rgb.shape[0], height)
    fx, fy = (wx * np.float32(65536)).astype(np.int64), (wy * np.float32(65536)).astype(np.int64)
    block = rgb.astype(np.int64)[_taps(sy, 4, rgb.shape[0])][:, :, _taps(sx, 4, rgb.shape[1])]  # (h, 4, w, 4, c)
    rows = (block * fx[None, None, :, :, None]).sum(3) >> 10
    total = (rows * fy[:, :, None, None]).sum(1)
    return np.clip((total + (1 << 21) - 1) >> 22, 0, 255).astype(np.uint8)


def imagecore_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 array to ``size`` = (width, height) as imagecore does at quality High."""
    width, height = size
    while rgb.shape[1] // 2 >= width and rgb.shape[0] // 2 >= height:
        h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
        quad = rgb[:h:2, :w:2].astype(np.uint16) + rgb[1:h:2, :w:2] + rgb[:h:2, 1:w:2] + rgb[1:h:2, 1:w:2]
        rgb = (quad >> 2).astype(np.uint8)
    if rgb.shape[:2] == (height, width):
        return rgb
    if width > rgb.shape[1] or height > rgb.shape[0]:
        return _grow(rgb, width, height)
    return _shrink_axis(_shrink_axis(rgb, width, 1), height, 0)  # x first, bytes in between


_ROTATIONS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


def binary_image(image: Image.Image | str | os.PathLike, box: int = BOX) -> np.ndarray:
    """The (H', W', 3) uint8 RGB image the binary feeds its network.

    Give a JPEG as a path to reproduce the binary's DCT-domain pre-shrink; an already decoded
    image is resized from its pixels (as the binary treats PNGs). A JPEG's EXIF rotation is
    applied after resizing, as imagecore does.
    """
    return _binary_pixels(image, box)[0]


def _binary_pixels(image, box: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(pixels, upright (width, height) of the original)."""
    if isinstance(image, Image.Image):
        return imagecore_resize(np.asarray(image.convert("RGB")), fit_size(*image.size, box)), image.size
    if not isinstance(image, str | os.PathLike):
        raise TypeError(f"expected a PIL image or an image file path, got {type(image).__name__}")
    with Image.open(Path(image)) as im:
        width, height = im.size
        rotation = _ROTATIONS.get(im.getexif().get(0x0112, 1)) if im.format == "JPEG" else None
        turned = rotation in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
        upright = (height, width) if turned else (width, height)
        target = fit_size(*upright, box)[::-1] if turned else fit_size(*upright, box)
        if im.format == "JPEG":
            scale = 1  # libjpeg's scale_denom, as imagecore's computeReadDimensions picks it
            while scale < 8 and -(-width // (2 * scale)) >= target[0] and -(-height // (2 * scale)) >= target[1]:
                scale *= 2
            if scale > 1:
                im.draft("RGB", (width // scale, height // scale))
                if im.size != (-(-width // scale), -(-height // scale)):
                    raise RuntimeError(f"{image}: PIL decoded {im.size} at scale 1/{scale}; expected the libjpeg size")
        pixels = imagecore_resize(np.asarray(im.convert("RGB")), target)
    if rotation is not None:
        pixels = np.asarray(Image.fromarray(pixels).transpose(rotation))
    return pixels, upright


# -- torch: network input and a differentiable resize -----------------------------------------


def to_network_input(rgb: torch.Tensor) -> torch.Tensor:
    """Float RGB 0-255 NCHW -> the network's input (each plane minus :data:`PLANE_MEANS`); differentiable."""
    return rgb - torch.tensor(PLANE_MEANS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)


def deprocess(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_network_input` for one (3, h, w) input: an (h, w, 3) RGB array in [0, 1]."""
    mean = torch.tensor(PLANE_MEANS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return ((x.detach() + mean) / 255.0).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def featviz_preprocess(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB NCHW (what feature-visualisation parameterisations produce) -> network input."""
    return to_network_input(x * 255.0)


def preprocess(image: Image.Image | str | os.PathLike, *, resize: bool = False) -> torch.Tensor:
    """A (1, 3, h, w) float32 network input. ``resize=True``: the binary's decode and resize
    (:func:`binary_image`); ``False``: the image's own pixels, for callers that set the size."""
    rgb = binary_image(image) if resize else np.asarray(image.convert("RGB"))
    return to_network_input(torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0))


def resize_matrix(n_in: int, n_out: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """imagecore's resize of one axis as an (n_out, n_in) matrix (the weights of :func:`imagecore_resize`)."""
    start, weight = (_shrink_kernel if n_out <= n_in else _grow_kernel)(n_in, n_out)
    matrix = np.zeros((n_out, n_in), np.float64)
    np.add.at(matrix, (np.arange(n_out)[:, None], _taps(start, weight.shape[1], n_in)), weight)
    return torch.as_tensor(matrix, dtype=dtype, device=device)


def resize_tensor(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """imagecore's resize of float NCHW images to ``size`` = (width, height), as a linear map.

    The same 2x2 averages and filter weights as :func:`imagecore_resize`, without its rounding
    to bytes (and without a JPEG's DCT pre-shrink), so gradients flow to the pixels. (The
    4x4 enlarging filter is applied separably here; imagecore rounds its rows to 10 bits.)
    """
    width, height = size
    while rgb.shape[-1] // 2 >= width and rgb.shape[-2] // 2 >= height:
        rgb = F.avg_pool2d(rgb, 2)
    if rgb.shape[-2:] == (height, width):
        return rgb
    mx = resize_matrix(rgb.shape[-1], width, rgb.dtype, rgb.device)
    my = resize_matrix(rgb.shape[-2], height, rgb.dtype, rgb.device)
    return my @ (rgb @ mx.T)


def score_grid(rgb: torch.Tensor, *, model: VxmNetwork | None = None, box: int = BOX) -> torch.Tensor:
    """Differentiable scores: float RGB 0-255 (N, 3, H, W) -> (N, 1, ceil(H'/16), ceil(W'/16)).

    The binary's pipeline as torch operations (:func:`resize_tensor`, :func:`to_network_input`,
    the network), for attribution and counterfactual search. :func:`saliency_map` is the exact one.
    """
    model = model or _default_model()
    return model(to_network_input(resize_tensor(rgb, fit_size(rgb.shape[-1], rgb.shape[-2], box))))


# -- the binary's output ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SaliencyGrid:
    """What ``candidate_crops ... show_all_points`` prints, as arrays.

    ``scores[i, j]`` is the raw network score of the cell at (``xs[j]``, ``ys[i]``) in original
    pixels; ``size`` is the image's (width, height), ``resized`` the (W', H') the network saw and
    ``ratio`` the float32 ``r`` that maps one to the other.
    """

    scores: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    size: tuple[int, int]
    resized: tuple[int, int]
    ratio: float

    @property
    def cell(self) -> tuple[int, int]:
        """(row, col) of the first maximum in row-major order (NaN never wins), as the binary scans."""
        flat = np.where(np.isnan(self.scores), -np.inf, self.scores).ravel()
        row, col = divmod(int(np.argmax(flat)), self.scores.shape[1])
        return row, col

    @property
    def point(self) -> tuple[int, int]:
        """The salient point the binary prints: the maximum cell's point, truncated with ``int()``."""
        row, col = self.cell
        return int(self.xs[col]), int(self.ys[row])

    def points(self) -> np.ndarray:
        """(rows * cols, 3) float array of ``x, y, score`` in the binary's printing order."""
        y, x = np.meshgrid(self.ys, self.xs, indexing="ij")
        return np.stack([x.ravel(), y.ravel(), self.scores.ravel()], 1)

    def heatmap(self) -> np.ndarray:
        """The scores bilinearly upsampled to an (H, W) float32 map of the original image, for overlays."""
        grid = torch.from_numpy(np.ascontiguousarray(self.scores, dtype=np.float32))[None, None]
        rows, cols = self.scores.shape
        full = F.interpolate(grid, size=(rows * STRIDE, cols * STRIDE), mode="bilinear", align_corners=False)
        w, h = self.resized
        full = F.interpolate(full[..., :h, :w], size=self.size[::-1], mode="bilinear", align_corners=False)
        return full[0, 0].numpy()


def saliency_map(image: Image.Image | str | os.PathLike, *, model: VxmNetwork | None = None) -> SaliencyGrid:
    """Run the binary's pipeline on ``image`` (a PIL image, or a path: pass JPEGs as paths to
    reproduce their DCT pre-shrink) and return its :class:`SaliencyGrid`."""
    model = model or _default_model()
    pixels, size = _binary_pixels(image, BOX)
    with torch.no_grad():
        x = to_network_input(torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1).unsqueeze(0))
        scores = model(x)[0, 0].numpy()
    resized = (pixels.shape[1], pixels.shape[0])
    xs, ys, ratio = grid_geometry(size, resized)
    return SaliencyGrid(scores, xs, ys, tuple(size), resized, ratio)


def salient_point(saliency: SaliencyGrid | np.ndarray) -> tuple[int, int]:
    """(x, y) of the maximum: the binary's salient point for a :class:`SaliencyGrid` (original
    pixels), or the (column, row) index of the first maximum of a 2-D array (e.g. a heatmap)."""
    if isinstance(saliency, SaliencyGrid):
        return saliency.point
    saliency = np.asarray(saliency)
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"salient_point needs a SaliencyGrid or a non-empty 2-D map, got shape {saliency.shape}")
    y, x = np.unravel_index(int(np.nanargmax(saliency)), saliency.shape)
    return int(x), int(y)


def _fit_window(centre: int, length: int, limit: int) -> int:
    """Start of a ``length`` window centred on ``centre`` and slid to lie inside [0, limit)."""
    start = centre - length // 2
    return min(max(start, 0), limit - length)


def crop(image_size: tuple[int, int], point: tuple[int, int], aspect_ratio: float) -> tuple[int, int, int, int]:
    """Twitter's crop: the largest ``aspect_ratio`` (height / width) window centred on ``point``.

    ``image_size`` is (width, height) as in PIL; returns (left, top, width, height). As in the
    public image_crop_analysis code, only one axis is squeezed: an aspect ratio below the image's
    keeps the full width and picks a band of rows around the point's y; otherwise it keeps the full
    height and picks columns around x. The window is slid back inside the image at the borders, so
    the point is at the window's centre unless that would leave the image.
    """
    width, height = (int(v) for v in image_size)
    x, y = (int(v) for v in point)
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    if not (isinstance(aspect_ratio, int | float) and math.isfinite(aspect_ratio) and aspect_ratio > 0):
        raise ValueError(f"aspect_ratio must be a positive number (height / width), got {aspect_ratio!r}")
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"point {point} lies outside a {width}x{height} image")
    if aspect_ratio < height / width:
        crop_height = min(height, max(1, round(aspect_ratio * width)))
        return 0, _fit_window(y, crop_height, height), width, crop_height
    crop_width = min(width, max(1, round(height / aspect_ratio)))
    return _fit_window(x, crop_width, width), 0, crop_width, height


# -- ablation: the port's earlier input convention --------------------------------------------

#: The port's earlier guess (before the binary was read): BGR planes minus these means ...
LEGACY_BGR_MEAN = (103.939, 116.779, 123.68)
#: ... at a working resolution whose shorter side is this many pixels (multiples of 16).
LEGACY_SIDE = 192


def legacy_working_size(width: int, height: int, side: int = LEGACY_SIDE) -> tuple[int, int]:
    """Ablation: (width, height) with the shorter side ~``side``, both multiples of 16."""
    scale = side / min(width, height)
    return (max(STRIDE, round(width * scale / STRIDE) * STRIDE), max(STRIDE, round(height * scale / STRIDE) * STRIDE))


def legacy_preprocess(image: Image.Image, *, side: int | None = LEGACY_SIDE) -> torch.Tensor:
    """Ablation, not the binary's pipeline: BGR minus means at :func:`legacy_working_size` (bilinear)."""
    image = image.convert("RGB")
    if side is not None and (size := legacy_working_size(*image.size, side=side)) != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1).unsqueeze(0)
    return rgb.flip(1) - torch.tensor(LEGACY_BGR_MEAN).view(1, 3, 1, 1)


def centre_log_prior(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
    """Ablation: log of a centred Gaussian density on an ``height`` x ``width`` grid (std = ``sigma``
    x side), normalised over the grid. The binary adds no centre bias."""
    y = ((np.arange(height) + 0.5) / height - 0.5) / sigma
    x = ((np.arange(width) + 0.5) / width - 0.5) / sigma
    logp = -0.5 * (y[:, None] ** 2 + x[None, :] ** 2)
    return (logp - np.log(np.exp(logp).sum())).astype(np.float32)
