"""How little it takes to flip a hiring decision: the smallest change of a face that changes the scorer's verdict.

For held-out applicants -- decided by the examined scorer, which never saw them (the first fold's,
as in the counterfactual stage) -- the smallest change of the face as the expression model sees it
(64 x 64 grey, the pixels the score reads) that moves the score across the scorer's threshold,
advanced to rejected or rejected to advanced:

- the score is :class:`.scorer.FaceScorer`: the expression model to its last residual block, then
  the scorer's linear head, with the applicant's own 52 blendshapes held fixed (the Face Landmarker
  is another model reading the same photo; the attack reaches the score through the expression
  path only);
- the search is :func:`autopsy.robustness.minimal_budget` -- FGSM (Goodfellow, Shlens & Szegedy,
  ICLR 2015) or PGD (Madry et al., ICLR 2018) through the Adversarial Robustness Toolbox -- over
  L-inf budgets in 0-255 grey levels, one applicant at a time (each carries its own blendshape
  term, and the toolkit's targets see only the model's output).

Success rates and budgets are reported by perceived race and race x gender with intervals
(:func:`autopsy.robustness.group_summary`) and by the direction of the flip; race and gender are
perceived attributes annotated by others. Wiring (the incident's ``__init__``, ``record`` and story)
is described in :func:`stage`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from autopsy import figures
from autopsy import robustness as rb
from autopsy.models.keras_h5 import preprocess
from autopsy.stats import proportion
from incidents.face_hiring import failure
from incidents.face_hiring.perception import BLENDSHAPE_COLUMNS, PerceptionModels
from incidents.face_hiring.scorer import FaceScorer, Scorer

by_group = partial(rb.outcomes_by_group, noun="applicants")  # outcomes by perceived group

BOUNDS = (-1.0, 1.0)  # the expression model's input: (grey / 255 - 0.5) * 2
UNITS = "L-inf, 0-255 grey levels of the 64 x 64 face the expression model reads"


@dataclass(frozen=True)
class Flip:
    """One applicant attacked: the verdict before and after, and the smallest budget that changed it."""

    advanced_before: bool
    advanced_after: bool
    budget: float  # 0-255 grey levels; +inf if no budget of the grid flipped the verdict
    score_before: float  # the scorer's logit on the clean face
    original: np.ndarray  # [1, 64, 64] model input
    adversarial: np.ndarray

    @property
    def success(self) -> bool:
        return self.advanced_before != self.advanced_after


def flip_decisions(emotion, scorer: Scorer, images, blendshapes: np.ndarray, *, budgets: Sequence[float],
                   method: str = "fgsm", steps: int = 10, seed: int = 0,
                   progress: Callable[[float], None] | None = None) -> list[Flip]:
    """The smallest L-inf budget of ``budgets`` (grey levels) that flips each face's hiring decision.

    ``images`` are face crops (PIL) as the run perceives them; ``blendshapes`` their
    ``(n, 52)`` blendshape scores, held fixed. One budget is a fixed-budget attack.
    """
    x = preprocess(list(images), emotion.weights).numpy()
    threshold = scorer.threshold
    eps = np.asarray(budgets, float) * (BOUNDS[1] - BOUNDS[0]) / 255
    found = []
    for k in range(len(x)):
        model = FaceScorer(emotion, scorer, blendshapes[k])
        result = rb.minimal_budget(model, x[k:k + 1], target=lambda out: out[:, 0] - threshold,
                                   decision=lambda out: out[:, 0] >= threshold, budgets=eps, method=method,
                                   bounds=BOUNDS, steps=steps, seed=seed, batch_size=1)
        budget = float(np.round(result.budget[0] * 255 / (BOUNDS[1] - BOUNDS[0]), 6))
        found.append(Flip(bool(result.decision_before[0]), bool(result.decision_after[0]), budget,
                          float(result.margin_before[0]) + threshold, x[k], result.adversarial[0]))
        if progress:
            progress((k + 1) / len(x))
    return found


def choose(people: pd.DataFrame, train: np.ndarray, per_group: int) -> np.ndarray:
    """Row numbers of the first ``per_group`` held-out applicants of each perceived race x gender cell."""
    held_out = people.assign(row=np.arange(len(people)))[~np.asarray(train, bool)]
    return np.sort(held_out.groupby(["race", "gender"]).head(per_group)["row"].to_numpy())


# -- summaries ---------------------------------------------------------------------------------------


def contrast_of(config) -> tuple[str, str]:
    """The groups the simulated recruiters treated differently: (disfavoured, reference)."""
    return config.bias_group, "White" if config.bias_attribute == "race" else "Male"


def summarise(frame: pd.DataFrame, config, *, seed: int) -> tuple[dict, dict]:
    """The metrics record and the story's tables of the robustness stage."""
    boot = {"n_boot": config.n_bootstrap, "seed": seed}
    budgets = [rb.whole(b) for b in sorted(float(b) for b in config.attack_budgets)]
    between, attribute = contrast_of(config), config.bias_attribute
    cells = frame.assign(cell=frame["race"].astype(str) + " " + frame["gender"].astype(str))
    everyone = by_group(frame.assign(all="all"), "all", **boot).get("all") or {
        "success_rate": rb.undefined("applicants"), "median_budget": rb.undefined("applicants")}
    spent = frame["budget"].to_numpy(float)
    half = [b for b in budgets if len(spent) and np.mean(spent <= b) >= 0.5]
    reference = half[0] if half else budgets[-1]  # the smallest budget that flipped half of all decisions
    directions = {name: by_group(frame[frame["advanced_before"] == before].assign(all="all"), "all", **boot).get(
                      "all", {"success_rate": rb.undefined(name), "median_budget": rb.undefined(name)})
                  for name, before in (("advanced_to_rejected", True), ("rejected_to_advanced", False))}
    metrics = {
        "method": config.attack_method.upper(), "steps": 1 if config.attack_method == "fgsm" else config.attack_steps,
        "units": UNITS, "budgets": budgets, "largest_budget": budgets[-1], "n_applicants": len(frame),
        "n_advanced": int(frame["advanced_before"].sum()), "agrees_with_run": proportion(
            int(frame["matches_run"].sum()), len(frame)),
        "success_rate": everyone["success_rate"], "median_budget": everyone["median_budget"],
        "by_direction": directions, f"by_{attribute}": by_group(frame, attribute, expect=between, **boot),
        "by_race_gender": by_group(cells, "cell", **boot),
        "contrast": {"attribute": attribute, "budget": reference,
                     **rb.flips_between(spent <= reference, frame[attribute], between, noun="applicants", **boot)}}
    groups = {**metrics[f"by_{attribute}"], **metrics["by_race_gender"]}
    tables = {
        "robustness_groups": [{"applicants (perceived)": key.replace("_", " "),
                               f"decision flipped within {budgets[-1]:g} levels": v["success_rate"],
                               "median budget (grey levels)": v["median_budget"]} for key, v in groups.items()],
        "robustness_budgets": [_budget_row(b, spent <= b, frame[attribute], between, boot) for b in budgets]}
    return metrics, tables


