"""MediaPipe vision models as plain torch modules: Selfie Segmentation, BlazeFace, Face Mesh.

The ``.tflite`` files are pinned public artefacts (:data:`ASSETS`); :mod:`autopsy.models.tflite`
converts them into torch modules whose outputs match LiteRT to float tolerance (see
``tests/test_mediapipe.py``). The wrappers reproduce the pre- and post-processing of MediaPipe's
own graphs (``mediapipe/modules/selfie_segmentation/selfie_segmentation_cpu.pbtxt``,
``mediapipe/modules/face_detection/face_detection_*.pbtxt``, the calculators they name):

- **ImageToTensorCalculator**: the whole image is the region of interest; it is mapped onto the
  model's input by an affine warp with bilinear sampling and no anti-aliasing (OpenCV
  ``warpAffine`` ``INTER_LINEAR`` on CPU), either stretched (``keep_aspect_ratio: false``,
  segmentation) or letterboxed (``keep_aspect_ratio: true``, face detection: the shorter side is
  padded symmetrically, ``BORDER_ZERO``, i.e. black pixels before value scaling). Values are scaled
  to ``[0, 1]`` (segmentation, Face Mesh) or ``[-1, 1]`` (face detection).
- **Selfie Segmentation**: the model's last op is already a sigmoid (LOGISTIC), which is why the
  graph's TensorsToSegmentationCalculator uses ``activation: NONE``; the mask is resized to the
  image's size bilinearly.
- **BlazeFace**: SsdAnchorsCalculator anchors, TensorsToDetectionsCalculator box/keypoint decoding
  (``reverse_output_order``: x, y, w, h; scales = input size; sigmoid of scores clipped to
  ±100), score threshold, then NonMaxSuppressionCalculator with ``algorithm: WEIGHTED``
  (overlapping boxes above IoU 0.3 are averaged, weighted by score) and projection back through the
  letterbox into image pixels.

Building with ``weights=None`` needs no file at all: the architecture comes from the spec recorded
in ``autopsy/models/specs/<model>.json`` (checked against the real file by the tests) and the
parameters are random.

**Engines.** With the pinned weights, passes that need no gradient (segmenting, detecting) run the
``.tflite`` file itself in LiteRT, the reference runtime, 5-10x faster on a CPU than the torch
graph (``benchmarks/mediapipe_throughput.py``); attribution, hooks and changed weights run the
torch port. The two agree to the parity tolerance (``tests/test_engines_parity.py``), so the lab
keeps one measured truth whichever computes it. ``engine="torch"`` (or
``$AUTOPSY_TFLITE_ENGINE=torch``) runs everything in torch; see
:meth:`autopsy.models.tflite.TFLiteModule.use_engine`.

References: Bazarevsky et al. 2019, "BlazeFace: Sub-millisecond Neural Face Detection on Mobile
GPUs", arXiv:1907.05047. Kartynnik et al. 2019, "Real-time Facial Surface Geometry from Monocular
Video on Mobile GPUs" (Face Mesh), arXiv:1907.06724. Google 2021, "MediaPipe Selfie Segmentation"
model card; Google AI Blog 2020, "Background Features in Google Meet, Powered by Web ML".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from autopsy.assets import Asset, fetch
from autopsy.models.tflite import TFLiteModule, load_spec, load_tflite

SPECS = Path(__file__).parent / "specs"
#: How each model's input is made, as its MediaPipe graph does it: (size HxW, letterbox, value range).
PREPROCESSING = {
    "selfie_segmentation": ((256, 256), False, (0.0, 1.0)),
    "selfie_segmentation_landscape": ((144, 256), False, (0.0, 1.0)),
    "face_detection_short_range": ((128, 128), True, (-1.0, 1.0)),
    "face_detection_full_range_sparse": ((192, 192), True, (-1.0, 1.0)),
    "face_landmark": ((192, 192), True, (0.0, 1.0)),
}
_URL = "https://storage.googleapis.com/mediapipe-assets/tasks/testdata/vision/{}.tflite"
_SOURCE_PAGE = "https://github.com/google-ai-edge/mediapipe/blob/master/third_party/external_files.bzl"
BLAZEFACE_CITATION = (
    "Bazarevsky, V., Kartynnik, Y., Vakunov, A., Raveendran, K. & Grundmann, M. BlazeFace: "
    "Sub-millisecond Neural Face Detection on Mobile GPUs. arXiv:1907.05047 (2019)."
)
SEGMENTATION_CITATION = (
    "Google. MediaPipe Selfie Segmentation model card (2021); Google AI Blog, 'Background Features "
    "in Google Meet, Powered by Web ML' (2020)."
)
FACE_MESH_CITATION = (
    "Kartynnik, Y., Ablavatski, A., Grishchenko, I. & Grundmann, M. Real-time Facial Surface "
    "Geometry from Monocular Video on Mobile GPUs. arXiv:1907.06724 (2019)."
)


def _asset(stem: str, sha256: str, size: int, citation: str) -> Asset:
    return Asset(
        name=f"mediapipe/{stem}", url=_URL.format(stem), sha256=sha256, size=size, licence="Apache-2.0",
        citation=citation, source_page=_SOURCE_PAGE, mirror_path=f"models/{stem}.tflite",
    )


#: The pinned MediaPipe model files, by file stem.
ASSETS: dict[str, Asset] = {
    a.name.split("/")[1]: a
    for a in (
        _asset("selfie_segmentation", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
               249505, SEGMENTATION_CITATION),
        _asset("selfie_segmentation_landscape", "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
               250145, SEGMENTATION_CITATION),
        _asset("face_detection_short_range", "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
               229714, BLAZEFACE_CITATION),
        _asset("face_detection_full_range_sparse", "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
               676746, BLAZEFACE_CITATION),
        _asset("face_landmark", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
               1242398, FACE_MESH_CITATION),
    )
}


def build_model(stem: str, *, weights=True, engine: str = "auto", outputs=()) -> TFLiteModule:
    """The converted model ``stem`` (a key of :data:`ASSETS`).

    ``weights=True`` fetches the pinned file (cache, ``$AUTOPSY_MIRROR``, then network) and loads
    it; ``weights=None`` builds the same architecture with random parameters and reads no file
    except the recorded spec that ships with the package. ``engine`` and ``outputs``: what runs
    the no-gradient passes (see the module docstring and ``TFLiteModule.use_engine``).
    """
    if stem not in ASSETS:
        raise KeyError(f"unknown MediaPipe model {stem!r}; choose one of {sorted(ASSETS)}")
    if weights is None or weights is False:
        return TFLiteModule(load_spec(SPECS / f"{stem}.json"), name=stem)
    if weights is True:
        return load_tflite(fetch(ASSETS[stem]), name=stem).use_engine(engine, outputs=outputs)
    raise ValueError(f"weights must be True (pinned file) or None (random init), got {weights!r}")


# ----------------------------------------------------------------------------------------------
# ImageToTensorCalculator
# ----------------------------------------------------------------------------------------------


def image_to_tensor(image, size_hw: tuple[int, int], *, keep_aspect_ratio: bool, value_range=(0.0, 1.0)):
    """An RGB image as a ``[1, 3, h, w]`` float tensor the way MediaPipe's ImageToTensorCalculator makes it.

    Returns ``(tensor, roi)`` where ``roi = (x0, y0, width, height)`` is the image-pixel rectangle
    that the tensor covers (larger than the image when letterboxed), so a point ``(u, v)`` in
    normalised tensor coordinates lies at ``(x0 + u * width, y0 + v * height)`` in the image.
    """
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    img = torch.from_numpy(array).permute(2, 0, 1)[None]  # 1,3,H,W in 0..255
    height, width = array.shape[:2]
    out_h, out_w = size_hw
    roi_w, roi_h = float(width), float(height)
    if keep_aspect_ratio:
        target = out_w / out_h
        if roi_w / roi_h > target:
            roi_h = roi_w / target
        else:
            roi_w = roi_h * target
    x0, y0 = (width - roi_w) / 2, (height - roi_h) / 2
    # Output pixel centre (i + 0.5) maps to image coordinate x0 + (i + 0.5) * roi_w / out_w, with
    # pixel centres of the image at k + 0.5; grid_sample's align_corners=False uses the same
    # convention, and padding_mode="zeros" is BORDER_ZERO (black) outside the image.
    xs = (x0 + (torch.arange(out_w) + 0.5) * roi_w / out_w) / width * 2 - 1
    ys = (y0 + (torch.arange(out_h) + 0.5) * roi_h / out_h) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None].float()
    sampled = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Channels-last memory (NHWC, LiteRT's layout): the model's engine then takes the image in one
    # memcpy. The division writes that layout; same arithmetic, same values as ``sampled / 255 * ...``.
    tensor = torch.div(sampled, 255.0, out=torch.empty_like(sampled, memory_format=torch.channels_last))
    low, high = value_range
    return tensor.mul_(high - low).add_(low), (x0, y0, roi_w, roi_h)


# ----------------------------------------------------------------------------------------------
# Selfie Segmentation
# ----------------------------------------------------------------------------------------------


class SelfieSegmenter(nn.Module):
    """MediaPipe Selfie Segmentation (the Google Meet background model family), in torch.

    ``variant="general"`` takes 256x256 input, ``"landscape"`` 144x256 (HxW). ``forward`` maps a
    ``[N, 3, H, W]`` tensor in ``[0, 1]`` at the model's size to ``[N, 1, H, W]`` person
    probabilities (differentiable, for attribution); :meth:`segment` does the whole MediaPipe
    pipeline on a PIL image. Layers are ``self.model.ops[name]``; :attr:`bottleneck` names the
    lowest-resolution encoder tensor and :attr:`decoder_layers` the decoder's convolutions, for
    probes and feature visualisation (``self.model.intermediates(x, names=[...])``).
    """

    VARIANTS = {"general": ("selfie_segmentation", (256, 256)), "landscape": ("selfie_segmentation_landscape", (144, 256))}

    def __init__(self, variant: str = "general", weights=True, *, engine: str = "auto"):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.VARIANTS)}, got {variant!r}")
        self.variant = variant
        stem, self.input_size = self.VARIANTS[variant]
        self.model = build_model(stem, weights=weights, engine="torch")
        names = list(self.model.ops)
        first_upsample = next(i for i, m in enumerate(self.model.ops.values()) if m.tflite_op == "RESIZE_BILINEAR")
        #: The tensor entering the decoder's first upsampling (the encoder's output).
        self.bottleneck: str = self.model.ops[names[first_upsample]].input_names[0]
        #: Convolutions before the bottleneck (encoder) and after it (decoder), in order.
        self.encoder_layers = [n for n in names[:first_upsample] if isinstance(self.model.ops[n], nn.Conv2d)]
        self.decoder_layers = [n for n in names[first_upsample:] if isinstance(self.model.ops[n], (nn.Conv2d, nn.ConvTranspose2d))]
        if weights is True:  # LiteRT also keeps the bottleneck (probes) and the pre-sigmoid logits, if named
            self.use_engine(engine)

    def use_engine(self, engine: str = "auto", source=None) -> "SelfieSegmenter":
        """What runs no-gradient passes: ``"litert"``, ``"torch"`` or ``"auto"`` (see the module docstring).

        ``source`` is the ``.tflite`` file (default: the pinned one this model was loaded from), for
        a segmenter whose weights were loaded afterwards (``model.load_state_dict``).
        """
        extra = [n for n in (self.bottleneck, "segment") if n in self.model.tensor_names]
        self.model.use_engine(engine, source, outputs=extra)
        return self

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Stretch the whole image to the model's input (``keep_aspect_ratio: false``), values in [0, 1]."""
        tensor, _ = image_to_tensor(image, self.input_size, keep_aspect_ratio=False, value_range=(0.0, 1.0))
        return tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def segment(self, image: Image.Image) -> np.ndarray:
        """Person probability mask, ``H x W`` float32 in [0, 1] at the image's resolution."""
        mask = self(self.preprocess(image))
        mask = F.interpolate(mask, size=(image.height, image.width), mode="bilinear", align_corners=False)
        return mask[0, 0].clamp(0.0, 1.0).numpy()


