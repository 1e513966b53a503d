"""The failure: whom the reproduced scorer advances, as a function of the past recruiters' bias beta.

For each beta of the grid the lab simulates the history (:mod:`.simulate`) and trains the scorer
(:mod:`.scorer`) by cross-fitting: the candidates are dealt into ``config.folds`` folds (within each
perceived race x gender cell) and each fold is decided by a scorer trained on the others, so every
candidate is an applicant the deciding scorer never saw, and the audit uses them all:

- **disparate impact**: the selection-rate ratio of the disfavoured group to the reference group
  (perceived Black over White; Female over Male; Black women over White men, the two ends of Gender
  Shades; the lowest over the highest group where those are absent),
  judged by the four-fifths rule (US EEOC Uniform Guidelines, 29 CFR 1607.4(D));
- **equal opportunity**: the difference in true-positive rates (Hardt, Price & Srebro 2016) among
  applicants an *unbiased* recruiter would have advanced (``y(0)``: the simulation knows it, a real
  audit would not);

both with bootstrap intervals within groups (:mod:`autopsy.fairness`). At ``beta = 0`` the history is
group-neutral by construction, so what remains is the perception models' own contribution: how the
features they read relate to the (equal) merit in each group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy import fairness
from autopsy.stats import proportion
from incidents.face_hiring import scorer as scoring
from incidents.face_hiring.simulate import History

ATTRIBUTES = ("race", "gender", "race x gender")


def beta_key(beta: float) -> str:
    """A metrics key for a beta: ``beta_0``, ``beta_0_5``, ``beta_1``."""
    return "beta_" + f"{beta:g}".replace(".", "_").replace("-", "minus_")


def folds(people: pd.DataFrame, *, k: int, seed: int) -> np.ndarray:
    """A fold (0 .. k-1) for each candidate, dealt out in turn within each perceived race x gender cell
    after a shuffle drawn with ``seed``, so every fold holds every cell in proportion."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(people), dtype=int)
    for _, rows in people.reset_index(drop=True).groupby(["race", "gender"]).indices.items():
        fold[rng.permutation(rows)] = np.arange(len(rows)) % k
    return fold


def contrasts(people: pd.DataFrame, config) -> dict:
    """Per attribute: the sensitive features and the pair compared (None: lowest vs highest group)."""
    def pair(values, first, second):
        present = set(values.astype(str))
        return (first, second) if {first, second} <= present else None

    race_first = config.bias_group if config.bias_attribute == "race" else "Black"
    gender_first = config.bias_group if config.bias_attribute == "gender" else "Female"
    race, gender = people["race"].astype(str), people["gender"].astype(str)
    cell = race + " " + gender
    return {"race": (race.to_numpy(), pair(race, race_first, "White")),
            "gender": (gender.to_numpy(), pair(gender, gender_first, "Male" if gender_first != "Male" else "Female")),
            "race x gender": (cell.to_numpy(), pair(cell, "Black Female", "White Male"))}


def audit_decisions(decisions, merited, people: pd.DataFrame, config, *, n_boot: int, seed: int) -> dict:
    """Disparate impact and equal opportunity of ``decisions`` per attribute (module docstring)."""
    out = {}
    for attribute, (sensitive, between) in contrasts(people, config).items():
        out[attribute] = {
            "disparate_impact": fairness.disparate_impact_ratio(decisions, sensitive, between=between,
                                                                n_boot=n_boot, seed=seed),
            "equal_opportunity": fairness.equal_opportunity_difference(merited, decisions, sensitive, between=between,
                                                                       n_boot=n_boot, seed=seed),
        }
    return out


def ceiling(history: History, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The same decision rule applied to each candidate's true expression term ``E``: what a face-only
    scorer could reach if it read ``E`` perfectly (the rest of the merit stays unseen)."""
    return (history.expression >= np.quantile(history.expression[train], 1 - labels[train].mean())).astype(int)


def cross_fit(features: pd.DataFrame, labels: np.ndarray, history: History, fold: np.ndarray, config, *,
              seed: int, beta: float) -> tuple[list, np.ndarray, np.ndarray]:
    """One scorer per fold, trained on the other folds: ``(scorers, out-of-fold decisions, ceiling)``.
    Every candidate is decided by a scorer that never saw them (cross-fitting)."""
    scorers, decisions, best = [], np.zeros(len(labels), dtype=int), np.zeros(len(labels), dtype=int)
    for f in range(fold.max() + 1):
        train, test = fold != f, fold == f
        model = scoring.train(features[train], labels[train], c=config.scorer_c, seed=seed, beta=beta)
        scorers.append(model)
        decisions[test] = model.decide(features[test])
        best[test] = ceiling(history, labels, train)[test]
    return scorers, decisions, best


def run_grid(features: pd.DataFrame, people: pd.DataFrame, history: History, fold: np.ndarray, config, *,
             seed: int, progress=lambda f, m: None) -> dict:
    """For each beta: the history's own selection ratio, the cross-fitted scorers, their out-of-fold
    decisions on every candidate, and the audit of those decisions."""
    merited, n = history.decisions(0.0), len(people)
    found = {}
    for k, beta in enumerate(config.betas):
        progress(k / len(config.betas), f"beta = {beta:g}")
        labels = history.decisions(beta)
        scorers, decisions, best = cross_fit(features, labels, history, fold, config, seed=seed, beta=beta)
        history_gap = {a: fairness.disparate_impact_ratio(labels, s, between=b, n_boot=config.n_bootstrap, seed=seed)
                       for a, (s, b) in contrasts(people, config).items()}
        found[beta_key(beta)] = {
            "beta": beta, "scorers": scorers, "decisions": decisions, "labels": labels, "history": history_gap,
            "audit": audit_decisions(decisions, merited, people, config, n_boot=config.n_bootstrap, seed=seed),
            "accuracy": proportion(int((decisions == labels).sum()), n),
            "accuracy_ceiling": proportion(int((best == labels).sum()), n),
            "accuracy_unbiased": proportion(int((decisions == merited).sum()), n),
        }
    return found


def by_beta_rows(grid: dict) -> list[dict]:
    """The story's table: per beta and attribute, the history's ratio, the scorer's ratio and TPR gap."""
    rows = []
    for entry in grid.values():
        for attribute in ATTRIBUTES:
            audit = entry["audit"][attribute]
            rows.append({"beta": entry["beta"], "groups": attribute,
                         "history: selection ratio": entry["history"][attribute].ratio,
                         "scorer: selection ratio": audit["disparate_impact"].ratio,
                         "four-fifths rule": "passes" if audit["disparate_impact"].four_fifths else "adverse impact",
                         "scorer: TPR difference": audit["equal_opportunity"]})
    return rows


def group_rows(decisions, merited, people: pd.DataFrame, *, n_boot: int, seed: int) -> list[dict]:
    """Selection rate and true-positive rate (among the unbiased recruiter's picks) per perceived
    race x gender cell, for the story's table."""
    frame = fairness.group_metrics(merited, decisions, people[["race", "gender"]].astype(str).reset_index(drop=True),
                                   metrics=("selection_rate", "tpr"), n_boot=n_boot, seed=seed)
    frame["cell"] = frame["race"] + " " + frame["gender"]
    names = {"selection_rate": "selection rate", "tpr": "true-positive rate"}
    table: dict = {}
    for metric, part in frame.groupby("metric", sort=False):
        for cell, est in fairness.estimates_by_group(part.drop(columns=["race", "gender"]), by="cell").items():
            table.setdefault(cell, {"perceived race x gender": cell})[names[metric]] = est
    return list(table.values())
