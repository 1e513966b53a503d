"""Per-face perception features: what the hiring scorer is trained on.

:func:`perceive` runs three public models on face images and returns one row per face:

- ``emotion_<class>``: the FER-2013 mini-Xception's 7 expression probabilities
  (:data:`~autopsy.models.keras_h5.FER2013_EMOTION`);
- ``gender_woman``, ``gender_man``: the IMDB mini-Xception's perceived-gender probabilities
  (:data:`~autopsy.models.keras_h5.IMDB_GENDER`);
- ``bs_<name>``: MediaPipe Face Landmarker v2's 52 blendshape scores
  (:data:`~autopsy.models.face_landmarker.BLENDSHAPE_NAMES`, ``bs_neutral`` for ``_neutral``),
  with ``face_presence``, the landmark model's probability that a face is in its crop.
- with ``features=True``, ``xf_000`` ... ``xf_127``: the expression model's own features, the
  128 channels of its last residual block (:data:`EXPRESSION_LAYER`) averaged over positions: what
  the hiring scorer reads from the expression model (frozen), from the same forward pass.

Where the face is (``face=``):

- ``"crop"`` (default; the FairFace candidates): the image is already a tight face crop. The
  mini-Xception models read the whole image, as the authors' demos read a face box. The
  landmarker reads a square region centred on the image and :data:`CROP_REGION_SCALE` times its
  size (sampled with replicated borders), standing in for MediaPipe's region of 1.5x the BlazeFace
  box: on these crops the median box is 197.5 of 224 px (200 crops, every 14th), so 1.5 x 0.88 =
  1.33. It is used for every face, rather than detecting, because BlazeFace misses 10 of those 200
  crops (4 of them Latino_Hispanic), which would make the route, and so the measurement, depend on
  the group. Measured against MediaPipe's own detected route on the 190 detected crops, this
  region gives blendshapes with Spearman 0.95 for ``mouthSmileLeft``/``Right`` and a mean absolute
  difference of 0.033 over the 51 named scores (the bare crop, scale 1.0: 0.87 and 0.060);
  ``benchmarks/face_hiring_perception.py`` re-measures it. The region is not rotated (median head
  roll on those crops 2.5 degrees, 95th percentile 13.5). ``face_presence`` is kept for every
  face: some FairFace crops are cut-off profiles the landmark model barely sees as faces (29 of
  the 200 under 0.5 on this route; 24 of the 190 on MediaPipe's), and a stage may want to report
  or exclude them.
- ``"detect"`` (your own photos): BlazeFace finds the face; the mini-Xception models read the
  detection box and the landmarker MediaPipe's rotated region. Photos without a face get NaN
  features and ``face_found = False``; nothing is dropped silently.

Everything runs in batches under ``torch.inference_mode``. The models carry their own licences and
citations (MIT for the mini-Xception files, Apache-2.0 for MediaPipe); the gender model's output is
a perceived binary label, not anyone's gender identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from autopsy.models.face_landmarker import (
    BLENDSHAPE_NAMES,
    FACE_LANDMARKER_V2,
    FaceLandmarker,
    Region,
    region_from_detection,
)
from autopsy.models.keras_h5 import (
    FER2013_EMOTION,
    IMDB_GENDER,
    MiniXception,
    emotion_mini_xception,
    gender_mini_xception,
    preprocess,
)

#: Side of the landmarker's region on a face crop, relative to the crop (see the module docstring).
CROP_REGION_SCALE = 1.33
FACE_MODES = ("crop", "detect")

EMOTION_COLUMNS = tuple(f"emotion_{c}" for c in FER2013_EMOTION.meta["classes"])
GENDER_COLUMNS = tuple(f"gender_{c}" for c in IMDB_GENDER.meta["classes"])
BLENDSHAPE_COLUMNS = tuple(f"bs_{name.lstrip('_')}" for name in BLENDSHAPE_NAMES)
FEATURE_COLUMNS = (*EMOTION_COLUMNS, *GENDER_COLUMNS, *BLENDSHAPE_COLUMNS)
#: The expression model's last residual block (128 channels at 4 x 4, before the class convolution).
EXPRESSION_LAYER = "add_4"
EXPRESSION_COLUMNS = tuple(f"xf_{i:03d}" for i in range(128))


@dataclass
class PerceptionModels:
    """The three perception models, loaded once (:meth:`load`) and reused across calls."""

    emotion: MiniXception
    gender: MiniXception
    landmarker: FaceLandmarker

    @classmethod
    def load(cls, *, emotion=FER2013_EMOTION, gender=IMDB_GENDER, landmarker=FACE_LANDMARKER_V2):
        """The pinned models (``None`` for any of them: random parameters, no file read)."""
        return cls(emotion_mini_xception(weights=emotion), gender_mini_xception(weights=gender),
                   FaceLandmarker(weights=landmarker))


def perceive(models: PerceptionModels, images, *, face: str = "crop", batch_size: int = 32,
             features: bool = False) -> pd.DataFrame:
    """Perception features of each face image (PIL), one row per image in the given order.

    Columns: ``face_found``, ``face_presence``, then :data:`FEATURE_COLUMNS` (and
    :data:`EXPRESSION_COLUMNS` with ``features=True``). See the module docstring for
    ``face="crop"`` (face crops, the default) and ``face="detect"`` (photos).
    """
    if face not in FACE_MODES:
        raise ValueError(f"face must be one of {FACE_MODES}, got {face!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = list(images)
    for k, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"image {k} is a {type(image).__name__}; pass PIL images (autopsy.data.load_image)")
    rows = [_perceive_batch(models, [im.convert("RGB") for im in images[start:start + batch_size]], face, features)
            for start in range(0, len(images), batch_size)]
    if not rows:
        return pd.DataFrame(columns=["face_found", "face_presence", *FEATURE_COLUMNS,
                                     *(EXPRESSION_COLUMNS if features else ())])
    return pd.concat(rows, ignore_index=True)


@torch.inference_mode()
def _perceive_batch(models: PerceptionModels, images: list[Image.Image], face: str, features: bool) -> pd.DataFrame:
    n = len(images)
    if face == "crop":
        regions = [_crop_region(image) for image in images]
        faces = images
    else:
        detections = models.landmarker.detector.detect_many(images)
        regions = [region_from_detection(d[0]) if d else None for d in detections]
        faces = [_box_crop(image, d[0].box) if d else None for image, d in zip(images, detections)]
    found = np.array([f is not None for f in faces])
    emotion = np.full((n, len(EMOTION_COLUMNS)), np.nan, np.float32)
    gender = np.full((n, len(GENDER_COLUMNS)), np.nan, np.float32)
    pooled = np.full((n, len(EXPRESSION_COLUMNS)), np.nan, np.float32)
    if found.any():
        kept = [f for f in faces if f is not None]
        x = preprocess(kept, models.emotion.weights)
        if _transforms(models.gender) != _transforms(models.emotion):
            x_gender = preprocess(kept, models.gender.weights)
        else:  # the two pins share one input pipeline: prepare the faces once
            x_gender = x
        out = models.emotion.intermediates(x, names=[EXPRESSION_LAYER, "predictions"])
        emotion[found] = out["predictions"].numpy()
        pooled[found] = out[EXPRESSION_LAYER].mean(dim=(2, 3)).numpy()
        gender[found] = models.gender(x_gender).numpy()
    marks = models.landmarker.analyse(images, regions=regions)
    table = pd.DataFrame(np.concatenate([emotion, gender, marks.blendshapes], axis=1), columns=list(FEATURE_COLUMNS))
    if features:
        table = pd.concat([table, pd.DataFrame(pooled, columns=list(EXPRESSION_COLUMNS))], axis=1)
    table.insert(0, "face_presence", marks.presence)
    table.insert(0, "face_found", found)
    return table


def _transforms(model: MiniXception):
    return dict((model.weights or FER2013_EMOTION).transforms)


def _box_crop(image: Image.Image, box) -> Image.Image:
    x0, y0, x1, y1 = box
    x0, y0 = max(0, round(x0)), max(0, round(y0))
    x1, y1 = min(image.width, round(x1)), min(image.height, round(y1))
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


def _crop_region(image: Image.Image) -> Region:
    side = CROP_REGION_SCALE * max(image.size)
    return Region(image.width / 2, image.height / 2, side, side)