# ----------------------------------------------------------------------------------------------
# BlazeFace
# ----------------------------------------------------------------------------------------------

#: The six BlazeFace keypoints, in model order (as seen from the camera: "right" is the person's).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True)
class Detection:
    """A face in image pixels: ``box = (x0, y0, x1, y1)``, ``score`` in [0, 1], 6 ``(x, y)`` keypoints."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: tuple[tuple[float, float], ...]


def ssd_anchors(*, input_size: tuple[int, int], strides, num_layers: int, min_scale: float = 0.1484375,
                max_scale: float = 0.75, anchor_offset: float = 0.5, aspect_ratios=(1.0,),
                interpolated_scale_aspect_ratio: float = 1.0, fixed_anchor_size: bool = True) -> np.ndarray:
    """SSD anchors as MediaPipe's SsdAnchorsCalculator makes them: ``[N, 4]`` (x_center, y_center, w, h).

    Consecutive layers with the same stride share one feature map; each layer adds one anchor per
    aspect ratio plus, when ``interpolated_scale_aspect_ratio > 0``, one at the geometric mean of
    this and the next layer's scale. With ``fixed_anchor_size`` every anchor is 1x1 (BlazeFace).
    """

    def scale_at(index: int) -> float:
        if num_layers == 1:
            return (min_scale + max_scale) / 2
        return min_scale + (max_scale - min_scale) * index / (num_layers - 1)

    height, width = input_size
    anchors = []
    layer = 0
    while layer < num_layers:
        sizes = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = scale_at(last)
            for ratio in aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if interpolated_scale_aspect_ratio > 0:
                next_scale = 1.0 if last == len(strides) - 1 else scale_at(last + 1)
                interpolated = math.sqrt(scale * next_scale)
                ratio = interpolated_scale_aspect_ratio
                sizes.append((interpolated * math.sqrt(ratio), interpolated / math.sqrt(ratio)))
            last += 1
        stride = strides[layer]
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        for y in range(rows):
            for x in range(cols):
                for w, h in sizes:
                    if fixed_anchor_size:
                        w, h = 1.0, 1.0
                    anchors.append(((x + anchor_offset) / cols, (y + anchor_offset) / rows, w, h))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def box_iou(a, b) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when they do not overlap)."""
    ix0, iy0, ix1, iy1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    if ix1 <= ix0 or iy1 <= iy0:
        return 0.0
    inter = (ix1 - ix0) * (iy1 - iy0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, *, iou_threshold: float = 0.3):
    """MediaPipe's weighted non-maximum suppression (NonMaxSuppressionCalculator, ``WEIGHTED``).

    Take the highest-scoring remaining detection; every remaining detection whose IoU with it
    exceeds ``iou_threshold`` (itself included) is merged: box and keypoints become the
    score-weighted average, the score stays the top one. Repeat on the rest.
    Returns a list of ``(box[4], score, keypoints[K, 2])``.
    """
    order = list(np.argsort(-scores, kind="stable"))
    kept = []
    while order:
        top = order[0]
        overlapping = [i for i in order if box_iou(boxes[top], boxes[i]) > iou_threshold]
        rest = [i for i in order if i not in overlapping]
        if not overlapping:  # degenerate (zero-area) top box: keep it alone
            overlapping, rest = [top], order[1:]
        weights = scores[overlapping][:, None]
        box = (boxes[overlapping] * weights).sum(0) / weights.sum()
        points = (keypoints[overlapping] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((box, float(scores[top]), points))
        order = rest
    return kept


class FaceDetector(nn.Module):
    """BlazeFace (MediaPipe face detection) with MediaPipe's decoding, in torch.

    ``variant="short_range"`` (128x128, 896 anchors, threshold 0.5; faces within ~2 m) or
    ``"full_range"`` (the sparse 192x192 model, 2304 anchors, threshold 0.6). ``forward`` maps a
    ``[N, 3, S, S]`` tensor in ``[-1, 1]`` to the raw ``(regressors [N, A, 16], logits [N, A, 1])``;
    :meth:`detect` runs the whole pipeline on a PIL image and returns :class:`Detection` records
    in image pixels, with weighted NMS as in MediaPipe.
    """

    VARIANTS = {
        "short_range": dict(stem="face_detection_short_range", size=128, strides=(8, 16, 16, 16),
                            interpolated_scale_aspect_ratio=1.0, min_score=0.5),
        "full_range": dict(stem="face_detection_full_range_sparse", size=192, strides=(4,),
                           interpolated_scale_aspect_ratio=0.0, min_score=0.6),
    }
    IOU_THRESHOLD = 0.3
    SCORE_CLIP = 100.0

    def __init__(self, variant: str = "short_range", weights=True, *, engine: str = "auto"):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.VARIANTS)}, got {variant!r}")
        self.variant = variant
        options = self.VARIANTS[variant]
        self.input_size = options["size"]
        self.min_score = options["min_score"]
        self.model = build_model(options["stem"], weights=weights, engine=engine)
        anchors = ssd_anchors(
            input_size=(self.input_size, self.input_size), strides=options["strides"],
            num_layers=len(options["strides"]),
            interpolated_scale_aspect_ratio=options["interpolated_scale_aspect_ratio"],
        )
        self.register_buffer("anchors", torch.from_numpy(anchors), persistent=False)

    def preprocess(self, image: Image.Image):
        """Letterboxed ``[1, 3, S, S]`` tensor in [-1, 1] and the image rectangle it covers."""
        return image_to_tensor(image, (self.input_size, self.input_size), keep_aspect_ratio=True,
                               value_range=(-1.0, 1.0))

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def use_engine(self, engine: str = "auto", source=None) -> "FaceDetector":
        """What runs no-gradient passes: ``"litert"``, ``"torch"`` or ``"auto"`` (see the module docstring)."""
        self.model.use_engine(engine, source)
        return self

    def decode(self, regressors: torch.Tensor, logits: torch.Tensor):
        """Boxes ``[N, A, 4]`` (x0, y0, x1, y1), keypoints ``[N, A, 6, 2]`` (normalised tensor
        coordinates) and scores ``[N, A]`` for every anchor (TensorsToDetectionsCalculator)."""
        scale = float(self.input_size)
        a = self.anchors
        cx = regressors[..., 0] / scale * a[:, 2] + a[:, 0]
        cy = regressors[..., 1] / scale * a[:, 3] + a[:, 1]
        w = regressors[..., 2] / scale * a[:, 2]
        h = regressors[..., 3] / scale * a[:, 3]
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        points = regressors[..., 4:16].reshape(*regressors.shape[:-1], 6, 2)
        points = points / scale * a[:, None, 2:4] + a[:, None, 0:2]
        scores = torch.sigmoid(logits[..., 0].clamp(-self.SCORE_CLIP, self.SCORE_CLIP))
        return boxes, points, scores

    def detect(self, image: Image.Image, *, min_score: float | None = None) -> list[Detection]:
        """Faces in ``image``, highest score first, with boxes and keypoints in image pixels."""
        return self.detect_many([image], min_score=min_score)[0]

    @torch.no_grad()
    def detect_many(self, images, *, min_score: float | None = None, batch_size: int = 16) -> list[list[Detection]]:
        """:meth:`detect` for many images; the network runs in batches (most of the time on a CPU)."""
        threshold = self.min_score if min_score is None else min_score
        results = []
        for start in range(0, len(images), batch_size):
            prepared = [self.preprocess(image) for image in images[start:start + batch_size]]
            boxes, points, scores = self.decode(*self(torch.cat([tensor for tensor, _ in prepared])))
            for k, (_, roi) in enumerate(prepared):
                results.append(self._detections(boxes[k].numpy(), points[k].numpy(), scores[k].numpy(), roi, threshold))
        return results

    def _detections(self, boxes, points, scores, roi, threshold) -> list[Detection]:
        """Weighted NMS, then from the letterboxed input back to image pixels."""
        x0, y0, roi_w, roi_h = roi
        keep = scores >= threshold
        merged = weighted_nms(boxes[keep], scores[keep], points[keep], iou_threshold=self.IOU_THRESHOLD)
        to_image = np.array([roi_w, roi_h], dtype=np.float64)
        offset = np.array([x0, y0], dtype=np.float64)
        detections = []
        for box, score, kps in merged:
            corners = box.reshape(2, 2) * to_image + offset
            kps = kps * to_image + offset
            detections.append(Detection(
                box=tuple(float(v) for v in corners.reshape(-1)), score=score,
                keypoints=tuple((float(x), float(y)) for x, y in kps),
            ))
        return detections


