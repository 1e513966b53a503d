"""Settings of the face-based hiring investigation: one frozen dataclass, three named profiles.

- ``smoke``: three adult faces per perceived race x gender cell, tiny bootstrap, edits and renders;
  seconds, for tests.
- ``quick`` (the default): a balanced subset of the FairFace crops, the first 100 adults of each of
  the 14 cells (1,400 faces). Perception costs 0.02-0.04 s a face on two CPU cores
  (``benchmarks/results/face_hiring_perception.json``), so all 2,063 adult crops would take over a
  minute on their own, and the run's other stages grow with the number of faces; 100 a cell keeps
  the whole run near a minute with about 85 analysed faces per perceived race x gender cell, every
  one of them audited as an applicant (cross-fitting, :mod:`.failure`).
- ``paper``: every adult crop (2,063 of the 2,800; see :mod:`.data` for why minors are left out)
  and Bertrand & Mullainathan's absolute callback rate (9.65%) as the base rate.

The simulated historical decisions are parameterised here (:mod:`.simulate` documents the process):
``expression_share`` (facial expression's share of the score, 29% per the Washington Post, Nov
2019), ``callback_rates`` (Bertrand & Mullainathan 2004: 9.65% for white-sounding names, 6.45% for
African-American-sounding names; their ratio is the bias at ``beta = 1``), ``beta`` (the strength the
autopsy examines) and ``betas`` (the grid of the failure stage; ``0`` is the control).
"""

from __future__ import annotations

from dataclasses import dataclass

from autopsy.contract import Config

#: Bertrand & Mullainathan (2004), AER 94(4), Table 1: callback rates for white- and
#: African-American-sounding names on otherwise identical CVs.
CALLBACKS_WHITE, CALLBACKS_BLACK = 0.0965, 0.0645
#: Facial movements' share of a candidate's score, up to 29% as HireVue described it to the Washington Post
#: (Harwell, 22 Oct / 6 Nov 2019).
EXPRESSION_SHARE = 0.29


@dataclass(frozen=True)
class HiringConfig(Config):
    min_age: int | None = 20  # candidates are adults (FairFace age bins from 20-29); None keeps everyone
    min_face_presence: float = 0.5  # faces the landmark model barely sees are reported and left out
    batch_size: int = 32  # faces per model pass
    expression_share: float = EXPRESSION_SHARE  # share of the past recruiters' score carried by the face
    callback_rates: tuple[float, float] = (CALLBACKS_WHITE, CALLBACKS_BLACK)  # favoured, disfavoured group
    base_rate: float = 0.5  # share of candidates past recruiters advanced before any bias
    recruiter_noise: float = 0.5  # spread of a recruiter's judgement around the merit score (probit scale)
    bias_attribute: str = "race"  # the perceived attribute past recruiters were biased on ...
    bias_group: str = "Black"  # ... and the group they disfavoured
    beta: float = 1.0  # recruiter-bias strength the autopsy examines (0: none; 1: Bertrand & Mullainathan)
    betas: tuple[float, ...] = (0.0, 0.5, 1.0)  # the failure stage's grid; 0 is the control
    label_resamples: int = 400  # cluster bootstrap of the First Impressions correlations (over 3,060 videos)
    folds: int = 2  # cross-fitting: each fold is decided by a scorer trained on the others
    scorer_c: float = 0.1  # inverse L2 strength of the logistic scorer
    counterfactual_per_group: int = 6  # held-out faces per race x gender cell edited along the Monk scale
    mst_levels: tuple[int, ...] = (2, 9)  # Monk Skin Tone levels the faces are edited to
    attribution_examples: int = 4
    attribution_steps: int = 16  # Integrated Gradients steps
    occlusion_window: int = 8  # pixels of the 64 x 64 model input
    faithfulness_steps: int = 8
    featviz_channels: tuple[str, ...] = ("happy", "angry", "neutral")  # expression classes rendered
    featviz_steps: int = 48
    featviz_size: int = 64
    probe_cv: int = 5
    mitigation_bounds: tuple[float, ...] = (0.02, 0.05, 0.15)  # ExponentiatedGradient parity bounds
    mitigation_iterations: int = 50  # ExponentiatedGradient's iterations per bound
    randomisation_steps: int = 8  # cascade: the head, the trunk's last layers, then the whole expression model

    attack_per_group: int = 4  # held-out applicants per perceived race x gender cell (robustness)
    attack_budgets: tuple[float, ...] = (1, 2, 4, 8, 16)  # L-inf, 0-255 grey levels of the 64 x 64 face
    attack_method: str = "fgsm"  # "fgsm" or "pgd"
    attack_steps: int = 10  # PGD steps (FGSM takes one)

    def __post_init__(self):
        shares = {"min_face_presence": self.min_face_presence, "expression_share": self.expression_share,
                  "base_rate": self.base_rate}
        for name, value in shares.items():
            if not 0 < float(value) < 1:
                raise ValueError(f"{name} must lie strictly between 0 and 1; got {value!r}")
        favoured, disfavoured = self.callback_rates
        if not 0 < disfavoured <= favoured < 1:
            raise ValueError(f"callback_rates must be (favoured, disfavoured) rates with 0 < disfavoured <= favoured "
                             f"< 1, e.g. (0.0965, 0.0645); got {self.callback_rates!r}")
        top = 1 / (1 - disfavoured / favoured) if disfavoured < favoured else float("inf")
        for b in (self.beta, *self.betas):
            if not 0 <= b <= top:
                raise ValueError(f"beta must lie in [0, {top:.2f}] (at {top:.2f} the disfavoured group's callbacks "
                                 f"reach zero); got {b!r}")
        if self.bias_attribute not in ("race", "gender"):
            raise ValueError(f"bias_attribute must be 'race' or 'gender'; got {self.bias_attribute!r}")
        if any(not 1 <= int(m) <= 10 for m in self.mst_levels):
            raise ValueError(f"mst_levels are Monk Skin Tone levels 1-10; got {list(self.mst_levels)}")
        if self.batch_size < 1 or self.probe_cv < 2 or self.folds < 2 or self.recruiter_noise <= 0:
            raise ValueError(f"batch_size must be >= 1, probe_cv and folds >= 2, recruiter_noise > 0; got "
                             f"{self.batch_size}, {self.probe_cv}, {self.folds}, {self.recruiter_noise}")


PROFILES = {
    "smoke": HiringConfig(limit_per_group=3, n_bootstrap=100, betas=(0.0, 1.0), counterfactual_per_group=1,
                          mst_levels=(9,), attribution_examples=1, attribution_steps=2, occlusion_window=32,
                          faithfulness_steps=2, featviz_channels=("happy",), featviz_steps=2, featviz_size=16,
                          probe_cv=2, mitigation_bounds=(0.1,), mitigation_iterations=5, randomisation_steps=3,
                          label_resamples=50, attack_per_group=1, attack_budgets=(2, 16)),
    "quick": HiringConfig(limit_per_group=100),
    "paper": HiringConfig(base_rate=CALLBACKS_WHITE, attack_per_group=20,
                          attack_budgets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), attack_method="pgd"),
}
