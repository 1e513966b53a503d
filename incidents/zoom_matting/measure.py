"""The incident's observable: how much of a detected face the person mask keeps.

- :func:`central_face` picks the face a photo is about (BlazeFace, the detection nearest the centre);
- :func:`segment_batch` runs MediaPipe Selfie Segmentation on many photos at once (the same numbers
  as ``SelfieSegmenter.segment``, batched) and keeps the pooled bottleneck features for the probe;
- :func:`face_coverage` is the share of the face box the mask keeps, binarised at 0.5 as
  conferencing apps do and as the soft mean;
- :func:`head_erased` flags a face whose binarised coverage falls below a threshold;
- :func:`measure_face` is all of it for one face, and :func:`measure_photo` for one photo: what the
  explorer shows is what the run measures.

A face box is ``(x0, y0, x1, y1)`` in image pixels; a pixel belongs to it when its centre does,
i.e. rows ``round(y0) .. round(y1) - 1`` and columns ``round(x0) .. round(x1) - 1``, clipped to the
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Conferencing apps binarise the person mask at 0.5 (MediaPipe's own examples do the same).
MASK_THRESHOLD = 0.5
#: A head counts as erased when less than half of its face box survives the binarised mask: more
#: of the face is background than person in what the call shows. The viral case was close to 0.
ERASED_BELOW = 0.5
#: Sensitivity of the erasure rate to that choice.
SENSITIVITY_THRESHOLDS = (0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class Coverage:
    hard: float  # share of face-box pixels with person probability >= threshold
    soft: float  # mean person probability over the face box
    pixels: int  # face-box pixels inside the image


def box_slices(box, shape) -> tuple[slice, slice]:
    """Row and column slices of the pixels whose centres lie in ``box``, clipped to ``shape`` (H, W)."""
    height, width = shape[:2]
    x0, y0, x1, y1 = box
    cols = slice(int(np.clip(round(x0), 0, width)), int(np.clip(round(x1), 0, width)))
    rows = slice(int(np.clip(round(y0), 0, height)), int(np.clip(round(y1), 0, height)))
    return rows, cols


def face_coverage(mask: np.ndarray, box, *, threshold: float = MASK_THRESHOLD) -> Coverage:
    """Share of the face box kept by the person ``mask`` (H x W probabilities in [0, 1]).

    ``hard`` binarises at ``threshold`` (pixels with probability >= threshold are person);
    ``soft`` is the mean probability, i.e. the face's share in a soft alpha composite.
    A box with no pixel inside the image is a ValueError (there is no face to cover).
    """
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W; got shape {mask.shape}")
    rows, cols = box_slices(box, mask.shape)
    region = mask[rows, cols]
    if region.size == 0:
        raise ValueError(f"face box {tuple(round(v, 1) for v in box)} has no pixel inside the {mask.shape} mask")
    return Coverage(float((region >= threshold).mean()), float(region.mean()), int(region.size))


#: BlazeFace keypoints that lie on the face itself (the two ear tragions sit on its edge).
CENTRAL_KEYPOINTS = (0, 1, 2, 3)  # right eye, left eye, nose tip, mouth centre


def keypoints_kept(mask: np.ndarray, keypoints, *, threshold: float = MASK_THRESHOLD) -> float:
    """Share of the face's central keypoints (eyes, nose tip, mouth) whose pixel the binarised mask
    keeps: a check on face coverage that a loose or shifted face box cannot inflate."""
    mask = np.asarray(mask)
    height, width = mask.shape
    kept = []
    for k in CENTRAL_KEYPOINTS:
        x, y = keypoints[k]
        col, row = int(np.clip(np.floor(x), 0, width - 1)), int(np.clip(np.floor(y), 0, height - 1))
        kept.append(mask[row, col] >= threshold)
    return float(np.mean(kept))


def head_erased(coverage: float, *, below: float = ERASED_BELOW) -> bool:
    """True when the binarised face coverage is below ``below`` (NaN: no face, not erased)."""
    return bool(np.isfinite(coverage) and coverage < below)


def central_face(detections, width: int, height: int):
    """The face a photo is about: of the detections, the one whose box centre is nearest the image
    centre (portraits are framed on their subject; FairFace photos are centred on the labelled
    face). None when there is no detection."""
    if not detections:
        return None

    def distance(d):
        x0, y0, x1, y1 = d.box
        return ((x0 + x1) / 2 - width / 2) ** 2 + ((y0 + y1) / 2 - height / 2) ** 2

    return min(detections, key=distance)


@torch.inference_mode()
def find_faces(detector, images, *, batch_size: int = 16) -> list:
    """The central face (or None) of every image, detection batched (``FaceDetector.detect_many``)."""
    found = detector.detect_many(images, batch_size=batch_size)
    return [central_face(d, im.width, im.height) for d, im in zip(found, images)]


def logits(segmenter, x: torch.Tensor) -> torch.Tensor:
    """Pre-sigmoid person logits ``[N, 1, h, w]`` at the model's resolution (the ``segment`` tensor)."""
    return segmenter.model.intermediates(x, names=["segment"])["segment"]


