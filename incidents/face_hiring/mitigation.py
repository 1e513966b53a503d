"""Mitigation with fairlearn, and the accuracy-fairness trade-off it buys.

On the history of bias strength ``config.beta`` (the examined one), three kinds of scorer on the same
standardised features:

- the reproduced scorer, unmitigated (:mod:`.scorer`);
- **ExponentiatedGradient** (Agarwal et al. 2018, "A Reductions Approach to Fair Classification",
  ICML) around the same logistic regression, under a demographic-parity constraint over perceived
  race for each bound in ``config.mitigation_bounds``: a curve. It needs race at training time only;
- **ThresholdOptimizer** (Hardt, Price & Srebro 2016) on the unmitigated model's probabilities,
  group-specific thresholds for demographic parity: one point. It needs race at decision time, which
  is disparate treatment in US employment law; it is shown as a reference, not a recommendation.

Each is scored on the held-out applicants by its accuracy against the simulated history (the biased
decisions it learnt to imitate) and against an unbiased recruiter's decisions (``y(0)``, which only the
simulation knows), and by the selection-rate ratio of the disfavoured group (four-fifths rule). Part of
the "accuracy" mitigation gives up is agreement with the recruiters' bias; the two columns show how much.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from autopsy import fairness
from autopsy.stats import proportion

THRESHOLD_OPTIMIZER = "ThresholdOptimizer (demographic parity; race at decision time)"


def _row(method: str, bound, decisions, history, unbiased, sensitive, between, *, n_boot: int, seed: int) -> dict:
    di = fairness.disparate_impact_ratio(decisions, sensitive, between=between, n_boot=n_boot, seed=seed)
    n = len(decisions)
    return {"method": method, "bound": bound,
            "accuracy vs history": proportion(int((decisions == history).sum()), n),
            "accuracy vs unbiased decisions": proportion(int((decisions == unbiased).sum()), n),
            "selection ratio": di.ratio, "four-fifths rule": "passes" if di.four_fifths else "adverse impact"}


def tradeoff(x_train, y_train, s_train, x_test, history, unbiased, s_test, baseline, *, between, config,
             seed: int, progress=lambda f, m: None) -> tuple[list[dict], str | None]:
    """Rows of the trade-off: the unmitigated ``baseline`` decisions, ExponentiatedGradient at each bound,
    ThresholdOptimizer (see the module docstring); sensitive features ``s_*`` are perceived race. Also
    returns why ThresholdOptimizer was skipped (a perceived group whose training decisions are all alike),
    or None."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient

    x_train, x_test = np.asarray(x_train, dtype=float), np.asarray(x_test, dtype=float)
    common = {"sensitive": s_test, "between": between, "n_boot": config.n_bootstrap, "seed": seed}
    rows = [_row("reproduced scorer (no mitigation)", None, baseline, history, unbiased, **common)]
    scale = StandardScaler().fit(x_train)
    for k, bound in enumerate(config.mitigation_bounds):
        progress(k / (len(config.mitigation_bounds) + 1), f"ExponentiatedGradient, parity bound {bound:g}")
        # A looser solver tolerance and no linear-programming step keep each bound to seconds on a CPU.
        reduction = ExponentiatedGradient(LogisticRegression(C=config.scorer_c, max_iter=500, tol=1e-3),
                                          DemographicParity(difference_bound=bound), run_linprog_step=False,
                                          max_iter=config.mitigation_iterations)
        reduction.fit(scale.transform(x_train), y_train, sensitive_features=s_train)
        decisions = np.asarray(reduction.predict(scale.transform(x_test), random_state=seed)).astype(int)
        rows.append(_row("ExponentiatedGradient (demographic parity)", bound, decisions, history, unbiased, **common))
    progress(len(config.mitigation_bounds) / (len(config.mitigation_bounds) + 1), "ThresholdOptimizer")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=config.scorer_c, max_iter=2000)).fit(x_train, y_train)
    post = ThresholdOptimizer(estimator=model, constraints="demographic_parity", predict_method="predict_proba",
                              prefit=True)
    try:
        post.fit(x_train, y_train, sensitive_features=s_train)
    except ValueError as err:  # a group whose training decisions are all alike: no threshold to choose
        return rows, f"ThresholdOptimizer not fitted: {err}"
    decisions = np.asarray(post.predict(x_test, sensitive_features=s_test, random_state=seed)).astype(int)
    rows.append(_row(THRESHOLD_OPTIMIZER, None, decisions, history, unbiased, **common))
    return rows, None