# ----------------------------------------------------------------------------------------------
# Face Mesh
# ----------------------------------------------------------------------------------------------


class FaceMesh(nn.Module):
    """MediaPipe Face Mesh (468 3-D landmarks on a 192x192 face crop), in torch.

    ``forward`` maps ``[N, 3, 192, 192]`` in [0, 1] to ``(landmarks [N, 468, 3], face_logit [N])``;
    landmarks are in crop pixels (x, y) with z at the same scale. MediaPipe feeds it a crop around
    a detected face rotated upright (1.5x the detection box); :meth:`landmarks` simply letterboxes
    the given image, so pass a face crop.
    """

    SIZE = 192

    def __init__(self, weights=True, *, engine: str = "auto"):
        super().__init__()
        self.model = build_model("face_landmark", weights=weights, engine=engine)

    def forward(self, x: torch.Tensor):
        landmarks, flag = self.model(x)
        return landmarks.reshape(x.shape[0], 468, 3), flag.reshape(x.shape[0])

    @torch.no_grad()
    def landmarks(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """``[468, 3]`` landmarks in image pixels (z scaled like x) and the face-presence probability."""
        tensor, (x0, y0, roi_w, roi_h) = image_to_tensor(image, (self.SIZE, self.SIZE), keep_aspect_ratio=True)
        points, flag = self(tensor)
        points = points[0].numpy().astype(np.float64) / self.SIZE
        out = np.stack([x0 + points[:, 0] * roi_w, y0 + points[:, 1] * roi_h, points[:, 2] * roi_w], axis=1)
        return out, float(torch.sigmoid(flag[0]))
