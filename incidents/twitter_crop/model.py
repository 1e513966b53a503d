"""Twitter's image-cropping saliency model (``fastgaze.vxm``) as a plain PyTorch module.

The model is the pruned, distilled gaze predictor of Theis, Korshunova, Tejani & Huszár,
"Faster gaze prediction with dense networks and Fisher pruning" (arXiv 1801.05787, 2018),
released by Twitter with the audit of Yee, Tantipongpipat & Mishra, "Image Cropping on Twitter:
Fairness Metrics, their Limitations, and the Importance of Representation, Design, and Agency"
(arXiv 2105.08667, 2021; code: github.com/twitter-research/image-crop-analysis, Apache-2.0).
Twitter ran it through a closed binary; :mod:`autopsy.models.vxm` rebuilds it from the file.

Architecture (19 layers, :data:`FASTGAZE_LAYERS`): ten 3x3 ReLU convolutions with four 2x2
max-poolings (output stride 16), four 1x1 PReLU convolutions (the readout, as in DeepGaze II),
and a fixed Gaussian blur (kernel 19, std 3 output cells) with replicate padding. The output is
a one-channel map of log-saliency scores at 1/16 of the input resolution (the same scale as the
scores the binary printed: Twitter's notebook turns them into probabilities with a softmax).

Input convention of the network (what :func:`preprocess` produces): float32 NCHW, channels in
**BGR** order, 0-255 pixel values minus the Caffe/VGG means ``(103.939, 116.779, 123.68)``
(B, G, R). :func:`saliency_map` first resizes the image so that its shorter side is
:data:`WORKING_SIDE` px and both sides are multiples of 16 (``preprocess(image, side=WORKING_SIDE)``).
None of this is stored in the file; it was chosen by measurement in
``benchmarks/twitter_preprocessing.py`` (results: ``benchmarks/results/twitter_preprocessing.json``
and ``.md``): on 540 FairFace head-and-shoulders photos the saliency maximum falls in the face
box more often with BGR-minus-mean than with raw, RGB-minus-mean, [0, 1] or [-1, 1] inputs
(the last two give flat maps), and more often at a working side of 160-256 px than at the
photos' native 448 px; 192 px scored highest on the central face box (the BlazeFace-box rates
of 160-256 px overlap; see the results file). :func:`to_network_input` applies the same
mapping differentiably to RGB 0-255 tensors, for attribution methods.

Centre prior: DeepGaze II, whose pipeline fastgaze follows, adds a log centre-bias density
(fitted to eye-tracking data) to the blurred readout before its softmax. That density is not
in ``fastgaze.vxm``, and whether Twitter's binary added one is not public. ``centre_prior=True``
adds a stand-in: a Gaussian log-density centred on the image with a standard deviation of a
quarter of each side. It is off by default; on centred portraits it inflates face hit rates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from autopsy.assets import Asset, fetch
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

#: Per-channel means subtracted from 0-255 pixels, in the network's B, G, R channel order.
BGR_MEAN = (103.939, 116.779, 123.68)
#: Shorter side, in pixels, that images are resized to before the network.
WORKING_SIDE = 192
STRIDE = 16
#: Twitter's crop aspect ratios (height / width), as in image_crop_analysis.
ASPECT_RATIOS = (0.56, 1.0, 1.14, 2.0)


def build_model(weights: str | None = "fastgaze", *, blur_padding: str = "replicate") -> VxmNetwork:
    """The fastgaze network; ``weights=None`` gives the same architecture, randomly initialised,
    without touching any file. ``weights="fastgaze"`` loads the pinned file (via :func:`fetch`).
    """
    model = build_network(list(FASTGAZE_LAYERS), blur_padding=blur_padding)
    if weights is None:
        return model.eval()
    if weights != "fastgaze":
        raise ValueError(f"unknown weights {weights!r}; use 'fastgaze' (the pinned Twitter model) or None (random)")
    path = fetch(FASTGAZE)
    return load_weights(model, read_vxm(path), source=path).eval()


@functools.lru_cache(maxsize=1)
def _default_model() -> VxmNetwork:
    return build_model("fastgaze")


def working_size(width: int, height: int, side: int = WORKING_SIDE) -> tuple[int, int]:
    """(width, height) the image is resized to: shorter side ~``side``, both multiples of 16."""
    scale = side / min(width, height)
    return (max(STRIDE, round(width * scale / STRIDE) * STRIDE), max(STRIDE, round(height * scale / STRIDE) * STRIDE))


def to_network_input(rgb: torch.Tensor) -> torch.Tensor:
    """Map float RGB 0-255 NCHW tensors to the network's input (BGR minus means); differentiable."""
    mean = torch.tensor(BGR_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return rgb.flip(1) - mean


def preprocess(image: Image.Image, *, side: int | None = None) -> torch.Tensor:
    """A PIL image as a (1, 3, h, w) float32 network input (BGR minus :data:`BGR_MEAN`).

    ``side=None`` keeps the image's size, for callers that control the resolution themselves
    (the paired-crop protocol); ``side=WORKING_SIDE`` applies the measured working resolution,
    as :func:`saliency_map` does (see :func:`working_size`).
    """
    image = image.convert("RGB")
    if side is not None:
        size = working_size(*image.size, side=side)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1).unsqueeze(0)
    return to_network_input(rgb)


def deprocess(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_network_input` for one (3, h, w) input: an (h, w, 3) RGB array in [0, 1]."""
    mean = torch.tensor(BGR_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    rgb = (x.detach() + mean).flip(0) / 255.0
    return rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def featviz_preprocess(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB NCHW (what feature-visualisation parameterisations produce) -> network input."""
    return to_network_input(x * 255.0)


def centre_log_prior(height: int, width: int, *, sigma: float = 0.25) -> np.ndarray:
    """Log of a centred Gaussian density on an ``height`` x ``width`` grid (std = ``sigma`` x side),
    normalised to sum to one over the grid."""
    y = ((np.arange(height) + 0.5) / height - 0.5) / sigma
    x = ((np.arange(width) + 0.5) / width - 0.5) / sigma
    logp = -0.5 * (y[:, None] ** 2 + x[None, :] ** 2)
    return (logp - np.log(np.exp(logp).sum())).astype(np.float32)


def saliency_map(image: Image.Image, *, model: VxmNetwork | None = None, centre_prior: bool = False) -> np.ndarray:
    """Log-saliency of ``image`` as a float32 (H, W) array at the image's own resolution.

    Runs the network on :func:`preprocess` output and upsamples its 1/16-resolution map
    bilinearly. ``model`` defaults to the pinned fastgaze network, loaded once.
    ``centre_prior`` adds :func:`centre_log_prior` (see the module docstring; off by default).
    """
    model = model or _default_model()
    width, height = image.size
    with torch.no_grad():
        logits = model(preprocess(image, side=WORKING_SIDE))
        if centre_prior:
            logits = logits + torch.from_numpy(centre_log_prior(*logits.shape[-2:]))
        full = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return full[0, 0].numpy()


def salient_point(saliency: np.ndarray) -> tuple[int, int]:
    """(x, y) pixel of the maximum of a 2-D map (first in row-major order on ties)."""
    saliency = np.asarray(saliency)
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"salient_point needs a non-empty 2-D map, got shape {saliency.shape}")
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
