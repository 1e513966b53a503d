"""The Zoom virtual-background investigation, top to bottom.

1. Every photo: MediaPipe Selfie Segmentation's person mask, BlazeFace's central face, and the face
   coverage -- the share of the face box the mask keeps (binarised at 0.5, and the soft mean). A head
   counts as erased when coverage < 0.5; photos without a detected face are counted per group.
2. Coverage, erasure and detector misses per perceived race, gender and race x gender, with
   intervals (bootstrap within group for means, Wilson for rates) and small-group warnings; the
   sensitivity of the erasure rate to its threshold; the model card's regional IoU beside ours.
3. Interventions, one factor at a time (exposure, skin tone, background), segmenting each edited
   photo again and measuring coverage on the original face box; the virtual-background composite.
4. The autopsy (:mod:`.autopsy_steps`): attribution of the face's person score for erased (or
   lowest-coverage) versus kept heads with sanity checks, feature visualisation of decoder channels,
   and a perceived-race probe on the bottleneck with a control task.

Writes ``metrics/zoom_matting.json`` and figures under ``outputs/zoom_matting/``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from autopsy import fairness, figures  # noqa: E402
from autopsy.data import load_image  # noqa: E402
from autopsy.models.mediapipe import FaceDetector  # noqa: E402
from autopsy.runs import start_run, write_run  # noqa: E402
from autopsy.stats import Estimate, wilson_interval  # noqa: E402
from incidents.zoom_matting import data, interventions, measure  # noqa: E402

SLUG = "zoom_matting"
TITLE = "Zoom virtual background"
DEFAULTS = {
    "profile": "quick",
    "seed": 42,
    "limit_per_group": None,
    "mask_threshold": measure.MASK_THRESHOLD,  # conferencing apps binarise the mask at 0.5
    "erased_below": measure.ERASED_BELOW,  # head erased: less than half the face box kept
    "sensitivity_thresholds": list(measure.SENSITIVITY_THRESHOLDS),
    "n_bootstrap": 2000,
    "batch_size": 16,
    "intervention_photos_per_group": 4,  # per race x gender cell, first in manifest order with a face
    "intervention_lowest": 6,  # plus the lowest-coverage photos: can light or background rescue them?
    "exposure_stops": [-3, -1.5, 1],  # 0 is the original photo, measured once
    "mst_levels": [1, 5, 10],
    "backgrounds": list(interventions.BACKGROUND_LABELS),
    "background_dilation": 15,  # pixels at 448 px: hair edges stay from the photo
    "composite_examples": 2,
    "attribution_examples": 2,  # per side: erased (or lowest-coverage) and kept
    "attribution_steps": 12,
    "occlusion_window": 64,  # model pixels (of 256), non-overlapping: a 4 x 4 grid
    "randomisation_steps": 6,
    "faithfulness_steps": 8,
    "featviz_channels": 2,
    "featviz_steps": 24,
    "featviz_size": 64,
    "probe_cv": 5,
}
#: FairFace's race groups in the order the lab reports them; other labels follow alphabetically.
RACE_ORDER = ["White", "Black", "East Asian", "Southeast Asian", "Indian", "Middle Eastern", "Latino_Hispanic"]
MIN_GROUP = fairness.MIN_GROUP_SIZE
#: MediaPipe Selfie Segmentation model card (Google 2021): person-segmentation IoU over 17 regions.
MODEL_CARD = {
    "source": "MediaPipe Selfie Segmentation model card (Google, 2021), fairness evaluation",
    "metric": "IoU of the person mask against annotated ground truth, mean ± spread across images",
    "n_images": 1594,
    "n_regions": 17,
    "worst_region": {"region": "Western Africa", "iou": 0.9471, "plus_minus": 0.0157},
    "best_region": {"region": "Eastern Asia", "iou": 0.9727, "plus_minus": 0.0049},
    "mean": {"region": "all 17 regions", "iou": 0.9599, "plus_minus": 0.0087},
}


def investigate(out_dir, params: dict | None = None, progress=None) -> dict:
    params = {**DEFAULTS, **(params or {})}
    paths, progress = start_run(SLUG, out_dir, params, progress)
    started = time.perf_counter()

    # -- data and models --------------------------------------------------------------------
    progress(0.0, "loading photos and models")
    dataset = data.load(params["profile"], images=params.get("images"), labels=params.get("labels"),
                        limit_per_group=params["limit_per_group"])
    table = dataset.to_pandas()[["file", "path", "race", "gender"]].copy()
    table["race_gender"] = table["race"].astype(str) + " " + table["gender"].astype(str)
    images = [load_image(p) for p in table["path"]]
    from incidents.zoom_matting import build_model

    segmenter = build_model(weights=True)
    detector = FaceDetector("short_range").eval()

    # -- 1. every photo -----------------------------------------------------------------------
    progress(0.05, f"segmenting {len(images)} photos")
    masks, bottleneck = measure.segment_batch(segmenter, images, batch_size=params["batch_size"], features=True)
    progress(0.25, "detecting faces")
    rows = []
    found = measure.find_faces(detector, images, batch_size=params["batch_size"])
    for face, mask in zip(found, masks):
        row = {"face_detected": face is not None, "face_score": np.nan, "box": None,
               "coverage": np.nan, "soft_coverage": np.nan, "keypoints_kept": np.nan}
        if face is not None:
            cov = measure.face_coverage(mask, face.box, threshold=params["mask_threshold"])
            row.update(face_score=face.score, box=face.box, coverage=cov.hard, soft_coverage=cov.soft,
                       keypoints_kept=measure.keypoints_kept(mask, face.keypoints, threshold=params["mask_threshold"]))
        rows.append(row)
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    table["erased"] = [measure.head_erased(c, below=params["erased_below"]) for c in table["coverage"]]
    _save_photos(table, paths.outputs / "photos.csv")

    metrics: dict = {"n_photos": len(table), "n_faces": int(table["face_detected"].sum()),
                     "n_no_face": int((~table["face_detected"]).sum()), "n_erased": int(table["erased"].sum()),
                     "thresholds": {"mask": params["mask_threshold"], "erased_below": params["erased_below"]}}
    tables: dict = {}
    figs: dict = {}

    # -- 2. groups --------------------------------------------------------------------------
    progress(0.4, "coverage and erasure per group")
    metrics["overall"] = _summary(table, params)
    metrics["groups"] = {}
    for attribute in ("race", "gender", "race_gender"):
        metrics["groups"][attribute] = _group_summaries(table, attribute, params)
        tables[f"groups_{attribute}"] = [
            {attribute.replace("_", " x "): g["label"], "photos": g["n_photos"], "no face detected": g["no_face"],
             "face coverage (mask ≥ 0.5)": g["coverage"], "soft coverage": g["soft_coverage"],
             "eyes/nose/mouth kept": g["keypoints_kept"], "heads erased": g["erased"]}
            for g in metrics["groups"][attribute].values()]
    metrics["disparity"] = _disparities(table, params)
    metrics["sensitivity"], tables["sensitivity"] = _sensitivity(table, params)
    metrics["published"] = MODEL_CARD
    tables["model_card_vs_lab"] = _model_card_table(metrics)
    figs["coverage.png"] = _figure_groups(table, metrics, params, paths.outputs / "coverage.png")

    # -- 3. interventions --------------------------------------------------------------------
    progress(0.45, "interventions: exposure, skin tone, background")
    chosen = _intervention_photos(table, params)
    records = _run_interventions(segmenter, images, masks, table, chosen, params, progress)
    records.to_csv(paths.outputs / "interventions.csv", index=False)
    metrics["interventions"], tables["interventions"] = _intervention_summaries(records, params)
    metrics["intervention_headline"] = _intervention_headline(metrics["interventions"])
    metrics["interventions_design"] = {
        "n_photos": int(len(chosen)), "n_sample": int((chosen["subset"] == "sample").sum()),
        "n_lowest": int((chosen["subset"] == "lowest").sum()),
        "photos_per_cell": params["intervention_photos_per_group"],
        "n_segmentations": int(len(records)),
    }
    figs["interventions.png"] = _figure_interventions(records, params, paths.outputs / "interventions.png")
    figs["composite.png"] = _figure_composite(images, masks, table, params, paths.outputs / "composite.png")

    # -- 4. autopsy --------------------------------------------------------------------------
    from incidents.zoom_matting import autopsy_steps

    progress(0.75, "autopsy: attribution, sanity checks, feature visualisation, probe")
    found = autopsy_steps.run(segmenter, images, masks, bottleneck, table, paths.outputs, params, progress=progress)
    metrics["autopsy"] = found["metrics"]
    tables.update(found["tables"])
    figs.update(found["figures"])

    progress(0.98, "writing metrics")
    custom = params["profile"] == "custom"
    record = write_run(paths, title=TITLE, profile=params["profile"], params=params, metrics=metrics,
                       tables=tables, assets=data.model_assets() if custom else data.assets(params["profile"]),
                       figures=figs, started=started)
    record["summary"] = _summary_lines(metrics)
    progress(1.0, "done")
    return record


# -- helpers: groups and estimates ---------------------------------------------------------------


def group_key(value) -> str:
    """A metrics key for a group label: 'East Asian' -> 'East_Asian', 'Black Female' -> 'Black_Female'."""
    return re.sub(r"\W+", "_", str(value)).strip("_") or "unlabelled"


def _ordered(values) -> list:
    values = list(dict.fromkeys(values))

    def rank(v):
        race = str(v).rsplit(" ", 1)[0] if str(v) not in RACE_ORDER else str(v)
        return (RACE_ORDER.index(race) if race in RACE_ORDER else len(RACE_ORDER), str(v))

    return sorted(values, key=rank)


def rate(successes: int, n: int, *, min_n: int = MIN_GROUP) -> Estimate:
    """A proportion with its Wilson 95% interval; n = 0 gives an undefined estimate saying so."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "Wilson 95%", warning="no items")
    low, high = wilson_interval(int(successes), int(n))
    warning = f"n={n} < {min_n}: interval unreliable, group too small" if n < min_n else None
    return Estimate(successes / n, low, high, int(n), "Wilson 95%", warning=warning)


