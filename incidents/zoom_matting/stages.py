"""The investigation as ordered stages (:class:`autopsy.contract.Stage`), top to bottom.

1. ``photos``: the labelled photos; ``masks``: MediaPipe Selfie Segmentation's person mask and pooled
   bottleneck features of every photo; ``faces``: BlazeFace's central face of every photo;
   ``coverage``: the share of each face box the mask keeps (binarised, and the soft mean), the
   keypoint check and the erasure flag; photos without a face are counted, never dropped.
2. ``groups``: coverage, erasure and detector misses per perceived race, gender and race x gender
   with intervals, the incident's contrast, the threshold's sensitivity, the model card beside the lab.
3. ``interventions``: exposure, skin tone and background, one factor at a time; ``composite``: what
   the call shows.
4. ``autopsy``: attribution with sanity checks, feature visualisation and probes (:mod:`.autopsy_steps`).
5. ``robustness``: the smallest change that erases a kept head, and the darkness and noise at which heads
   vanish, by perceived group (:mod:`.robustness`).
6. ``findings``: the typed metrics record, the story's tables and the figures' captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopsy import robustness as rb
from autopsy.contract import Findings, Stage
from autopsy.data import load_image
from autopsy.engines import chunks
from incidents.zoom_matting import autopsy_steps, data, measure, models, simulate
from incidents.zoom_matting import figures as drawn
from incidents.zoom_matting import groups as group_stats
from incidents.zoom_matting import robustness as attacks
from incidents.zoom_matting.groups import CONTRAST
from incidents.zoom_matting.metrics import InterventionsDesign, Thresholds, ZoomMetrics


@dataclass(frozen=True)
class Photos:
    table: pd.DataFrame  # file, race, gender, race_gender; one row per photo
    images: list  # PIL images, in the table's order


@dataclass(frozen=True)
class Masks:
    masks: list  # H x W person probabilities per photo, at the photo's size
    features: np.ndarray  # (n_photos, channels): the bottleneck averaged over positions


@dataclass(frozen=True)
class Part:
    """A stage's share of the findings: metrics, story tables and figure captions."""

    metrics: dict
    tables: dict
    figures: dict


def photos(ctx) -> Photos:
    """Load the labelled photos (the profile's FairFace set, or your own)."""
    table = data.load(ctx.config).to_pandas()[["file", "path", "race", "gender"]]
    table = table.assign(race_gender=table["race"].astype(str) + " " + table["gender"].astype(str))
    return Photos(table.drop(columns="path"), [load_image(p) for p in table["path"]])


def masks(ctx, photos) -> Masks:
    """Segment every photo: person masks and pooled bottleneck features, a batch per unit of work."""
    def segment(segmenter, batch):
        return measure.segment_batch(segmenter, batch, batch_size=len(batch), features=True)

    done = ctx.map(segment, chunks(photos.images, ctx.config.batch_size), setup=models.segmenter, desc="batches")
    return Masks([m for batch, _ in done for m in batch], np.concatenate([f for _, f in done]))


def faces(ctx, photos) -> list:
    """Find every photo's central face with BlazeFace (short range), a batch per unit of work."""
    def find(detector, batch):
        return measure.find_faces(detector, batch, batch_size=len(batch))

    done = ctx.map(find, chunks(photos.images, ctx.config.batch_size), setup=models.face_detector, desc="batches")
    return [face for batch in done for face in batch]


def coverage(ctx, photos, masks, faces) -> pd.DataFrame:
    """Measure every photo's face on its mask (``measure.measure_face``); writes photos.csv."""
    config = ctx.config
    rows = []
    for face, mask in zip(faces, masks.masks):
        m = measure.measure_face(mask, face, threshold=config.mask_threshold, erased_below=config.erased_below)
        rows.append({"face_detected": face is not None, "face_score": face.score if face else np.nan,
                     "box": face.box if face else None, "coverage": m.coverage, "soft_coverage": m.soft_coverage,
                     "keypoints_kept": m.keypoints_kept, "erased": m.erased})
    table = pd.concat([photos.table, pd.DataFrame(rows)], axis=1)
    saved = table.assign(box=[",".join(f"{v:.1f}" for v in b) if b else "" for b in table["box"]])
    saved.to_csv(ctx.out / "photos.csv", index=False)
    return table


