"""Interventions, one factor at a time: edit chosen photos (:mod:`.interventions`), segment them
again, and measure coverage on the face box found in the unedited photo.

Photos: the first k with a face in every race x gender cell (manifest order, not chosen by
coverage: the ``sample``), plus the lowest-coverage photos of the run (the ``lowest`` subset: can
light or a background rescue them?). Each level of each factor is one unit of work for the run's
engine; a photo an edit cannot be made on (e.g. no skin found) is recorded as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from autopsy import fairness
from autopsy.stats import proportion
from incidents.zoom_matting import interventions, measure
from incidents.zoom_matting.groups import group_key, ordered

#: Names of the two ends of a curve in the headline, so the story reads any run; other factors'
#: levels are ordered by their mean change of coverage, from worst to best.
ENDS = {"exposure": ("darkest", "brightest"), "skin_tone": ("lightest", "darkest")}


RECORD_COLUMNS = ("photo", "file", "race", "gender", "subset", "original_coverage")


@dataclass(frozen=True)
class Subject:
    """A chosen photo with what every edit of it needs."""

    image: object  # PIL image
    mask: np.ndarray
    box: tuple
    prepared: dict  # interventions.prepare(...)
    row: dict  # RECORD_COLUMNS


def choose(photos: pd.DataFrame, *, per_cell: int, lowest: int) -> pd.DataFrame:
    """The ``sample`` (first ``per_cell`` faces per race x gender cell) and the ``lowest`` subset."""
    faces = photos[photos["face_detected"]]
    sample = faces.groupby(["race", "gender"], sort=False).head(per_cell)
    low = faces.drop(sample.index).nsmallest(lowest, "coverage")
    return pd.concat([sample.assign(subset="sample"), low.assign(subset="lowest")])


def levels(config) -> list[tuple[str, object]]:
    """The edits to run: exposure stops other than 0, Monk Skin Tone levels, backgrounds."""
    return ([("exposure", s) for s in config.exposure_stops if float(s) != 0]
            + [("skin_tone", m) for m in config.mst_levels]
            + [("background", b) for b in config.backgrounds])


def run(ctx, images, masks, photos: pd.DataFrame, chosen: pd.DataFrame, build) -> pd.DataFrame:
    """Every level of every factor on the chosen photos; one row per photo and level (the unedited
    photos once, as level ``original``), with ``coverage``, ``change`` and ``erased``."""
    config = ctx.config
    subjects = []
    for i in chosen.index:
        box = photos.at[i, "box"]
        row = {"photo": int(i), "file": photos.at[i, "file"], "race": photos.at[i, "race"],
               "gender": photos.at[i, "gender"], "subset": chosen.at[i, "subset"],
               "original_coverage": photos.at[i, "coverage"]}
        prepared = interventions.prepare(images[i], masks[i], box, dilation=config.background_dilation)
        subjects.append(Subject(images[i], masks[i], box, prepared, row))
    records = [{**s.row, "factor": "original", "level": "original", "skipped": None,
                "coverage": photos.at[s.row["photo"], "coverage"],
                "soft_coverage": photos.at[s.row["photo"], "soft_coverage"]} for s in subjects]
    edit = partial(_edit_level, subjects=subjects, config=config)
    for level_records in ctx.map(edit, levels(config), setup=build, desc="edit levels"):
        records += level_records
    frame = pd.DataFrame(records, columns=None if records else [*RECORD_COLUMNS, "factor", "level", "skipped",
                                                                 "coverage", "soft_coverage"])
    frame["erased"] = [measure.head_erased(c, below=config.erased_below) for c in frame["coverage"]]
    frame["change"] = frame["coverage"] - frame["original_coverage"]
    return frame


def _edit_level(segmenter, factor_level, *, subjects, config) -> list[dict]:
    """One level: edit every subject, segment the edits in batches, measure coverage on the original box."""
    factor, level = factor_level
    skipped, edited, measured = [], [], []
    for s in subjects:
        base = {**s.row, "factor": factor, "level": str(level)}
        try:
            image, found = interventions.edit(s.image, factor, level, mask=s.mask, box=s.box,
                                              dilation=config.background_dilation, seed=config.seed,
                                              prepared=s.prepared)
        except ValueError as err:
            skipped.append({**base, "skipped": str(err), "coverage": np.nan, "soft_coverage": np.nan})
            continue
        edited.append(image)
        measured.append({**base, **found, "skipped": None, "box": s.box})
    masks = measure.segment_batch(segmenter, edited, batch_size=config.batch_size) if edited else []
    for mask, row in zip(masks, measured):
        cov = measure.face_coverage(mask, row.pop("box"), threshold=config.mask_threshold)
        skipped.append({**row, "coverage": cov.hard, "soft_coverage": cov.soft})
    return skipped


def level_key(factor: str, level) -> str:
    """A metrics key for a level: 'minus_1_5_stops', 'mst_5', 'near_skin', 'original'."""
    if str(level) == "original" or (factor == "exposure" and float(level) == 0):
        return "original"
    if factor == "exposure":
        s = float(level)
        return f"{'minus' if s < 0 else 'plus'}_{abs(s):g}_stops".replace(".", "_")
    return f"mst_{level}" if factor == "skin_tone" else str(level)


def level_label(factor: str, level) -> str:
    """How a level reads in tables and figures: '-1.5 stops', 'MST 5', 'dark grey'."""
    if str(level) == "original" or (factor == "exposure" and float(level) == 0):
        return "original"
    if factor == "exposure":
        return f"{float(level):+g} stops"
    if factor == "skin_tone":
        return f"MST {level}"
    return interventions.BACKGROUND_LABELS.get(str(level), str(level))


def summaries(records: pd.DataFrame, *, n_boot: int, seed: int) -> tuple[dict, list[dict]]:
    """Per factor and level: coverage, change and erasure of the sample (overall and by race) and of
    the lowest-coverage subset, the skipped photos, and the mean measured size of the edit."""
    metrics: dict = {}
    rows = []
    for (factor, level), part in records.groupby(["factor", "level"], sort=False):
        entry = _level_entry(factor, level, part, n_boot=n_boot, seed=seed)
        metrics.setdefault(factor, {})[level_key(factor, level)] = entry
        rows.append({"factor": factor.replace("_", " "), "level": entry["label"],
                     "face coverage (sample)": entry["coverage"], "change vs original": entry["change"],
                     "heads erased (sample)": entry["erased"], "lowest-coverage photos": entry["lowest_coverage"],
                     "skipped": entry["n_skipped"]})
    return metrics, rows


def _level_entry(factor, level, part: pd.DataFrame, *, n_boot: int, seed: int) -> dict:
    done = part[part["skipped"].isna()]
    sample, lowest = done[done["subset"] == "sample"], done[done["subset"] == "lowest"]
    mean = partial(fairness.mean_estimate, n_boot=n_boot)
    entry = {
        "label": level_label(factor, level), "n_skipped": int(part["skipped"].notna().sum()),
        "coverage": mean(sample["coverage"], seed=seed), "soft_coverage": mean(sample["soft_coverage"], seed=seed + 1),
        "change": mean(sample["change"], seed=seed + 2), "erased": proportion(int(sample["erased"].sum()), len(sample)),
        "lowest_coverage": mean(lowest["coverage"], seed=seed + 3), "lowest_change": mean(lowest["change"], seed=seed + 4),
        "lowest_erased": proportion(int(lowest["erased"].sum()), len(lowest)), "by_race": {},
    }
    for column in ("achieved_stops", "delta_ita", "ita_after", "delta_e_from_skin"):
        if column in done and done[column].notna().any():
            entry[f"mean_{column}"] = float(done[column].astype(float).mean())
    for race in ordered(sample["race"]):
        r = sample[sample["race"] == race]
        entry["by_race"][group_key(race)] = {"label": str(race), "coverage": mean(r["coverage"], seed=seed),
                                             "change": mean(r["change"], seed=seed + 2),
                                             "erased": proportion(int(r["erased"].sum()), len(r))}
    return entry


def headline(summary: dict) -> dict:
    """The ends of each curve: the darkest and brightest exposure, the lightest and darkest skin
    tone (in the configured order), the worst and best background (by mean change of coverage)."""
    out = {}
    for factor, entries in summary.items():
        keys = [k for k in entries if k != "original"]
        if factor == "original" or not keys:
            continue
        if factor not in ENDS:
            keys = sorted(keys, key=lambda k: np.nan_to_num(entries[k]["change"].value, nan=0.0))
        first, last = ENDS.get(factor, ("worst", "best"))
        out[factor] = {name: {field: entries[k][field] for field in ("label", "change", "coverage", "erased",
                                                                      "lowest_change")}
                       for name, k in ((first, keys[0]), (last, keys[-1]))}
    return out
