"""Historical hiring decisions, simulated by a documented process (the labels are simulated, not real).

No hiring records with candidates' faces are public, and the labels the field did use (First
Impressions, :mod:`.labels`) hold crowd workers' impressions of YouTube clips, not decisions. So the
lab writes down a process for the decisions a face-based scorer would learn from, with every
parameter in the config, and sets its two published ingredients from their sources:

1. **Expression** ``E``: how much the candidate smiles, read as the Face Landmarker's smile blendshape
   (mean of ``mouthSmileLeft`` and ``mouthSmileRight``; FACS action unit 12, the control in Rhue
   2018), ranked **within the candidate's perceived race x gender group** and mapped to a standard
   normal score. Every group thus has the same distribution of ``E`` by construction: a past
   recruiter rewarded a smile the same way in every group.
2. **Everything else** the recruiter saw (CV, answers): ``Q ~ N(0, 1)``, independent of the face and
   the group.
3. **Merit** ``M = w E + (1 - w) Q``, with ``w = expression_share`` = 0.29: facial movements could
   make up 29% of a candidate's score (HireVue, as reported by Harwell, Washington Post, Nov 2019).
4. **An unbiased recruiter** advances a candidate with probability ``p = Phi((M - c) / s)`` (``s`` =
   ``recruiter_noise``), ``c`` set so that ``p`` averages ``base_rate`` over the candidates. Merit has
   the same distribution in every group, so at ``beta = 0`` every group's expected rate is the same.
5. **A biased recruiter** withdraws each advance of a candidate in the disfavoured group
   (``bias_attribute`` = ``bias_group``) with probability ``beta (1 - r)``, where
   ``r = 6.45% / 9.65%`` is the ratio of callback rates for African-American- and white-sounding
   names on identical CVs (Bertrand & Mullainathan 2004, AER 94(4)). The disfavoured group's expected
   rate is then ``1 - beta (1 - r)`` times the others': exactly ``r`` at ``beta = 1``, none at
   ``beta = 0`` (the control).
6. **Decisions** ``y(beta) = 1[u < p x penalty(beta)]`` with one uniform ``u`` per candidate shared by
   every ``beta`` (common random numbers): the biased history is the unbiased one with some
   disfavoured candidates' advances withdrawn, so ``y(beta) <= y(0)`` and the grid compares like with like.

Race and gender enter only step 1's ranking (so that the expression term is group-neutral) and step
5 (the recruiter's bias); the scorer trained on these decisions never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

SMILE_COLUMNS = ("bs_mouthSmileLeft", "bs_mouthSmileRight")


def smile(features: pd.DataFrame) -> np.ndarray:
    """The blendshape smile (FACS AU12): mean of the left and right ``mouthSmile`` scores, in [0, 1]."""
    return features[list(SMILE_COLUMNS)].mean(axis=1).to_numpy(float)


def within_group_normal_scores(values, groups) -> np.ndarray:
    """``values`` ranked within each group and mapped to standard normal quantiles (ties averaged)."""
    values = pd.Series(np.asarray(values, dtype=float))
    groups = pd.Series(np.asarray(groups)).astype(str)
    ranks = values.groupby(groups).rank(method="average")
    sizes = groups.map(groups.value_counts())
    return stats.norm.ppf(((ranks - 0.5) / sizes).to_numpy(float))


def bias_ratio(callback_rates) -> float:
    """The disfavoured group's callback rate over the favoured group's (0.668 for 6.45% / 9.65%)."""
    favoured, disfavoured = callback_rates
    return disfavoured / favoured


@dataclass(frozen=True)
class History:
    """One simulated history of decisions for a fixed set of candidates; :meth:`decisions` at any beta."""

    expression: np.ndarray  # E, standard normal within each group
    other: np.ndarray  # Q, the rest of the application, independent of the face and the group
    merit: np.ndarray  # M = w E + (1 - w) Q
    p_advance: np.ndarray  # an unbiased recruiter's probability of advancing each candidate
    uniform: np.ndarray  # the shared random numbers u
    disfavoured: np.ndarray  # bool: in the group the biased recruiter disfavours
    ratio: float  # r, the Bertrand & Mullainathan ratio reached at beta = 1

    def penalty(self, beta: float) -> np.ndarray:
        """Each candidate's multiplier on ``p_advance``: ``1 - beta (1 - r)`` if disfavoured, else 1."""
        return np.where(self.disfavoured, 1.0 - beta * (1.0 - self.ratio), 1.0)

    def expected(self, beta: float) -> np.ndarray:
        """Each candidate's probability of being advanced by the recruiter of bias strength ``beta``."""
        return self.p_advance * self.penalty(beta)

    def decisions(self, beta: float) -> np.ndarray:
        """The simulated historical decisions (0/1) at bias strength ``beta``."""
        return (self.uniform < self.expected(beta)).astype(int)


def simulate(features: pd.DataFrame, people: pd.DataFrame, config, *, seed: int) -> History:
    """Simulate the history for candidates with perception ``features`` and perceived labels ``people``
    (columns ``race``, ``gender``), with the process and parameters of the module docstring."""
    if len(features) != len(people):
        raise ValueError(f"{len(features)} feature rows for {len(people)} candidates")
    rng = np.random.default_rng(seed)
    cell = people["race"].astype(str) + " " + people["gender"].astype(str)
    expression = within_group_normal_scores(smile(features), cell)
    other = rng.standard_normal(len(people))
    w = config.expression_share
    merit = w * expression + (1 - w) * other
    merit = (merit - merit.mean()) / (merit.std() or 1.0)
    s = config.recruiter_noise

    def gap(c):
        return stats.norm.cdf((merit - c) / s).mean() - config.base_rate

    c = optimize.brentq(gap, merit.min() - 10 * s - 10, merit.max() + 10 * s + 10)
    p = stats.norm.cdf((merit - c) / s)
    disfavoured = (people[config.bias_attribute].astype(str) == config.bias_group).to_numpy()
    return History(expression, other, merit, p, rng.random(len(people)), disfavoured,
                   bias_ratio(config.callback_rates))