def groups(ctx, coverage) -> Part:
    """Coverage, erasure and misses per perceived group; contrast, sensitivity, the model card."""
    config, pin = ctx.config, models.SelfieSegmentation.GENERAL.value
    boot = {"n_boot": config.n_bootstrap, "seed": config.seed}
    overall = group_stats.summary(coverage, **boot)
    by = {a: group_stats.by_group(coverage, a, **boot) for a in ("race", "gender", "race_gender")}
    sensitivity, sensitivity_rows = group_stats.sensitivity(coverage, config.sensitivity_thresholds)
    published = models.published(pin)
    metrics = {"overall": overall, "groups": by, "disparity": group_stats.disparities(coverage, **boot),
               "sensitivity": sensitivity, "published": published}
    tables = {f"groups_{a}": group_stats.group_rows(by[a], a) for a in by}
    tables["sensitivity"] = sensitivity_rows
    tables["model_card_vs_lab"] = group_stats.model_card_rows(published, pin.meta["fairness"]["regions"],
                                                              by["race"], overall)
    caption = drawn.coverage(coverage, by["race"], by["race_gender"], erased_below=config.erased_below,
                             path=ctx.out / "coverage.png")
    return Part(metrics, tables, {"coverage.png": caption})


def interventions(ctx, photos, masks, coverage) -> Part:
    """Edit exposure, skin tone and background one at a time, segment again, measure coverage."""
    config = ctx.config
    chosen = simulate.choose(coverage, per_cell=config.intervention_photos_per_group, lowest=config.intervention_lowest)
    records = simulate.run(ctx, photos.images, masks.masks, coverage, chosen, models.segmenter)
    records.to_csv(ctx.out / "interventions.csv", index=False)
    summary, rows = simulate.summaries(records, n_boot=config.n_bootstrap, seed=config.seed)
    design = InterventionsDesign(n_photos=len(chosen), n_sample=int((chosen["subset"] == "sample").sum()),
                                 n_lowest=int((chosen["subset"] == "lowest").sum()),
                                 photos_per_cell=config.intervention_photos_per_group, n_segmentations=len(records))
    figures = {}
    if len(records):
        figures["interventions.png"] = drawn.intervention_curves(records, erased_below=config.erased_below,
                                                                 seed=config.seed, path=ctx.out / "interventions.png")
    metrics = {"interventions": summary, "intervention_headline": simulate.headline(summary),
               "interventions_design": design}
    return Part(metrics, {"interventions": rows}, figures)


def composite(ctx, photos, masks, coverage) -> Part:
    """Composite the lowest-coverage and a median photo onto a virtual background, as an app does."""
    if not coverage["face_detected"].any():
        return Part({}, {}, {})
    caption = drawn.composite(photos.images, masks.masks, coverage, examples=ctx.config.composite_examples,
                              threshold=ctx.config.mask_threshold, seed=ctx.seed, path=ctx.out / "composite.png")
    return Part({}, {}, {"composite.png": caption})


def autopsy(ctx, photos, masks, coverage) -> Part:
    """Attribution with sanity checks, feature visualisation and probes of the segmenter."""
    config = ctx.config
    segmenter = models.segmenter()
    low, kept, which = autopsy_steps.pick_examples(coverage, config.attribution_examples, config.erased_below)
    examples = [(i, "low") for i in low] + [(i, "kept") for i in kept]
    prepared = autopsy_steps.inputs(segmenter, photos.images, coverage, examples)
    found = autopsy_steps.run(segmenter, prepared, masks.features, coverage, config, progress=ctx.progress)
    sides = ["erased/lowest" if side == "low" else "kept" for _, side in examples]
    metrics = {"examples": {"low_side": which, "n_low": len(low), "n_kept": len(kept),
                            "low_coverage": [float(coverage.at[i, "coverage"]) for i in low],
                            "kept_coverage": [float(coverage.at[i, "coverage"]) for i in kept]},
               "attribution": {"skipped": "no photo with a detected face"}}
    items = [{"photo": coverage.at[i, "file"], "side": s, "coverage": float(coverage.at[i, "coverage"])}
             for (i, _), s in zip(examples, sides)]
    tables = found.tables(items=items, probe_column="perceived attribute")
    figures = {}
    if examples:
        metrics["attribution"] = {"target": "mean pre-sigmoid person logit inside the face box",
                                  "grad_cam_layer": autopsy_steps.GRADCAM_LAYER,
                                  "shares": autopsy_steps.share_summary(found, sides)}
        captions = autopsy_steps.captions(coverage, examples, which)
        figures["attribution.png"] = drawn.attribution(found, prepared, captions, ctx.out / "attribution.png")
    else:
        tables["attribution_shares"] = [{"note": "no photo with a detected face: nothing to attribute"}]
    figures["featviz.png"] = drawn.featviz(found, ctx.out / "featviz.png")
    metrics.update(found.metrics())
    metrics["probe_layer"] = segmenter.bottleneck
    return Part(metrics, tables, figures)


