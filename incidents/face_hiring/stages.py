"""The face-based hiring investigation as ordered stages (run by :mod:`autopsy.runner`).

1. ``candidates``: the adult FairFace crops (or your own labelled photos), and who was left out.
2. ``perception``: the three face models on every face; faces the landmark model barely sees are
   reported and left out of the analyses.
3. ``audit``: emotion at matched smile by perceived race and gender (Rhue 2018), and the gender
   model's errors beside Gender Shades.
4. ``labels``: the structure of the First Impressions ``interview`` label.
5. ``hiring``: simulated histories over the beta grid, the scorer trained on each, its audit.
6. ``counterfactual``: skin-tone edits of held-out applicants and the decisions they flip.
7. ``autopsy``: probes, attribution with sanity checks, feature visualisation.
8. ``mitigation``: fairlearn's mitigations and the accuracy-fairness trade-off.
9. ``findings`` (:mod:`.record`): the tables, the figures' captions and the typed metrics record.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopsy.data import load_image
from incidents.face_hiring import audit as perception_audit
from incidents.face_hiring import autopsy_steps, data, failure, labels as label_study, mitigation as mitigate
from incidents.face_hiring import plots, simulate
from incidents.face_hiring.perception import PerceptionModels, perceive
from incidents.face_hiring.scorer import SCORER_FEATURES


@dataclass(frozen=True)
class Candidates:
    table: pd.DataFrame  # file, path, race, gender, age
    images: list  # PIL face crops, in the table's order
    left_out: dict  # reason -> counts by perceived race x gender cell
    detected: np.ndarray  # a face was found (always, for the FairFace crops)


@dataclass(frozen=True)
class Perceived:
    features: pd.DataFrame  # one row per candidate, in the table's order
    kept: np.ndarray  # the analysed candidates
    left_out: dict

    def people(self, candidates: Candidates) -> pd.DataFrame:
        return candidates.table[self.kept].reset_index(drop=True)

    def analysed(self) -> pd.DataFrame:
        return self.features[self.kept].reset_index(drop=True)


def numeric_threads(stage):
    """Run ``stage`` with sklearn, scipy and statsmodels (OpenBLAS, OpenMP) on the threads torch was
    given for this run: their pools otherwise take every core and, beside other work, wait on each
    other (an L-BFGS fit of the scorer ran 12x slower with two BLAS threads on two busy cores than
    with one)."""

    @functools.wraps(stage)
    def bounded(ctx, *args, **kwargs):
        from threadpoolctl import threadpool_limits

        from autopsy import threads

        with threadpool_limits(limits=threads.current()):
            return stage(ctx, *args, **kwargs)

    return bounded


def _save(ctx, name: str, drawn) -> dict:
    fig, caption = drawn
    fig.savefig(ctx.out / name, dpi=110)
    return {name: caption}


def candidates(ctx) -> Candidates:
    """Load the candidates: adult FairFace crops, balanced by perceived race x gender (or your own photos,
    cropped to their faces like FairFace's)."""
    table, left_out = data.load(ctx.config)
    images = []
    for k, path in enumerate(table["path"]):
        images.append(load_image(path))
        if k % 100 == 0:
            ctx.progress(k / len(table), f"{k}/{len(table)} faces")
    detected = np.ones(len(images), dtype=bool)
    if ctx.config.custom:
        from autopsy.models.face_landmarker import FaceLandmarker

        images, detected = data.crop_faces(images, FaceLandmarker().detector)
    return Candidates(table, images, left_out, detected)


def _perceive(models: PerceptionModels, batch: list) -> pd.DataFrame:
    return perceive(models, batch, batch_size=len(batch), features=True)


def perception(ctx, candidates: Candidates) -> Perceived:
    """Run the expression, gender and landmark models on every face; report faces barely seen as faces."""
    size = ctx.config.batch_size
    batches = [candidates.images[i:i + size] for i in range(0, len(candidates.images), size)]
    features = pd.concat(ctx.map(_perceive, batches, setup=PerceptionModels.load, desc="batches of faces"),
                         ignore_index=True)
    found = features["face_found"].to_numpy(bool) & candidates.detected
    seen = features["face_presence"].to_numpy(float) >= ctx.config.min_face_presence
    kept = found & seen
    table = candidates.table
    reason = (f"no face found, or face presence < {ctx.config.min_face_presence:g} (the landmark model barely "
              "sees a face)")
    left_out = {**candidates.left_out, "low_face_presence": {**data.counts(table[~kept]), "reason": reason,
                                                             "files": table.loc[~kept, "file"].tolist()}}
    if kept.sum() < 4:
        raise ValueError(f"only {int(kept.sum())} of {len(table)} photos show a face the models can read; the "
                         "investigation needs more (tight, frontal face crops work best)")
    return Perceived(features, kept, left_out)


@numeric_threads
def audit(ctx, candidates: Candidates, perception: Perceived) -> dict:
    """Emotion at matched smile by perceived race and gender; the gender model's errors (Gender Shades)."""
    people, features = perception.people(candidates), perception.analysed()
    scores = perception_audit.outcomes(features)
    contrasts = perception_audit.matched_smile(scores, people)
    quartiles = perception_audit.by_smile_quartile(scores, people, n_boot=ctx.config.n_bootstrap, seed=ctx.seed)
    errors = perception_audit.gender_errors(features, people)
    rows = [{"contrast (at matched smile)": name, **{o: contrasts[o][name] for o in perception_audit.OUTCOMES}}
            for name in contrasts["negative"]]
    drawn = {**_save(ctx, "perception.png", plots.perception(quartiles)),
             **_save(ctx, "gender_shades.png", plots.gender_errors(errors))}
    return {"contrasts": contrasts, "rows": rows, "errors": errors, "figures": drawn,
            "gender_accuracy": perception_audit.overall_gender_accuracy(features, people)}


@numeric_threads
def labels(ctx) -> dict:
    """What the First Impressions 'interview' label encodes: its relation to the Big Five."""
    return label_study.label_structure(data.first_impressions(), n_boot=ctx.config.label_resamples, seed=ctx.seed)


@numeric_threads
def hiring(ctx, candidates: Candidates, perception: Perceived) -> dict:
    """Simulate the histories, cross-fit the scorer at each beta, audit its decisions on every applicant."""
    people, features = perception.people(candidates), perception.analysed()
    config = ctx.config
    history = simulate.simulate(features, people, config, seed=ctx.seed)
    fold = failure.folds(people, k=config.folds, seed=ctx.seed)
    train = fold != 0  # the examined scorer (the first fold's) learnt from these; fold 0 are its applicants
    betas = sorted({0.0, *config.betas, config.beta})
    grid = failure.run_grid(features, people, history, fold, config.replace(betas=tuple(betas)), seed=ctx.seed,
                            progress=ctx.progress)
    examined = grid[failure.beta_key(config.beta)]
    rows = failure.by_beta_rows(grid)
    return {"history": history, "fold": fold, "train": train, "grid": grid, "by_beta": rows, "features": features,
            "groups": failure.group_rows(examined["decisions"], history.decisions(0.0), people,
                                         n_boot=config.n_bootstrap, seed=ctx.seed),
            "figures": _save(ctx, "by_beta.png", plots.by_beta(rows))}


def _applicants(people: pd.DataFrame, train: np.ndarray, per_group: int) -> np.ndarray:
    """Row numbers of the first ``per_group`` held-out applicants of each perceived race x gender cell."""
    test = people.assign(row=np.arange(len(people)))[~train]
    return np.sort(test.groupby(["race", "gender"]).head(per_group)["row"].to_numpy())


@numeric_threads
def counterfactual(ctx, candidates: Candidates, perception: Perceived, hiring: dict) -> dict:
    """Edit held-out applicants' skin tone along the Monk scale; how many decisions flip?"""
    people, features = perception.people(candidates), hiring["features"]
    images = [im for im, k in zip(candidates.images, perception.kept) if k]
    rows = _applicants(people, hiring["train"], ctx.config.counterfactual_per_group)
    scorer = hiring["grid"][failure.beta_key(ctx.config.beta)]["scorers"][0]  # rows are its applicants
    found = autopsy_steps.skin_tone_flips(PerceptionModels.load(), scorer, [images[i] for i in rows],
                                          people.iloc[rows].reset_index(drop=True),
                                          features.iloc[rows].reset_index(drop=True), ctx.config, seed=ctx.seed)
    if found["rows"]:
        found["figures"] = _save(ctx, "flips.png", plots.flips(found["rows"]))
        found["frame"].to_csv(ctx.out / "counterfactuals.csv", index=False)
    return found


def _attribution_rows(people: pd.DataFrame, hiring: dict, config) -> np.ndarray:
    """Held-out applicants to attribute: the disfavoured and the reference group, advanced and not, in turn."""
    train, decisions = hiring["train"], hiring["grid"][failure.beta_key(config.beta)]["decisions"]
    test = people.assign(row=np.arange(len(people)), advanced=decisions)[~train]
    attribute = test[config.bias_attribute].astype(str)
    picked = []
    for group in (config.bias_group, "White" if config.bias_attribute == "race" else "Male", None):
        part = test[attribute == group] if group is not None else test
        for advanced in (True, False):
            picked += part[part["advanced"] == int(advanced)]["row"].head(1).tolist()
    ordered = list(dict.fromkeys(picked + test["row"].tolist()))
    return np.array(ordered[:config.attribution_examples])


@numeric_threads
def autopsy(ctx, candidates: Candidates, perception: Perceived, hiring: dict) -> dict:
    """Probes with a control task, attribution of the score with sanity checks, feature visualisation."""
    people, features = perception.people(candidates), hiring["features"]
    images = [im for im, k in zip(candidates.images, perception.kept) if k]
    examined = hiring["grid"][failure.beta_key(ctx.config.beta)]
    rows = _attribution_rows(people, hiring, ctx.config)
    models = PerceptionModels.load()
    chosen = [images[i] for i in rows]
    found = autopsy_steps.examine_scorer(models, examined["scorers"][0], chosen, features, people, ctx.config,
                                         seed=ctx.seed, progress=ctx.progress)
    advanced = examined["decisions"][rows]
    captions = [f"{people.at[i, 'race']} {people.at[i, 'gender']}: {'advanced' if a else 'not advanced'}"
                for i, a in zip(rows, advanced)]
    from autopsy.models.keras_h5 import preprocess

    regions = autopsy_steps.face_regions(models, chosen)
    drawn = {**_save(ctx, "attribution.png", plots.attribution(preprocess(chosen, models.emotion.weights), found.maps,
                                                                captions, regions)),
             **_save(ctx, "featviz.png", plots.renders(dict(found.renders)))}
    return {"metrics": found.metrics(), "tables": found.tables(items=[{"applicant": c} for c in captions]),
            "figures": drawn}


@numeric_threads
def mitigation(ctx, candidates: Candidates, perception: Perceived, hiring: dict) -> dict:
    """fairlearn's ExponentiatedGradient and ThresholdOptimizer: the accuracy-fairness trade-off."""
    people, features = perception.people(candidates), hiring["features"]
    train, history = hiring["train"], hiring["history"]
    examined = hiring["grid"][failure.beta_key(ctx.config.beta)]
    x = features[list(SCORER_FEATURES)].to_numpy(float)
    sensitive = people["race"].astype(str).to_numpy()
    between = failure.contrasts(people[~train], ctx.config)["race"][1]
    rows, skipped = mitigate.tradeoff(x[train], examined["labels"][train], sensitive[train], x[~train],
                             examined["labels"][~train], history.decisions(0.0)[~train], sensitive[~train],
                             examined["decisions"][~train], between=between, config=ctx.config, seed=ctx.seed,
                             progress=ctx.progress)
    return {"rows": rows, "skipped": skipped, "figures": _save(ctx, "tradeoff.png", plots.tradeoff(rows))}
