"""The incident's labelled photos and every pinned file a run reads.

- the ``smoke`` and ``quick`` profiles use the 540 FairFace head-and-shoulders photos pinned in
  :mod:`autopsy.data` (seven perceived race groups x two perceived genders, with real backgrounds:
  what a webcam shows), the first ``limit_per_group`` of each cell when set;
- a bring-your-own run (``images`` and ``labels`` in the config) reads a researcher's own folder of
  labelled photos, with the same ``limit_per_group``.

Labels are perceived attributes annotated by others (``autopsy.data.PERCEIVED_LABELS_NOTE``).
"""

from __future__ import annotations

from autopsy.data import FAIRFACE_CONTEXT, labelled_folder, load_image_set
from incidents.zoom_matting.models import FaceDetection, SelfieSegmentation

#: The models a run uses: the person segmenter and the face detector.
MODEL_PINS = (SelfieSegmentation.GENERAL.value, FaceDetection.SHORT_RANGE.value)


def assets(config) -> list:
    """Every pinned file a run of ``config`` reads (the photos too, unless the user brings their own)."""
    models = [pin.asset for pin in MODEL_PINS]
    return models if config.custom else [*models, *FAIRFACE_CONTEXT.assets()]


def load(config):
    """The run's photos as a ``datasets.Dataset`` with ``file``, ``path``, ``race`` and ``gender``."""
    if not config.custom:
        return load_image_set(FAIRFACE_CONTEXT, limit_per_group=config.limit_per_group)
    if config.images is None or config.labels is None:
        raise ValueError("bring-your-own needs both images (a folder) and labels (a CSV with file,race,gender)")
    dataset = labelled_folder(config.images, config.labels)
    if config.limit_per_group is None:
        return dataset
    seen: dict = {}
    keep = []
    for i, key in enumerate(zip(dataset["race"], dataset["gender"])):
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= config.limit_per_group:
            keep.append(i)
    return dataset.select(keep)