def _budget_row(budget: float, flags: np.ndarray, groups: pd.Series, between, boot: dict) -> dict:
    shares = rb.flips_between(flags, groups, between, noun="applicants", **boot)
    return {"budget (grey levels)": budget, **{f"{g} decisions flipped": shares[g] for g in between},
            f"difference ({' − '.join(between)})": shares["difference"]}


# -- figures -------------------------------------------------------------------------------------------


def figure_curves(frame: pd.DataFrame, config):
    """Decisions flipped within each budget, by the contrast groups (Wilson 95%)."""
    budgets = sorted(float(b) for b in config.attack_budgets)
    between, attribute = contrast_of(config), config.bias_attribute
    fig = figures.new_figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    groups = frame[attribute].astype(str).to_numpy()
    spent = frame["budget"].to_numpy(float)
    for k, (group, marker, style) in enumerate(zip(between, ("o", "s"), ("-", "--"))):
        rows = groups == group
        est = [proportion(int((spent[rows] <= b).sum()), int(rows.sum())) for b in budgets]
        figures.estimate_errorbars(ax, np.arange(len(budgets)) + (k - 0.5) * 0.1, est, fmt=marker + style,
                                   capsize=3, color=figures.OKABE_ITO[k], label=f"{group} (n = {int(rows.sum())})")
    ax.set_xticks(range(len(budgets)), [f"{b:g}" for b in budgets])
    ax.set_xlim(-0.5, len(budgets) - 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("largest change per pixel (L∞, 0-255 grey levels of the 64 × 64 face)")
    ax.set_ylabel("share of hiring decisions flipped")
    ax.legend(fontsize=8, title=f"perceived {attribute}", title_fontsize=8)
    return fig, (f"Share of held-out applicants whose hiring decision flipped within each budget, by perceived "
                 f"{attribute} (95% intervals)")


def figure_examples(flips: Sequence[Flip], titles: Sequence[str]):
    """The faces as the expression model reads them, the attacked faces and the change (amplified, cividis)."""
    fig = rb.perturbation_figure(np.stack([f.original for f in flips]), np.stack([f.adversarial for f in flips]),
                                 titles=list(titles), bounds=BOUNDS, size=2.0)
    return fig, ("Typical attacks, one per contrast group: the face as the expression model reads it, the face "
                 "changed just enough to flip the decision, and the change (amplified)")


# -- the stage -------------------------------------------------------------------------------------------


def stage(ctx, candidates, perception, hiring: dict) -> dict:
    """How little it takes: the smallest change of a held-out applicant's face that flips the hiring decision.

    Wiring: ``Stage("robustness", robustness.stage, share=0.05)`` before ``findings``; ``findings``
    takes ``robustness`` and passes ``robustness=robustness["metrics"]`` to ``HiringMetrics`` (a
    ``robustness: dict`` field), adds ``**robustness["tables"]`` to its tables and
    ``**robustness["figures"]`` to its figures. Settings (``HiringConfig``): ``attack_per_group``,
    ``attack_budgets``, ``attack_method``, ``attack_steps``.
    """
    config = ctx.config
    people, features = perception.people(candidates), hiring["features"]
    images = [im for im, k in zip(candidates.images, perception.kept) if k]
    rows = choose(people, hiring["train"], config.attack_per_group)
    examined = hiring["grid"][failure.beta_key(config.beta)]
    scorer = examined["scorers"][0]  # the chosen rows are its held-out applicants
    found = flip_decisions(PerceptionModels.load().emotion, scorer, [images[i] for i in rows],
                           features.iloc[rows][list(BLENDSHAPE_COLUMNS)].to_numpy(float),
                           budgets=config.attack_budgets, method=config.attack_method, steps=config.attack_steps,
                           seed=ctx.seed, progress=lambda f: ctx.progress(0.9 * f, "smallest change that flips"))
    frame = people.iloc[rows][["file", "race", "gender"]].reset_index(drop=True).assign(
        advanced_before=[f.advanced_before for f in found], advanced_after=[f.advanced_after for f in found],
        matches_run=[f.advanced_before == bool(examined["decisions"][i]) for f, i in zip(found, rows)],
        score_before=[f.score_before for f in found], success=[f.success for f in found],
        budget=[f.budget for f in found])
    frame.to_csv(ctx.out / "robustness.csv", index=False)
    metrics, tables = summarise(frame, config, seed=ctx.seed)
    between = contrast_of(config)
    picks = rb.typical_examples(frame, config.bias_attribute, between)
    drawn = {"robustness_curves.png": figure_curves(frame, config)}
    if picks:
        drawn["robustness.png"] = figure_examples([found[k] for k in picks], [
            f"{frame.at[k, 'race']} {frame.at[k, 'gender']}, " + (f"flipped at L∞ {found[k].budget:g}"
                                                                  if found[k].success else "not flipped") for k in picks])
    for name, (fig, _) in drawn.items():
        fig.savefig(ctx.out / name, dpi=110)
    return {"metrics": metrics, "tables": tables, "figures": {name: caption for name, (_, caption) in drawn.items()}}
