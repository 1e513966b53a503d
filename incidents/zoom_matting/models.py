"""The incident's two models, pinned once: MediaPipe Selfie Segmentation and BlazeFace, in torch.

Each pin (:class:`autopsy.contract.Weights`) carries the ``.tflite`` file (the lab's MediaPipe
asset), how an image becomes the model's input (MediaPipe's own graph, recorded in
:data:`autopsy.models.mediapipe.PREPROCESSING`) and what Google published about the model. The
Selfie Segmentation model card's fairness evaluation lives in its pin's ``meta`` and nowhere else;
:func:`published` turns it into the record the report shows beside the lab's numbers.

Builders follow one signature: ``build(*, weights=PIN | None)``; ``weights=None`` gives random
parameters from the architecture spec that ships with the lab and reads no file.
"""

from __future__ import annotations

import enum

from autopsy.contract import Weights, weights_of
from autopsy.models import mediapipe
from autopsy.models.tflite import load_tflite

SEGMENTATION_CARD = "https://mediapipe.page.link/selfiesegmentation-mc"

#: The model card's fairness evaluation (Google 2021): person-mask IoU against annotated ground truth
#: on 1,594 images of 17 world regions. The card's lowest and highest regions and the mean are
#: stated; for each region, the FairFace perceived race group nearest it (what the lab can compare).
MODEL_CARD_FAIRNESS = {
    "source": "MediaPipe Selfie Segmentation model card (Google, 2021), fairness evaluation",
    "metric": "IoU of the person mask against annotated ground truth, mean ± spread across images",
    "n_images": 1594,
    "n_regions": 17,
    "regions": {"Western Africa": {"iou": 0.9471, "plus_minus": 0.0157, "nearest_perceived_group": "Black"},
                "Eastern Asia": {"iou": 0.9727, "plus_minus": 0.0049, "nearest_perceived_group": "East Asian"}},
    "mean": {"iou": 0.9599, "plus_minus": 0.0087},
}


def _transforms(stem: str, output: str) -> dict:
    size_hw, letterbox, value_range = mediapipe.PREPROCESSING[stem]
    return {"size_hw": size_hw, "keep_aspect_ratio": letterbox, "value_range": value_range,
            "resampling": "bilinear affine warp, no anti-aliasing (MediaPipe ImageToTensorCalculator)",
            "output": output}


def _segmentation(stem: str, variant: str) -> Weights:
    return Weights(
        name=f"mediapipe-{stem.replace('_', '-')}", files=(mediapipe.ASSETS[stem],),
        transforms={**_transforms(stem, "person probability per pixel (the model ends in a sigmoid)"),
                    "variant": variant},
        meta={"task": "person (selfie) segmentation for video calls", "citation": mediapipe.SEGMENTATION_CITATION,
              "model_card": SEGMENTATION_CARD, "fairness": MODEL_CARD_FAIRNESS},
    )


def _detection(stem: str, variant: str) -> Weights:
    options = mediapipe.FaceDetector.VARIANTS[variant]
    return Weights(
        name=f"mediapipe-{stem.replace('_', '-')}", files=(mediapipe.ASSETS[stem],),
        transforms={**_transforms(stem, "SSD box and keypoint regressors, face logits per anchor"),
                    "variant": variant, "min_score": options["min_score"],
                    "non_max_suppression": f"weighted, IoU {mediapipe.FaceDetector.IOU_THRESHOLD}"},
        meta={"task": "face detection with six keypoints", "citation": mediapipe.BLAZEFACE_CITATION,
              "paper": "https://arxiv.org/abs/1907.05047"},
    )


class SelfieSegmentation(enum.Enum):
    """Pinned MediaPipe Selfie Segmentation weights: 256 x 256 (general) or 144 x 256 (landscape)."""

    GENERAL = _segmentation("selfie_segmentation", "general")
    LANDSCAPE = _segmentation("selfie_segmentation_landscape", "landscape")


class FaceDetection(enum.Enum):
    """Pinned BlazeFace weights: short range (faces within ~2 m, what the run uses) or full range."""

    SHORT_RANGE = _detection("face_detection_short_range", "short_range")
    FULL_RANGE = _detection("face_detection_full_range_sparse", "full_range")


def _variant(pin: Weights | None, variant: str | None, default: str) -> str:
    wanted = pin.transforms["variant"] if pin is not None else default
    if variant is not None and variant != wanted:
        raise ValueError(f"variant {variant!r} does not match the weights {pin.name!r} ({wanted}); pass one of them")
    return wanted


def segmenter(*, weights=SelfieSegmentation.GENERAL, variant: str | None = None) -> mediapipe.SelfieSegmenter:
    """MediaPipe Selfie Segmentation in torch with the pinned weights (``weights=None``: random,
    ``variant`` "general" or "landscape")."""
    pin = weights_of(weights)
    net = mediapipe.SelfieSegmenter(_variant(pin, variant, "general"), weights=None)
    if pin is not None:
        net.model.load_state_dict(load_tflite(pin.fetch(), name=pin.name).state_dict())
    return net.eval()


def face_detector(*, weights=FaceDetection.SHORT_RANGE, variant: str | None = None) -> mediapipe.FaceDetector:
    """BlazeFace with MediaPipe's decoding, with the pinned weights (``weights=None``: random)."""
    pin = weights_of(weights)
    net = mediapipe.FaceDetector(_variant(pin, variant, "short_range"), weights=None)
    if pin is not None:
        net.model.load_state_dict(load_tflite(pin.fetch(), name=pin.name).state_dict())
    return net.eval()


def published(pin: Weights = SelfieSegmentation.GENERAL.value) -> dict:
    """The model card's fairness evaluation as the report shows it: worst, best and mean IoU."""
    card = pin.meta["fairness"]
    regions = card["regions"]

    def region(name):
        return {"region": name, "iou": regions[name]["iou"], "plus_minus": regions[name]["plus_minus"]}

    return {"source": card["source"], "metric": card["metric"], "n_images": card["n_images"],
            "n_regions": card["n_regions"],
            "worst_region": region(min(regions, key=lambda r: regions[r]["iou"])),
            "best_region": region(max(regions, key=lambda r: regions[r]["iou"])),
            "mean": {"region": f"all {card['n_regions']} regions", **card["mean"]}}