def robustness(ctx, photos, coverage) -> Part:
    """How little it takes to erase a head: the smallest change, and the darkness and noise at which heads vanish."""
    config = ctx.config
    rule = {"mask_threshold": config.mask_threshold, "erased_below": config.erased_below}
    chosen = attacks.choose(coverage, config.attack_per_group, config.erased_below, config.attack_races)
    segmenter = models.segmenter()
    x = attacks.inputs(segmenter, [photos.images[i] for i in chosen.index], list(chosen["box"]))
    found = attacks.erase_heads(segmenter, x, budgets=config.attack_budgets, method=config.attack_method,
                                steps=config.attack_steps, seed=ctx.seed, **rule,
                                progress=lambda f: ctx.progress(0.75 * f, "smallest change that erases the head"))
    kept = np.array([e is not None for e in found], bool)  # heads kept on the model's grid: something to erase
    found = [e for e in found if e is not None]
    frame = chosen.loc[kept, ["file", "race", "gender", "race_gender", "coverage"]].reset_index(drop=True).assign(
        grid_coverage=[e.coverage_before for e in found], success=[e.success for e in found],
        budget=[e.budget for e in found], coverage_after=[e.coverage_after for e in found])
    frame.to_csv(ctx.out / "robustness.csv", index=False)
    ctx.progress(0.75, "darker exposure and noise")
    erased = attacks.corruption_curves(segmenter, x[kept], attacks.corruptions(config), seed=ctx.seed, **rule)
    metrics, tables = attacks.summarise(frame, erased, config, seed=ctx.seed)
    metrics["n_erased_on_grid"] = int((~kept).sum())  # kept in the photo's mask, erased on the model's grid
    picks = rb.typical_examples(frame, "race", CONTRAST)
    drawn_figures = {"robustness_curves.png": attacks.figure_curves(frame, erased, config),
                     "robustness.png": attacks.figure_examples([found[k] for k in picks], [
                         f"{frame.at[k, 'race_gender']}, " + (f"erased at L∞ {found[k].budget:g}" if found[k].success
                                                               else f"kept at L∞ {max(config.attack_budgets):g}")
                         for k in picks])}
    for name, (fig, _) in drawn_figures.items():
        fig.savefig(ctx.out / name, dpi=drawn.DPI)
    return Part({"robustness": metrics}, tables, {name: caption for name, (_, caption) in drawn_figures.items()})


def findings(ctx, coverage, groups, interventions, composite, autopsy, robustness) -> Findings:
    """The typed metrics record, the story's tables and the figures' captions."""
    faces = coverage[coverage["face_detected"]]
    metrics = ZoomMetrics(
        n_photos=len(coverage), n_faces=len(faces), n_no_face=int((~coverage["face_detected"]).sum()),
        n_erased=int(coverage["erased"].sum()),
        thresholds=Thresholds(mask=ctx.config.mask_threshold, erased_below=ctx.config.erased_below),
        **groups.metrics, **interventions.metrics, autopsy=autopsy.metrics, **robustness.metrics)
    parts = (groups, interventions, composite, autopsy, robustness)
    return Findings(metrics=metrics, tables={k: v for p in parts for k, v in p.tables.items()},
                    figures={k: v for p in parts for k, v in p.figures.items()}, summary=metrics.summary())


STAGES = (
    Stage("photos", photos, share=0.05, save=False),
    Stage("masks", masks, share=0.1, save=False),
    Stage("faces", faces, share=0.1),
    Stage("coverage", coverage, share=0.02),
    Stage("groups", groups, share=0.05),
    Stage("interventions", interventions, share=0.4),
    Stage("composite", composite, share=0.03),
    Stage("autopsy", autopsy, share=0.25),
    Stage("robustness", robustness, share=0.2),
    Stage("findings", findings, share=0.01),
)
