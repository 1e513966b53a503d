"""The last stage: the typed metrics record, the story's tables and the figures' captions.

Every number the story cites comes from here, beside the published number it echoes
(:func:`published`: Bertrand & Mullainathan 2004, the Washington Post's 29%, Rhue 2018, Gender Shades,
the models' published accuracies).
"""

from __future__ import annotations

import numpy as np

from autopsy.contract import Findings
from incidents.face_hiring import audit as perception_audit
from incidents.face_hiring import failure, mitigation as mitigate, simulate
from incidents.face_hiring.metrics import HiringMetrics
from incidents.face_hiring.scorer import SCORER_FEATURES
from incidents.face_hiring.stages import Candidates, Perceived


def published(config) -> dict:
    from autopsy.models.keras_h5 import FER2013_EMOTION, IMDB_GENDER

    favoured, disfavoured = config.callback_rates
    return {"bertrand_mullainathan": {"callback_white": favoured, "callback_black": disfavoured,
                                      "ratio": simulate.bias_ratio(config.callback_rates),
                                      "source": "Bertrand & Mullainathan (2004), AER 94(4), 991-1013"},
            "expression_share": {"value": config.expression_share,
                                 "source": "HireVue, as reported by Harwell, Washington Post, 6 Nov 2019"},
            "rhue_2018": perception_audit.RHUE_2018, "gender_shades": perception_audit.GENDER_SHADES,
            "emotion_model_accuracy": FER2013_EMOTION.meta["published_accuracy"],
            "gender_model_accuracy": IMDB_GENDER.meta["published_accuracy"]}


def _perception_metrics(audit: dict, n: int) -> dict:
    from autopsy.stats import Estimate

    missing = Estimate(float("nan"), float("nan"), float("nan"), 0, "not estimable",
                       warning="no perceived Black or no White faces in this run")
    key = "Black vs White"
    return {"n_faces": n, "contrasts": audit["contrasts"],
            "black_vs_white": {o: audit["contrasts"][o].get(key, missing) for o in perception_audit.OUTCOMES},
            "female_vs_male": {o: audit["contrasts"][o].get("Female vs Male", missing)
                               for o in perception_audit.OUTCOMES},
            "rhue_2018": perception_audit.RHUE_2018}


def _hiring_metrics(hiring: dict, config) -> dict:
    grid, key = hiring["grid"], failure.beta_key(config.beta)
    n_fold = np.bincount(hiring["fold"]).tolist()
    scorer = {k: {"beta": e["beta"], "provenance": [m.provenance for m in e["scorers"]], "accuracy": e["accuracy"],
                  "accuracy_ceiling": e["accuracy_ceiling"], "accuracy_unbiased": e["accuracy_unbiased"],
                  "candidates_per_fold": n_fold, "n_features": len(SCORER_FEATURES)} for k, e in grid.items()}
    control = grid[failure.beta_key(0.0)]["audit"]["race"]
    examined = {"beta": config.beta, "key": key, "accuracy": grid[key]["accuracy"],
                "accuracy_ceiling": grid[key]["accuracy_ceiling"],
                "accuracy_unbiased": grid[key]["accuracy_unbiased"], "folds": len(n_fold),
                "n_applicants": int(sum(n_fold)), "n_train": int(sum(n_fold) - n_fold[0]),
                "weights_sha256": grid[key]["scorers"][0].provenance.weights_sha256,
                "race_disparate_impact": grid[key]["audit"]["race"]["disparate_impact"],
                "race_equal_opportunity": grid[key]["audit"]["race"]["equal_opportunity"],
                "history_race_ratio": grid[key]["history"]["race"].ratio,
                "control_race_disparate_impact": control["disparate_impact"],
                "control_race_equal_opportunity": control["equal_opportunity"],
                "control_history_race_ratio": grid[failure.beta_key(0.0)]["history"]["race"].ratio}
    simulation = {"labels": "simulated historical decisions (incidents.face_hiring.simulate), not real ones",
                  "expression_share": config.expression_share, "base_rate": config.base_rate,
                  "recruiter_noise": config.recruiter_noise, "bias": f"{config.bias_attribute} = {config.bias_group}",
                  "ratio_at_beta_1": simulate.bias_ratio(config.callback_rates),
                  "betas": sorted(e["beta"] for e in grid.values()),
                  "history_race_ratio": {k: e["history"]["race"].ratio for k, e in grid.items()}}
    def by_attribute(metric):
        return {k: {a: v[metric] for a, v in e["audit"].items()} for k, e in grid.items()}

    return {"scorer": scorer, "examined": examined, "simulation": simulation, "disparate_impact":
            by_attribute("disparate_impact"), "equal_opportunity": by_attribute("equal_opportunity")}


def _mitigation_metrics(rows: list[dict], skipped: str | None) -> dict:
    def view(row):
        return {k: row[k] for k in ("accuracy vs history", "accuracy vs unbiased decisions", "selection ratio")}

    eg = [r for r in rows if r["method"].startswith("ExponentiatedGradient")]
    post = [r for r in rows if r["method"] == mitigate.THRESHOLD_OPTIMIZER]
    tightest = min(eg, key=lambda r: r["bound"])
    return {"unmitigated": view(rows[0]), "tightest_bound": tightest["bound"],
            "exponentiated_gradient_tightest": view(tightest), "threshold_optimizer": view(post[0]) if post else None,
            "threshold_optimizer_skipped": skipped}


def findings(ctx, candidates: Candidates, perception: Perceived, audit: dict, labels: dict, hiring: dict,
             counterfactual: dict, autopsy: dict, mitigation: dict, robustness: dict) -> Findings:
    """Assemble the tables, the figures' captions and the typed metrics record."""
    n_listed = len(candidates.table) + sum(v["n"] for k, v in candidates.left_out.items())
    analysed = int(perception.kept.sum())
    metrics = HiringMetrics(
        candidates={"n_listed": n_listed, "n_perceived": len(candidates.table), "n_analysed": analysed,
                    "left_out": perception.left_out},
        perception=_perception_metrics(audit, analysed),
        gender_model={"accuracy": audit["gender_accuracy"], "published_accuracy": published(ctx.config)[
            "gender_model_accuracy"]},
        labels={k: v for k, v in labels.items() if k != "table"},
        counterfactual=counterfactual["metrics"], autopsy=autopsy["metrics"], robustness=robustness["metrics"],
        mitigation=_mitigation_metrics(mitigation["rows"], mitigation["skipped"]), published=published(ctx.config),
        **_hiring_metrics(hiring, ctx.config))
    tables = {"first_impressions": labels["table"], "perception": audit["rows"], "gender_shades": audit["errors"],
              "by_beta": hiring["by_beta"], "group_metrics": hiring["groups"], "flips": counterfactual["rows"],
              "mitigation": mitigation["rows"], **autopsy["tables"], **robustness["tables"]}
    drawn = {**audit["figures"], **hiring["figures"], **counterfactual.get("figures", {}), **autopsy["figures"],
             **mitigation["figures"], **robustness["figures"]}
    return Findings(metrics, {k: v for k, v in tables.items() if v}, drawn, metrics.summary())
