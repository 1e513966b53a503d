"""The typed metrics record of a run: what ``metrics/face_hiring.json`` holds and the story may cite.

Every number with an interval is an :class:`autopsy.stats.Estimate` (value, interval, n, test);
disparate impacts are :class:`autopsy.fairness.DisparateImpact` (the ratio and the four-fifths verdict).
Keys of the beta grid read ``beta_0``, ``beta_0_5``, ``beta_1`` (:func:`~.failure.beta_key`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HiringMetrics:
    candidates: dict  # listed, analysed, left out by reason and perceived race x gender cell
    perception: dict  # emotion at matched smile: outcome -> contrast -> Estimate; Rhue's published findings
    gender_model: dict  # the IMDB gender model's accuracy here vs published; Gender Shades reference
    labels: dict  # First Impressions: correlations, regression, halo share (CC BY-NC 4.0)
    simulation: dict  # the process's parameters and the history's own selection ratios per beta
    scorer: dict  # per beta: provenance of the trained artefact, accuracy on held-out applicants
    disparate_impact: dict  # beta key -> race / gender / race x gender -> DisparateImpact of the scorer
    equal_opportunity: dict  # beta key -> attribute -> TPR difference among unbiased picks
    examined: dict  # the examined beta's headline numbers, and what remains at beta = 0
    counterfactual: dict  # skin-tone edits: flip rates and score changes per Monk level
    autopsy: dict  # randomisation check, faithfulness, probes (autopsy.examine)
    mitigation: dict  # fairlearn: the trade-off rows' headline
    robustness: dict  # smallest change of a face that flips the decision, by perceived group
    published: dict  # the published numbers each result is set beside

    def summary(self) -> tuple[str, ...]:
        """A few lines for the command line."""
        c, e = self.candidates, self.examined
        di = e["race_disparate_impact"]
        control = e["control_race_disparate_impact"]
        return (f"{c['n_analysed']} candidates analysed of {c['n_listed']} listed",
                f"beta = {e['beta']:g}: {di.verdict}",
                f"beta = 0 (no recruiter bias): {control.verdict}")
