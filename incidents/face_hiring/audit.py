"""The perception audit: what the face models read, by perceived race and gender.

**Emotion at matched smile** (the design of Rhue 2018, "Racial Influence on Automated Perceptions of
Emotions", SSRN 3281765): Rhue scored 400 NBA players' official photos with Face++ and Microsoft's
Face API and compared Black and white players *at the same level of smile*, so that a gap could not
come from one group smiling more. We do the same with the open FER-2013 model: the negative-emotion
score (angry + disgust + fear + sad), ``happy`` and ``angry`` regressed by ordinary least squares on
perceived race and gender with the blendshape smile (and its square) as the control, with
heteroscedasticity-robust (HC3) 95% intervals (statsmodels); and the scores by race within smile
quartiles, with bootstrap intervals (:func:`autopsy.fairness.score_by_group`), for the figure.

**Gender-Shades-style error table** (Buolamwini & Gebru 2018, "Gender Shades", FAT* / PMLR 81): the
IMDB gender model's error rate by perceived race x gender with Wilson intervals, beside the published
error rates of three commercial classifiers on the Pilot Parliaments Benchmark. Their groups are
skin types (Fitzpatrick I-III "lighter", IV-VI "darker"); ours are perceived race labels, so only
Black and White rows are set beside them, and the comparison is loose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy import fairness
from autopsy.stats import Estimate, proportion
from incidents.face_hiring.simulate import smile

NEGATIVE = ("emotion_angry", "emotion_disgust", "emotion_fear", "emotion_sad")
OUTCOMES = ("negative", "happy", "angry")

RHUE_2018 = {
    "citation": "Rhue, L. (2018). Racial Influence on Automated Perceptions of Emotions. SSRN 3281765.",
    "data": "400 official photos of NBA players",
    "face_plus_plus": "scored Black players as angrier than white players at every level of smile",
    "microsoft": "scored Black players as more contemptuous when their expression was ambiguous; "
                 "the gap closed as the smile widened",
    "example": "Face++ gave Darren Collison and Gordon Hayward similar smile scores (48.7 and 48.1) but read "
               "Collison as 39.2% happy and 27% angry, Hayward as 59.7% happy and 0.13% angry",
    "numbers_note": "the paper's regression coefficients are not quoted: we could not verify them from an "
                    "accessible copy, so the published result is described qualitatively",
}

#: Error rates (%) on the Pilot Parliaments Benchmark (1,270 parliamentarians), Buolamwini & Gebru 2018.
GENDER_SHADES = {
    "Microsoft": {"darker female": 20.8, "darker male": 6.0, "lighter female": 1.7, "lighter male": 0.0},
    "Face++": {"darker female": 34.5, "darker male": 0.7, "lighter female": 6.0, "lighter male": 0.8},
    "IBM": {"darker female": 34.7, "darker male": 12.0, "lighter female": 7.1, "lighter male": 0.3},
}
_SKIN_TYPE = {("Black", "Female"): "darker female", ("Black", "Male"): "darker male",
              ("White", "Female"): "lighter female", ("White", "Male"): "lighter male"}


def outcomes(features: pd.DataFrame) -> pd.DataFrame:
    """Per face: the blendshape smile and the three emotion outcomes of the audit."""
    return pd.DataFrame({"smile": smile(features), "negative": features[list(NEGATIVE)].sum(axis=1).to_numpy(),
                         "happy": features["emotion_happy"].to_numpy(), "angry": features["emotion_angry"].to_numpy()})


def reference(values, preferred: str) -> str:
    """``preferred`` if it is among ``values``, else the most frequent value (bring-your-own sets)."""
    values = pd.Series(values).astype(str)
    return preferred if preferred in set(values) else values.value_counts().index[0]


def matched_smile(scores: pd.DataFrame, people: pd.DataFrame) -> dict:
    """OLS of each outcome on perceived race and gender at matched smile: ``{outcome: {contrast: Estimate}}``.

    Contrasts are each race against White and Female against Male (or the most frequent group when
    those are absent), with HC3 95% intervals and z-test p-values.
    """
    import statsmodels.api as sm

    race_ref, gender_ref = reference(people["race"], "White"), reference(people["gender"], "Male")
    design = pd.concat([
        pd.get_dummies(people["race"].astype(str), prefix="race", prefix_sep="=").drop(columns=f"race={race_ref}"),
        pd.get_dummies(people["gender"].astype(str), prefix="gender", prefix_sep="=").drop(
            columns=f"gender={gender_ref}"),
        pd.DataFrame({"smile": scores["smile"], "smile²": scores["smile"] ** 2})], axis=1).astype(float)
    design = sm.add_constant(design.reset_index(drop=True), has_constant="add")
    found = {}
    for outcome in OUTCOMES:
        fit = sm.OLS(scores[outcome].to_numpy(float), design).fit(cov_type="HC3")
        ci = fit.conf_int()
        test = "OLS at matched smile (smile, smile²); HC3 95% CI; z-test p"
        found[outcome] = {
            f"{name.split('=', 1)[1]} vs {race_ref if name.startswith('race') else gender_ref}":
                Estimate(float(fit.params[name]), float(ci.loc[name, 0]), float(ci.loc[name, 1]), int(fit.nobs), test,
                         p_value=float(fit.pvalues[name]))
            for name in design.columns if "=" in name}
    return found


def by_smile_quartile(scores: pd.DataFrame, people: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean of each outcome by perceived race within quartiles of the smile, with bootstrap intervals."""
    quartile = pd.qcut(scores["smile"].rank(method="first"), 4, labels=["Q1 (least)", "Q2", "Q3", "Q4 (most)"])
    groups = pd.DataFrame({"race": people["race"].astype(str).to_numpy(), "smile": quartile.astype(str).to_numpy()})
    frames = [fairness.score_by_group(scores[o].to_numpy(), groups, n_boot=n_boot, seed=seed).assign(outcome=o)
              for o in ("negative", "happy")]
    return pd.concat(frames, ignore_index=True)


def gender_errors(features: pd.DataFrame, people: pd.DataFrame) -> list[dict]:
    """The gender model's error rate per perceived race x gender cell, beside Gender Shades (module docstring)."""
    said = np.where(features["gender_man"].to_numpy() > features["gender_woman"].to_numpy(), "Male", "Female")
    wrong = pd.Series(said != people["gender"].astype(str).to_numpy())
    rows = []
    for (race, gender), idx in people.groupby(["race", "gender"]).groups.items():
        errors = wrong.loc[people.index.get_indexer(idx)]
        row = {"perceived race": race, "perceived gender": gender,
               "error, IMDB gender model": proportion(int(errors.sum()), len(errors))}
        skin = _SKIN_TYPE.get((race, gender))
        for api, published in GENDER_SHADES.items():
            row[f"{api} on PPB (%)"] = published[skin] if skin else None
        row["PPB group"] = skin
        rows.append(row)
    return rows


def overall_gender_accuracy(features: pd.DataFrame, people: pd.DataFrame) -> Estimate:
    said = np.where(features["gender_man"].to_numpy() > features["gender_woman"].to_numpy(), "Male", "Female")
    right = said == people["gender"].astype(str).to_numpy()
    return proportion(int(right.sum()), len(right))
