"""The incident's labelled photos, by profile.

- ``quick``: the 540 FairFace head-and-shoulders photos pinned in :mod:`autopsy.data` (seven
  perceived race groups x two perceived genders, with real backgrounds: what a webcam shows);
- ``custom``: a researcher's own folder of labelled photos (``--images DIR --labels CSV``).

There is no ``paper`` profile: the model card's evaluation set (1,594 images annotated with person
masks, 17 world regions) is not public, so the published protocol cannot be rerun; the story puts
the card's figures beside ours and says what differs.

Labels are perceived attributes annotated by others (``autopsy.data.PERCEIVED_LABELS_NOTE``).
"""

from autopsy.data import FAIRFACE_CONTEXT, labelled_folder, load_image_set
from autopsy.models.mediapipe import ASSETS

#: The model files this incident runs: the person segmenter and the face detector.
MODEL_STEMS = ("selfie_segmentation", "face_detection_short_range")


def model_assets():
    return [ASSETS[stem] for stem in MODEL_STEMS]


def assets(profile: str = "quick"):
    if profile == "quick":
        return [*model_assets(), *FAIRFACE_CONTEXT.assets()]
    if profile == "custom":
        return model_assets()
    raise ValueError(f"unknown profile {profile!r}; zoom_matting has the quick profile (or bring your own photos)")


def load(profile: str = "quick", *, images=None, labels=None, limit_per_group=None):
    """The profile's photos as a ``datasets.Dataset`` with ``file``, ``path``, ``race`` and ``gender``."""
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise ValueError("bring-your-own needs both images (a folder) and labels (a CSV with file,race,gender)")
        dataset = labelled_folder(images, labels)
        if limit_per_group is None:
            return dataset
        seen: dict = {}
        keep = []
        for i, key in enumerate(zip(dataset["race"], dataset["gender"])):
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= limit_per_group:
                keep.append(i)
        return dataset.select(keep)
    if profile == "quick":
        return load_image_set(FAIRFACE_CONTEXT, limit_per_group=limit_per_group)
    raise ValueError(f"unknown profile {profile!r}; zoom_matting has the quick profile, or pass images and labels")
