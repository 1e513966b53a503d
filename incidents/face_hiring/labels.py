"""What real labels of this kind encode: the structure of ChaLearn First Impressions.

The field's public hiring label is First Impressions' ``interview`` ("would you invite this person
to a job interview?"), crowd workers' pairwise judgements of 15-second YouTube clips turned into
scores (Ponce-López et al. 2016; Escalante et al. 2018). The lab does not train on it (its clips'
faces are not public here); it shows what such a label is made of:

- the correlation of ``interview`` with each Big Five trait, with a cluster bootstrap over YouTube
  videos (:func:`autopsy.stats.bootstrap`; clips cut from one video are not independent);
- an ordinary least-squares regression of ``interview`` on the five traits with cluster-robust
  (by video) 95% intervals (statsmodels), and its R²;
- the share of the traits' variance on their first principal component: one general impression
  (a halo) rather than five separate judgements.

The column the files call ``neuroticism`` correlates positively with ``interview`` and with every
other trait, which is what ratings of emotional *stability* (the inverse pole) do; the lab reads it
as emotional stability and says so, an inference from the data, not from the annotation protocol.
Licence: CC BY-NC 4.0, non-commercial research (:data:`~incidents.face_hiring.data.FIRST_IMPRESSIONS_LICENCE`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy.stats import Estimate, bootstrap
from incidents.face_hiring.data import TRAITS

#: How the lab reads each column (the files' names, with the neuroticism column's direction).
READS_AS = {"openness": "openness", "conscientiousness": "conscientiousness", "extraversion": "extraversion",
            "agreeableness": "agreeableness", "neuroticism": "emotional stability (the file's 'neuroticism')"}


def _pearson(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def label_structure(table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Correlations, the regression and the halo share of ``interview`` on the traits (module docstring)."""
    import statsmodels.api as sm
    from sklearn.decomposition import PCA

    n, videos = len(table), table["video"].to_numpy()
    test = f"Pearson r; cluster bootstrap over {len(np.unique(videos)):,} videos ({n_boot} resamples)"
    correlations = {}
    for trait in TRAITS:
        low, high = bootstrap(_pearson, table[trait].to_numpy(), table["interview"].to_numpy(),
                              n_resamples=n_boot, seed=seed, groups=videos)
        correlations[trait] = Estimate(_pearson(table[trait], table["interview"]), low, high, n, test)
    fit = sm.OLS(table["interview"], sm.add_constant(table[list(TRAITS)])).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(videos)[0]})
    intervals = fit.conf_int()
    coefficients = {trait: Estimate(float(fit.params[trait]), float(intervals.loc[trait, 0]),
                                    float(intervals.loc[trait, 1]), n,
                                    "OLS coefficient; cluster-robust (by video) 95% CI; z-test p",
                                    p_value=float(fit.pvalues[trait])) for trait in TRAITS}
    halo = float(PCA().fit(table[list(TRAITS)]).explained_variance_ratio_[0])
    rows = [{"trait (as the lab reads it)": READS_AS[t], "correlation with interview": correlations[t],
             "regression coefficient": coefficients[t]} for t in TRAITS]
    return {"n_clips": n, "n_videos": int(len(np.unique(videos))), "correlation": correlations,
            "coefficient": coefficients, "r_squared": float(fit.rsquared), "halo_share": halo,
            "neuroticism_reads_as": "emotional stability", "table": rows,
            "licence": table.attrs.get("licence"), "caveat": table.attrs.get("caveat")}
