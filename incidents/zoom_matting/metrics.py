"""The typed metrics record of a run: what ``metrics/zoom_matting.json`` holds and the story may cite.

Group summaries are :class:`~incidents.zoom_matting.groups.GroupSummary` records keyed by
:func:`~incidents.zoom_matting.groups.group_key`; every number with an interval is an
:class:`autopsy.stats.Estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from incidents.zoom_matting.groups import GroupSummary, Summary


@dataclass(frozen=True)
class Thresholds:
    mask: float  # person probability kept by the binarised mask
    erased_below: float  # face coverage under which a head counts as erased


@dataclass(frozen=True)
class InterventionsDesign:
    n_photos: int
    n_sample: int  # first photos with a face per race x gender cell
    n_lowest: int  # the run's lowest-coverage photos
    photos_per_cell: int
    n_segmentations: int  # rows of interventions.csv, the unedited photos included


@dataclass(frozen=True)
class ZoomMetrics:
    n_photos: int
    n_faces: int
    n_no_face: int  # photos where BlazeFace found no face: counted per group, never dropped
    n_erased: int
    thresholds: Thresholds
    overall: Summary
    groups: dict[str, dict[str, GroupSummary]]  # race, gender, race_gender -> group key -> summary
    disparity: dict  # contrast, spreads, lowest and highest race group
    sensitivity: dict  # below_<percent> -> erasure rate at that cut-off
    published: dict  # the model card's fairness evaluation (from the segmenter's pin)
    interventions: dict  # factor -> level key -> coverage, change, erasure (sample, lowest, by race)
    intervention_headline: dict  # factor -> the two ends of its curve
    interventions_design: InterventionsDesign
    autopsy: dict  # examples, attribution shares, sanity checks, probe (autopsy.examine)
    robustness: dict  # smallest change that erases a kept head; darkness and noise that erase heads, by group

    def summary(self) -> tuple[str, ...]:
        """A few lines for the command line."""
        o = self.overall
        lines = [f"{self.n_photos} photos, {self.n_faces} faces detected, {self.n_erased} heads erased "
                 f"(coverage < {self.thresholds.erased_below:g})",
                 f"mean face coverage {o.coverage.value:.3f} [{o.coverage.low:.3f}, {o.coverage.high:.3f}]"]
        if self.disparity["contrast_groups"]["first"] != self.disparity["contrast_groups"]["second"]:
            c, g = self.disparity["coverage_contrast"], self.disparity["contrast_groups"]
            lines.append(f"coverage {g['first']} - {g['second']}: {c.value:+.3f} [{c.low:+.3f}, {c.high:+.3f}]")
        return tuple(lines)