@torch.inference_mode()
def segment_batch(segmenter, images, *, batch_size: int = 16, features: bool = False):
    """Person masks (H x W float32 in [0, 1], each at its image's size) for many PIL images.

    The numbers equal ``segmenter.segment(image)`` image by image; batching only makes them faster.
    With ``features=True`` also returns the bottleneck activations averaged over positions,
    ``[N, C]`` (what ``probes.activations(segmenter, f"model.ops.{segmenter.bottleneck}", ...)``
    gives, without a second pass).
    """
    masks, pooled = [], []
    names = [segmenter.model.output_names[0]] + ([segmenter.bottleneck] if features else [])
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.cat([segmenter.preprocess(im) for im in chunk])
        out = segmenter.model.intermediates(x, names=names)
        probs = out[names[0]]
        if features:
            pooled.append(out[segmenter.bottleneck].flatten(2).mean(2))
        for k, im in enumerate(chunk):
            m = F.interpolate(probs[k : k + 1], size=(im.height, im.width), mode="bilinear", align_corners=False)
            masks.append(m[0, 0].clamp(0.0, 1.0).numpy())
    if features:
        return masks, torch.cat(pooled).numpy()
    return masks


@dataclass(frozen=True)
class FaceMeasure:
    """How much of one face the person mask keeps (NaN, not erased, when there is no face)."""

    coverage: float  # share of the face box with person probability >= threshold
    soft_coverage: float  # mean person probability over the face box
    keypoints_kept: float  # share of eyes, nose tip and mouth on the binarised mask
    erased: bool


def measure_face(mask: np.ndarray, face, *, threshold: float = MASK_THRESHOLD,
                 erased_below: float = ERASED_BELOW) -> FaceMeasure:
    """The run's measurement of one photo's face (a ``Detection`` or None) on its person ``mask``."""
    if face is None:
        return FaceMeasure(float("nan"), float("nan"), float("nan"), False)
    cov = face_coverage(mask, face.box, threshold=threshold)
    return FaceMeasure(cov.hard, cov.soft, keypoints_kept(mask, face.keypoints, threshold=threshold),
                       head_erased(cov.hard, below=erased_below))


@dataclass(frozen=True)
class PhotoResult:
    """One photo measured: person mask, every face found, the central one and its :class:`FaceMeasure`."""

    mask: np.ndarray
    faces: tuple  # every autopsy.models.mediapipe.Detection, highest score first
    face: object | None  # the central face, the one measured
    measured: FaceMeasure


def measure_photo(image, *, segmenter=None, detector=None, threshold: float = MASK_THRESHOLD,
                  erased_below: float = ERASED_BELOW) -> PhotoResult:
    """Segment one photo, find its central face and measure how much of it the mask keeps: the
    same functions, models and thresholds as the run (default: the incident's pinned models)."""
    from incidents.zoom_matting import models

    segmenter = segmenter or models.segmenter()
    detector = detector or models.face_detector()
    mask = segment_batch(segmenter, [image])[0]
    faces = tuple(detector.detect(image))
    face = central_face(faces, image.width, image.height)
    return PhotoResult(mask, faces, face, measure_face(mask, face, threshold=threshold, erased_below=erased_below))
