"""The investigation's settings: one frozen config and its named profiles.

- ``smoke``: one photo per perceived race x gender group and tiny edits, bootstrap and feature
  visualisation; seconds, for tests;
- ``quick`` (the default): the 540 FairFace head-and-shoulders photos, offline with the mirror.

There is no ``paper`` profile: the model card's evaluation set (1,594 images with annotated person
masks, 17 world regions) is not public, so the published protocol cannot be rerun; the report puts
the card's figures beside the lab's and says what differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopsy.contract import Config
from incidents.zoom_matting.groups import CONTRAST
from incidents.zoom_matting.interventions import BACKGROUND_LABELS
from incidents.zoom_matting.measure import ERASED_BELOW, MASK_THRESHOLD, SENSITIVITY_THRESHOLDS


@dataclass(frozen=True)
class ZoomConfig(Config):
    mask_threshold: float = MASK_THRESHOLD  # conferencing apps binarise the person mask at 0.5
    erased_below: float = ERASED_BELOW  # head erased: less than half of the face box kept
    sensitivity_thresholds: tuple[float, ...] = SENSITIVITY_THRESHOLDS
    batch_size: int = 16  # photos per model pass
    intervention_photos_per_group: int = 4  # per race x gender cell, first in manifest order with a face
    intervention_lowest: int = 6  # plus the lowest-coverage photos: can light or background rescue them?
    exposure_stops: tuple[float, ...] = (-3, -1.5, 1)  # 0 is the original photo, measured once
    mst_levels: tuple[int, ...] = (1, 5, 10)  # Monk Skin Tone levels
    backgrounds: tuple[str, ...] = tuple(BACKGROUND_LABELS)
    background_dilation: int = 15  # pixels at 448 px: hair edges stay from the photo
    composite_examples: int = 2  # lowest-coverage photos shown composited (plus a median one)
    attribution_examples: int = 2  # per side: erased (or lowest-coverage) and kept
    attribution_steps: int = 12  # Integrated Gradients steps
    occlusion_window: int = 64  # model pixels (of 256), non-overlapping: a 4 x 4 grid
    randomisation_steps: int = 6  # layers in the randomisation cascade (plus the whole network)
    faithfulness_steps: int = 8
    featviz_channels: int = 2
    featviz_steps: int = 24
    featviz_size: int = 64
    probe_cv: int = 5
    attack_per_group: int = 4  # photos with a kept head per race x gender cell, first in manifest order (robustness)
    attack_races: tuple[str, ...] = CONTRAST  # perceived races attacked (the incident's contrast); () for every group
    attack_budgets: tuple[float, ...] = (4, 8, 16, 32)  # L-inf, 0-255 levels of the model input
    attack_method: str = "fgsm"  # "fgsm" (one gradient step) or "pgd"
    attack_steps: int = 10  # PGD steps (FGSM takes one)
    corruption_brightness: tuple[float, ...] = (0.6, 0.4, 0.25, 0.15)  # gain of the model input (< 1: darker)
    corruption_noise: tuple[float, ...] = (0.08, 0.18, 0.38)  # Gaussian noise sd, share of the input range

    def __post_init__(self):
        shares = {"mask_threshold": self.mask_threshold, "erased_below": self.erased_below,
                  **{f"sensitivity_thresholds[{i}]": t for i, t in enumerate(self.sensitivity_thresholds)}}
        for name, value in shares.items():
            if not 0 < float(value) <= 1:
                raise ValueError(f"{name} must be a share in (0, 1]; got {value!r}")
        unknown = [b for b in self.backgrounds if b not in BACKGROUND_LABELS]
        if unknown:
            raise ValueError(f"unknown background(s) {unknown}; choose from {list(BACKGROUND_LABELS)}")
        if any(not 1 <= int(m) <= 10 for m in self.mst_levels):
            raise ValueError(f"mst_levels are Monk Skin Tone levels 1-10; got {list(self.mst_levels)}")
        if self.batch_size < 1 or self.probe_cv < 2:
            raise ValueError(f"batch_size must be >= 1 and probe_cv >= 2; got {self.batch_size}, {self.probe_cv}")


PROFILES = {
    "smoke": ZoomConfig(limit_per_group=1, n_bootstrap=100, intervention_photos_per_group=1, intervention_lowest=1,
                        exposure_stops=(-2,), mst_levels=(9,), backgrounds=("near_skin",), composite_examples=1,
                        attribution_examples=1, attribution_steps=2, occlusion_window=128, randomisation_steps=2,
                        faithfulness_steps=2, featviz_channels=1, featviz_steps=2, featviz_size=16, probe_cv=2,
                        attack_per_group=1, attack_budgets=(16,), corruption_brightness=(0.25,),
                        corruption_noise=(0.26,)),
    "quick": ZoomConfig(),
}