def mean_estimate(values, params, *, seed_offset: int = 0) -> Estimate:
    """Mean with a percentile bootstrap interval (the lab's ``fairness.score_by_group`` on one group)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap", warning="no faces detected")
    frame = fairness.score_by_group(values, np.zeros(len(values), dtype=int), n_boot=params["n_bootstrap"],
                                    seed=params["seed"] + seed_offset)
    return _row_estimate(frame.iloc[0])


def _row_estimate(row) -> Estimate:
    return Estimate(float(row["value"]), float(row["low"]), float(row["high"]), int(row["n"]), str(row["test"]),
                    level=float(row["level"]), warning=row["warning"] if isinstance(row["warning"], str) else None)


def _summary(part: pd.DataFrame, params) -> dict:
    faces = part[part["face_detected"]]
    return {
        "n_photos": len(part), "n_faces": len(faces),
        "no_face": rate(int((~part["face_detected"]).sum()), len(part)),
        "coverage": mean_estimate(faces["coverage"], params),
        "soft_coverage": mean_estimate(faces["soft_coverage"], params, seed_offset=1),
        "erased": rate(int(faces["erased"].sum()), len(faces)),
        "n_erased": int(faces["erased"].sum()),
        "keypoints_kept": mean_estimate(faces["keypoints_kept"], params, seed_offset=5),
        # erased by the box measure although eyes, nose and mouth all stay: a loose or shifted box
        "n_erased_features_kept": int((faces["erased"] & (faces["keypoints_kept"] >= 1)).sum()),
        "features_lost": rate(int((faces["keypoints_kept"] < 0.5).sum()), len(faces)),
    }


def _group_summaries(table: pd.DataFrame, attribute: str, params) -> dict:
    """Per group: photos, detector misses (Wilson), coverage and soft coverage (bootstrap within
    group, ``fairness.score_by_group``), erasure rate (Wilson over detected faces)."""
    faces = table[table["face_detected"]]
    cover = {}
    for column in ("coverage", "soft_coverage"):
        if len(faces):
            frame = fairness.score_by_group(faces[column].to_numpy(), faces[attribute].reset_index(drop=True),
                                            n_boot=params["n_bootstrap"], seed=params["seed"])
            cover[column] = {row[attribute]: _row_estimate(row) for _, row in frame.iterrows()}
        else:
            cover[column] = {}
    out = {}
    for group in _ordered(table[attribute]):
        part = table[table[attribute] == group]
        detected = part[part["face_detected"]]
        empty = Estimate(float("nan"), float("nan"), float("nan"), 0, "bootstrap", warning="no faces detected")
        out[group_key(group)] = {
            "label": str(group), "n_photos": len(part), "n_faces": len(detected),
            "n_no_face": int(len(part) - len(detected)), "n_erased": int(detected["erased"].sum()),
            "no_face": rate(int(len(part) - len(detected)), len(part)),
            "coverage": cover["coverage"].get(group, empty),
            "soft_coverage": cover["soft_coverage"].get(group, empty),
            "erased": rate(int(detected["erased"].sum()), len(detected)),
            "keypoints_kept": mean_estimate(detected["keypoints_kept"], params, seed_offset=5),
        }
    return out


def _two_group_difference(a: np.ndarray, b: np.ndarray, params, label: str) -> Estimate:
    """mean(a) - mean(b) with a bootstrap that resamples within each group, and a Mann-Whitney p."""
    rng = np.random.default_rng(params["seed"])
    boots = (a[rng.integers(0, len(a), (params["n_bootstrap"], len(a)))].mean(1)
             - b[rng.integers(0, len(b), (params["n_bootstrap"], len(b)))].mean(1))
    low, high = np.quantile(boots, [0.025, 0.975])
    p = float(scipy_stats.mannwhitneyu(a, b).pvalue) if len(a) > 0 and len(b) > 0 and np.ptp(np.r_[a, b]) > 0 else None
    small = [f"{n}" for n in (len(a), len(b)) if n < MIN_GROUP]
    return Estimate(float(a.mean() - b.mean()), float(low), float(high), len(a) + len(b),
                    f"{label}; bootstrap within groups ({params['n_bootstrap']} resamples); Mann-Whitney U p",
                    p_value=p, warning=f"a group below n={MIN_GROUP}" if small else None)


def _disparities(table: pd.DataFrame, params) -> dict:
    """The contrast of the incident (Black - White coverage, when both labels exist; else the lowest
    minus the highest race group), the spread over race groups with Kruskal-Wallis, and the
    erasure-rate spread (``fairness.metric_difference``)."""
    faces = table[table["face_detected"]]
    means = faces.groupby("race")["coverage"].mean()
    out: dict = {}
    if len(means) < 2:
        undefined = Estimate(float("nan"), float("nan"), float("nan"), len(faces), "not estimable",
                             warning="fewer than two race groups with a detected face")
        only = str(means.index[0]) if len(means) else "none"
        return {"coverage_contrast": undefined, "soft_coverage_contrast": undefined, "coverage_spread": undefined,
                "erased_spread": undefined, "no_face_spread": undefined,
                "contrast_groups": {"first": only, "second": only},
                "lowest_race": {"group": only, "coverage": float(means.min()) if len(means) else float("nan")},
                "highest_race": {"group": only, "coverage": float(means.max()) if len(means) else float("nan")}}
    if {"Black", "White"} <= set(means.index):
        first, second = "Black", "White"
    else:
        first, second = means.idxmin(), means.idxmax()
    for column in ("coverage", "soft_coverage"):
        a = faces.loc[faces["race"] == first, column].to_numpy(float)
        b = faces.loc[faces["race"] == second, column].to_numpy(float)
        out[f"{column}_contrast"] = _two_group_difference(a, b, params, f"{column}: {first} - {second}")
    out["contrast_groups"] = {"first": str(first), "second": str(second)}
    out["lowest_race"] = {"group": str(means.idxmin()), "coverage": float(means.min())}
    out["highest_race"] = {"group": str(means.idxmax()), "coverage": float(means.max())}
    groups = [g["coverage"].to_numpy(float) for _, g in faces.groupby("race")]
    rng = np.random.default_rng(params["seed"] + 7)
    boots = np.array([[g[rng.integers(0, len(g), len(g))].mean() for g in groups] for _ in range(params["n_bootstrap"])])
    spread = boots.max(1) - boots.min(1)
    try:
        kw = float(scipy_stats.kruskal(*groups).pvalue) if all(len(g) > 0 for g in groups) else None
    except ValueError:  # all values identical
        kw = None
    out["coverage_spread"] = Estimate(
        float(means.max() - means.min()), float(np.quantile(spread, 0.025)), float(np.quantile(spread, 0.975)),
        len(faces), f"max - min of race-group mean coverage; bootstrap within groups ({params['n_bootstrap']} "
        "resamples); Kruskal-Wallis p", p_value=kw)
    out["erased_spread"] = fairness.metric_difference(
        None, faces["erased"].to_numpy(), faces["race"].reset_index(drop=True), metric="selection_rate",
        n_boot=params["n_bootstrap"], seed=params["seed"])
    out["no_face_spread"] = fairness.metric_difference(
        None, (~table["face_detected"]).to_numpy(), table["race"].reset_index(drop=True),
        metric="selection_rate", n_boot=params["n_bootstrap"], seed=params["seed"])
    return out


def _sensitivity(table: pd.DataFrame, params):
    faces = table[table["face_detected"]]
    metrics, rows = {}, []
    for t in params["sensitivity_thresholds"]:
        flag = faces["coverage"] < t
        metrics[f"below_{int(round(100 * t))}"] = rate(int(flag.sum()), len(faces))
        row = {"erased if coverage below": t, "all photos": rate(int(flag.sum()), len(faces))}
        for race in _ordered(faces["race"]):
            part = flag[faces["race"] == race]
            row[str(race)] = f"{int(part.sum())}/{len(part)}"
        rows.append(row)
    return metrics, rows


def _model_card_table(metrics: dict) -> list[dict]:
    """The card's regional IoU beside the lab's nearest perceived groups, with what differs."""
    race = metrics["groups"]["race"]
    rows = []
    pairs = [("worst_region", "Black"), ("best_region", "East_Asian"), ("mean", None)]
    for card_key, lab_key in pairs:
        card = MODEL_CARD[card_key]
        lab = race.get(lab_key) if lab_key else None
        rows.append({
            "model card group": card["region"],
            "model card IoU": f"{100 * card['iou']:.2f}% ± {100 * card['plus_minus']:.2f}",
            "lab group (perceived race)": lab["label"] if lab else ("all photos" if lab_key is None else "absent"),
            "lab face coverage": (lab or metrics["overall"])["coverage"] if (lab or lab_key is None) else "—",
            "lab heads erased": (lab or metrics["overall"])["erased"] if (lab or lab_key is None) else "—",
        })
    return rows


def _save_photos(table: pd.DataFrame, path: Path) -> None:
    out = table.drop(columns=["path"]).copy()
    out["box"] = [",".join(f"{v:.1f}" for v in b) if isinstance(b, tuple) else "" for b in out["box"]]
    tmp = path.with_suffix(".csv.part")
    out.to_csv(tmp, index=False)
    tmp.replace(path)


# -- interventions -------------------------------------------------------------------------------


def _intervention_photos(table: pd.DataFrame, params) -> pd.DataFrame:
    """The first k photos with a face in every race x gender cell (manifest order: not chosen by
    coverage), plus the lowest-coverage photos overall as a separate subset."""
    faces = table[table["face_detected"]]
    sample = faces.groupby(["race", "gender"], sort=False).head(params["intervention_photos_per_group"])
    lowest = faces.drop(sample.index).nsmallest(params["intervention_lowest"], "coverage")
    return pd.concat([sample.assign(subset="sample"), lowest.assign(subset="lowest")])


def levels(params) -> list[tuple[str, object]]:
    """The edits to run: exposure stops other than 0, Monk Skin Tone levels, backgrounds."""
    return ([("exposure", s) for s in params["exposure_stops"] if float(s) != 0]
            + [("skin_tone", m) for m in params["mst_levels"]]
            + [("background", b) for b in params["backgrounds"]])


def _run_interventions(segmenter, images, masks, table, chosen: pd.DataFrame, params, progress) -> pd.DataFrame:
    """Edit, segment again (batched per level), measure coverage on the original face box."""
    records = [{"photo": int(i), "file": table.at[i, "file"], "race": table.at[i, "race"],
                "gender": table.at[i, "gender"], "subset": chosen.at[i, "subset"], "factor": "original",
                "level": "original", "original_coverage": table.at[i, "coverage"], "skipped": None,
                "coverage": table.at[i, "coverage"], "soft_coverage": table.at[i, "soft_coverage"]}
               for i in chosen.index]  # the unedited photos, measured once in step 1
    todo = levels(params)
    prepared = {i: interventions.prepare(images[i], masks[i], table.at[i, "box"], dilation=params["background_dilation"])
                for i in chosen.index}
    for step, (factor, level) in enumerate(todo):
        progress(0.45 + 0.25 * step / len(todo), f"intervention {factor} = {level}")
        edited, meta = [], []
        for i in chosen.index:
            box = table.at[i, "box"]
            base = {"photo": int(i), "file": table.at[i, "file"], "race": table.at[i, "race"],
                    "gender": table.at[i, "gender"], "subset": chosen.at[i, "subset"], "factor": factor,
                    "level": str(level), "original_coverage": table.at[i, "coverage"]}
            try:
                image, measured = interventions.edit(images[i], factor, level, mask=masks[i], box=box,
                                                     dilation=params["background_dilation"], seed=params["seed"],
                                                     prepared=prepared[i])
            except ValueError as err:
                records.append({**base, "skipped": str(err), "coverage": np.nan, "soft_coverage": np.nan})
                continue
            edited.append(image)
            meta.append({**base, **measured, "skipped": None})
        new_masks = measure.segment_batch(segmenter, edited, batch_size=params["batch_size"]) if edited else []
        for m, row in zip(new_masks, meta):
            cov = measure.face_coverage(m, table.at[row["photo"], "box"], threshold=params["mask_threshold"])
            records.append({**row, "coverage": cov.hard, "soft_coverage": cov.soft})
    frame = pd.DataFrame(records)
    frame["erased"] = [measure.head_erased(c, below=params["erased_below"]) for c in frame["coverage"]]
    frame["change"] = frame["coverage"] - frame["original_coverage"]
    return frame


def level_key(factor: str, level) -> str:
    if str(level) == "original":
        return "original"
    if factor == "exposure":
        s = float(level)
        return "original" if s == 0 else f"{'minus' if s < 0 else 'plus'}_{abs(s):g}_stops".replace(".", "_")
    if factor == "skin_tone":
        return f"mst_{level}"
    return str(level)


def level_label(factor: str, level) -> str:
    if str(level) == "original":
        return "original"
    if factor == "exposure":
        return "original" if float(level) == 0 else f"{float(level):+g} stops"
    if factor == "skin_tone":
        return f"MST {level}"
    return interventions.BACKGROUND_LABELS.get(str(level), str(level))


def _intervention_summaries(records: pd.DataFrame, params):
    metrics: dict = {}
    rows = []
    for (factor, level), part in records.groupby(["factor", "level"], sort=False):
        done = part[part["skipped"].isna()]
        sample = done[done["subset"] == "sample"]
        lowest = done[done["subset"] == "lowest"]
        entry = {
            "label": level_label(factor, level),
            "n_skipped": int(part["skipped"].notna().sum()),
            "coverage": mean_estimate(sample["coverage"], params),
            "soft_coverage": mean_estimate(sample["soft_coverage"], params, seed_offset=1),
            "change": mean_estimate(sample["change"], params, seed_offset=2),
            "erased": rate(int(sample["erased"].sum()), len(sample)),
            "lowest_coverage": mean_estimate(lowest["coverage"], params, seed_offset=3),
            "lowest_change": mean_estimate(lowest["change"], params, seed_offset=4),
            "lowest_erased": rate(int(lowest["erased"].sum()), len(lowest)),
            "by_race": {},
        }
        for column in ("achieved_stops", "delta_ita", "ita_after", "delta_e_from_skin"):
            if column in done and done[column].notna().any():
                entry[f"mean_{column}"] = float(done[column].astype(float).mean())
        for race in _ordered(sample["race"]):
            r = sample[sample["race"] == race]
            entry["by_race"][group_key(race)] = {
                "label": str(race), "coverage": mean_estimate(r["coverage"], params),
                "change": mean_estimate(r["change"], params, seed_offset=2),
                "erased": rate(int(r["erased"].sum()), len(r)),
            }
        metrics.setdefault(factor, {})[level_key(factor, level)] = entry
        rows.append({"factor": factor.replace("_", " "), "level": entry["label"],
                     "face coverage (sample)": entry["coverage"], "change vs original": entry["change"],
                     "heads erased (sample)": entry["erased"],
                     "lowest-coverage photos": entry["lowest_coverage"],
                     "skipped": entry["n_skipped"]})
    return metrics, rows


def _intervention_headline(summaries: dict) -> dict:
    """The ends of each curve, named generically so the story reads any run: the darkest and
    brightest exposure, the lightest and darkest skin tone, the worst and best background."""
    out = {}
    names = {"exposure": ("darkest", "brightest"), "skin_tone": ("lightest", "darkest")}
    for factor, entries in summaries.items():
        keys = [k for k in entries if k != "original"]
        if factor == "original":
            continue
        if not keys:
            continue
        if factor in names:
            ordered = keys
        else:  # background: by the mean change of coverage
            ordered = sorted(keys, key=lambda k: np.nan_to_num(entries[k]["change"].value, nan=0.0))
        first, last = names.get(factor, ("worst", "best"))
        pick = lambda k: {"label": entries[k]["label"], "change": entries[k]["change"],  # noqa: E731
                          "coverage": entries[k]["coverage"], "erased": entries[k]["erased"],
                          "lowest_change": entries[k]["lowest_change"]}
        out[factor] = {first: pick(ordered[0]), last: pick(ordered[-1])}
    return out


# -- figures --------------------------------------------------------------------------------------


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)


def _errorbar(ax, x, estimates, **kwargs):
    v = np.array([e.value for e in estimates], dtype=float)
    err = np.array([[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]], dtype=float)
    ax.errorbar(x, v, yerr=np.nan_to_num(err), **kwargs)


def _figure_groups(table: pd.DataFrame, metrics: dict, params, path: Path) -> str:
    race = metrics["groups"]["race"]
    rg = metrics["groups"]["race_gender"]
    labels = [g["label"] for g in race.values()]
    colours = figures.group_colours(labels)
    fig = figures.new_figure(figsize=(15, 4.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    # panel 1: mean coverage by race x gender, with intervals
    genders = sorted(table["gender"].astype(str).unique())
    width = 0.8 / max(1, len(genders))
    for k, gender in enumerate(genders):
        ests = [rg.get(group_key(f"{lab} {gender}"), {}).get("coverage") for lab in labels]
        xs = [j + (k - (len(genders) - 1) / 2) * width for j, e in enumerate(ests) if e is not None]
        ests = [e for e in ests if e is not None]
        _errorbar(ax1, xs, ests, fmt="o" if k == 0 else "s", capsize=3, color=figures.OKABE_ITO[k % 8],
                  label=f"perceived {gender.lower()}")
    ax1.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    lows = [e.low for g in rg.values() for e in [g["coverage"]] if np.isfinite(e.low)]
    ax1.set_ylim(max(0.0, min([0.9, *lows]) - 0.02), 1.0)
    ax1.set_ylabel("mean share of the face box kept (mask ≥ 0.5)")
    ax1.set_title("Face coverage by perceived race × gender\n(axis does not start at 0; error bars: 95% CIs)", fontsize=10)
    ax1.legend(fontsize=8, loc="lower left")
    # panel 2: distribution (ECDF of coverage), with the erasure threshold
    for lab in labels:
        values = np.sort(table.loc[(table["race"] == lab) & table["face_detected"], "coverage"].to_numpy(float))
        if values.size:
            ax2.step(np.r_[0.0, values], np.r_[0.0, np.arange(1, values.size + 1) / values.size], where="post",
                     color=colours[lab], label=lab)
    ax2.axvline(params["erased_below"], color="black", ls="--", lw=1)
    ax2.text(params["erased_below"], 0.95, " head erased\n below this", fontsize=8, va="top")
    ax2.set_xlim(0.4 if np.nanmin(table["coverage"].to_numpy(float), initial=1.0) >= 0.4 else 0.0, 1.005)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("face coverage of one photo")
    ax2.set_ylabel("share of photos with coverage ≤ x")
    ax2.set_title("Every photo: cumulative distribution by group", fontsize=10)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.85))
    # panel 3: erasure and detector-miss rates (bars from zero)
    x = np.arange(len(labels))
    for k, (key, name) in enumerate([("erased", f"head erased (coverage < {params['erased_below']:g})"),
                                     ("no_face", "no face detected")]):
        ests = [race[group_key(lab)][key] for lab in labels]
        v = np.nan_to_num(np.array([e.value for e in ests], dtype=float))
        err = np.nan_to_num(np.array([[e.value - e.low for e in ests], [e.high - e.value for e in ests]], dtype=float))
        ax3.bar(x + (k - 0.5) * 0.38, v, width=0.38, color=figures.OKABE_ITO[k + 1], edgecolor="black", lw=0.5,
                yerr=err, capsize=3, label=name)
    ax3.set_xticks(x, labels, rotation=30, ha="right")
    ax3.set_ylim(0, max(0.1, ax3.get_ylim()[1]))
    ax3.set_ylabel("share of photos (Wilson 95% CI)")
    ax3.set_title("Heads erased and faces missed, by perceived race", fontsize=10)
    ax3.legend(fontsize=8, loc="upper right")
    _save(fig, path)
    return "Face coverage, its distribution, and erasure and detector-miss rates by perceived group"


def _figure_interventions(records: pd.DataFrame, params, path: Path) -> str:
    sample = records[(records["subset"] == "sample") & records["skipped"].isna()]
    lowest = records[(records["subset"] == "lowest") & records["skipped"].isna()]
    factors = [f for f in dict.fromkeys(records["factor"]) if f != "original"]
    races = _ordered(sample["race"])
    colours = figures.group_colours(races)
    fig = figures.new_figure(figsize=(5.2 * len(factors), 4.8))
    axes = np.atleast_1d(fig.subplots(1, len(factors)))
    titles = {"exposure": "Exposure (stops of light)", "skin_tone": "Skin tone (Monk Skin Tone level)",
              "background": "Background replaced"}
    def rows_at(frame, factor, level):
        factor = "original" if level == "original" else factor
        return frame[(frame["factor"] == factor) & (frame["level"] == level)]

    for ax, factor in zip(axes, factors):
        lv = ["original"] + list(dict.fromkeys(records.loc[records["factor"] == factor, "level"]))
        if factor == "exposure":
            lv = sorted(lv, key=lambda v: 0.0 if v == "original" else float(v))
        x = np.arange(len(lv))
        offsets = np.linspace(-0.25, 0.25, max(1, len(races)))
        for k, race in enumerate(races):
            ests = [mean_estimate(rows_at(sample[sample["race"] == race], factor, level)["coverage"],
                                  {**params, "n_bootstrap": 500}) for level in lv]
            _errorbar(ax, x + offsets[k], ests, fmt="o-", ms=4, lw=1, capsize=2, color=colours[race], label=race)
        if len(lowest):
            ests = [mean_estimate(rows_at(lowest, factor, level)["coverage"], {**params, "n_bootstrap": 500})
                    for level in lv]
            _errorbar(ax, x, ests, fmt="D--", ms=5, lw=1.5, capsize=2, color="black",
                      label=f"the {lowest['photo'].nunique()} lowest-coverage photos")
        ax.axhline(params["erased_below"], color="grey", ls=":", lw=1)
        ax.set_xticks(x, [level_label(factor, level) for level in lv], rotation=25, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_title(titles.get(factor, factor), fontsize=10)
        ax.set_ylabel("mean face coverage (95% CI)")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("One factor at a time: how much of the face the mask keeps (dotted: erasure threshold)", fontsize=11)
    _save(fig, path)
    return "Intervention curves: face coverage per perceived race group as exposure, skin tone and background change"


def _figure_composite(images, masks, table, params, path: Path) -> str:
    faces = table[table["face_detected"]].sort_values("coverage")
    n = max(1, min(params["composite_examples"], len(faces)))
    picks = list(faces.index[:n]) + [faces.index[len(faces) // 2]]
    picks = list(dict.fromkeys(picks))
    background = interventions.virtual_background(448, 448, seed=params["seed"])
    fig = figures.new_figure(figsize=(13, 3.4 * len(picks)))
    axes = fig.subplots(len(picks), 4, squeeze=False)
    for row, i in zip(axes, picks):
        image, mask, box = images[i], masks[i], table.at[i, "box"]
        hard = interventions.composite(image, mask, background, threshold=params["mask_threshold"])
        soft = interventions.composite(image, mask, background, threshold=None)
        row[0].imshow(image)
        row[0].set_title(f"photo ({table.at[i, 'race']}, {table.at[i, 'gender']})", fontsize=9)
        row[1].imshow(mask, cmap=figures.MAP_CMAP, vmin=0, vmax=1)
        row[1].set_title("person probability", fontsize=9)
        row[2].imshow(hard)
        row[2].set_title(f"app composite (mask ≥ {params['mask_threshold']:g})", fontsize=9)
        row[3].imshow(soft)
        row[3].set_title("soft composite", fontsize=9)
        x0, y0, x1, y1 = box
        for ax in row[1:3]:
            ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#E69F00", lw=1.5))
        row[2].text(4, image.height - 8, f"face kept: {table.at[i, 'coverage']:.0%}", color="white", fontsize=9,
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 2})
        for ax in row:
            ax.set_axis_off()
    fig.suptitle("Virtual background as a conferencing app composites it (orange: detected face box). "
                 "Top rows: lowest face coverage in the run; bottom: a median photo", fontsize=10)
    _save(fig, path)
    return "The person mask composited onto a generated virtual background, for the lowest-coverage and a median photo"


def _summary_lines(metrics: dict) -> list[str]:
    o = metrics["overall"]
    lines = [f"{metrics['n_photos']} photos, {metrics['n_faces']} faces detected, {metrics['n_erased']} heads erased "
             f"(coverage < {metrics['thresholds']['erased_below']:g})",
             f"mean face coverage {o['coverage'].value:.3f} [{o['coverage'].low:.3f}, {o['coverage'].high:.3f}]"]
    d = metrics["disparity"]
    if "coverage_contrast" in d:
        c = d["coverage_contrast"]
        g = d["contrast_groups"]
        lines.append(f"coverage {g['first']} - {g['second']}: {c.value:+.3f} [{c.low:+.3f}, {c.high:+.3f}]")
    return lines
