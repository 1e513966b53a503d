"""Coverage, erasure and detector misses per perceived group, the incident's contrast, the threshold's
sensitivity, and the model card beside the lab.

Means carry a percentile bootstrap within the group, rates a Wilson interval, contrasts a bootstrap
within groups with a rank test (:mod:`autopsy.fairness`, :func:`autopsy.stats.proportion`). The
table ``photos`` has one row per photo: ``race``, ``gender``, ``race_gender``, ``face_detected``,
``coverage``, ``soft_coverage``, ``keypoints_kept`` and ``erased`` (NaN / False without a face).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from autopsy import fairness
from autopsy.stats import Estimate, proportion

#: FairFace's race groups in the order the lab reports them; other labels follow alphabetically.
RACE_ORDER = ["White", "Black", "East Asian", "Southeast Asian", "Indian", "Middle Eastern", "Latino_Hispanic"]
#: The incident's contrast when both labels exist: the group of the man whose head was erased, and White.
CONTRAST = ("Black", "White")


@dataclass(frozen=True)
class Summary:
    """All photos: detector misses, coverage, erasure and the keypoint check."""

    n_photos: int
    n_faces: int
    no_face: Estimate
    coverage: Estimate
    soft_coverage: Estimate
    erased: Estimate
    n_erased: int
    keypoints_kept: Estimate
    n_erased_features_kept: int  # erased by the box measure although eyes, nose and mouth all stay
    features_lost: Estimate  # faces that lost at least half of their central keypoints


@dataclass(frozen=True)
class GroupSummary:
    """One perceived group: photos, detector misses (Wilson), coverage (bootstrap), erasure (Wilson)."""

    label: str
    n_photos: int
    n_faces: int
    n_no_face: int
    n_erased: int
    no_face: Estimate
    coverage: Estimate
    soft_coverage: Estimate
    erased: Estimate
    keypoints_kept: Estimate


def group_key(value) -> str:
    """A metrics key for a group label: 'East Asian' -> 'East_Asian', 'Black Female' -> 'Black_Female'."""
    return re.sub(r"\W+", "_", str(value)).strip("_") or "unlabelled"


def ordered(values) -> list:
    """Group labels in the lab's race order (race x gender labels by their race), then alphabetically."""
    def rank(v):
        race = str(v).rsplit(" ", 1)[0] if str(v) not in RACE_ORDER else str(v)
        return (RACE_ORDER.index(race) if race in RACE_ORDER else len(RACE_ORDER), str(v))

    return sorted(dict.fromkeys(values), key=rank)


def summary(photos: pd.DataFrame, *, n_boot: int, seed: int) -> Summary:
    faces = photos[photos["face_detected"]]
    erased = int(faces["erased"].sum())
    return Summary(
        n_photos=len(photos), n_faces=len(faces),
        no_face=proportion(int((~photos["face_detected"]).sum()), len(photos)),
        coverage=fairness.mean_estimate(faces["coverage"], n_boot=n_boot, seed=seed),
        soft_coverage=fairness.mean_estimate(faces["soft_coverage"], n_boot=n_boot, seed=seed + 1),
        erased=proportion(erased, len(faces)), n_erased=erased,
        keypoints_kept=fairness.mean_estimate(faces["keypoints_kept"], n_boot=n_boot, seed=seed + 5),
        n_erased_features_kept=int((faces["erased"] & (faces["keypoints_kept"] >= 1)).sum()),
        features_lost=proportion(int((faces["keypoints_kept"] < 0.5).sum()), len(faces)),
    )


def by_group(photos: pd.DataFrame, attribute: str, *, n_boot: int, seed: int) -> dict[str, GroupSummary]:
    """Per group of ``attribute`` (race, gender or race_gender), keyed by :func:`group_key`."""
    faces = photos[photos["face_detected"]]
    cover = {column: fairness.estimates_by_group(fairness.score_by_group(
                 faces[column].to_numpy(), faces[attribute].reset_index(drop=True), n_boot=n_boot, seed=seed))
             if len(faces) else {} for column in ("coverage", "soft_coverage")}
    none = fairness.mean_estimate([])
    out = {}
    for group in ordered(photos[attribute]):
        part = photos[photos[attribute] == group]
        detected = part[part["face_detected"]]
        out[group_key(group)] = GroupSummary(
            label=str(group), n_photos=len(part), n_faces=len(detected), n_no_face=len(part) - len(detected),
            n_erased=int(detected["erased"].sum()), no_face=proportion(len(part) - len(detected), len(part)),
            coverage=cover["coverage"].get(group, none), soft_coverage=cover["soft_coverage"].get(group, none),
            erased=proportion(int(detected["erased"].sum()), len(detected)),
            keypoints_kept=fairness.mean_estimate(detected["keypoints_kept"], n_boot=n_boot, seed=seed + 5),
        )
    return out


def group_rows(groups: dict[str, GroupSummary], attribute: str) -> list[dict]:
    """The story's table of one attribute's groups."""
    return [{attribute.replace("_", " x "): g.label, "photos": g.n_photos, "no face detected": g.no_face,
             "face coverage (mask ≥ 0.5)": g.coverage, "soft coverage": g.soft_coverage,
             "eyes/nose/mouth kept": g.keypoints_kept, "heads erased": g.erased} for g in groups.values()]


def disparities(photos: pd.DataFrame, *, n_boot: int, seed: int) -> dict:
    """The contrast of the incident (Black - White coverage when both labels have faces, else the
    lowest minus the highest race group), the spread over race groups (Kruskal-Wallis), and the
    spreads of the erasure and detector-miss rates (``fairness.metric_difference``)."""
    faces = photos[photos["face_detected"]]
    means = faces.groupby("race")["coverage"].mean()
    if len(means) < 2:
        return _not_estimable(means, len(faces))
    first, second = CONTRAST if set(CONTRAST) <= set(means.index) else (means.idxmin(), means.idxmax())
    out = {f"{column}_contrast": fairness.mean_difference(
               faces.loc[faces["race"] == first, column], faces.loc[faces["race"] == second, column],
               label=f"{column}: {first} - {second}", n_boot=n_boot, seed=seed)
           for column in ("coverage", "soft_coverage")}
    out["contrast_groups"] = {"first": str(first), "second": str(second)}
    out["lowest_race"] = {"group": str(means.idxmin()), "coverage": float(means.min())}
    out["highest_race"] = {"group": str(means.idxmax()), "coverage": float(means.max())}
    out["coverage_spread"] = fairness.spread_of_means(faces["coverage"], faces["race"], n_boot=n_boot, seed=seed + 7,
                                                      label="race-group mean coverage")
    for name, flags, rows in (("erased_spread", faces["erased"], faces), ("no_face_spread", ~photos["face_detected"], photos)):
        out[name] = fairness.metric_difference(None, flags.to_numpy(), rows["race"].reset_index(drop=True),
                                               metric="selection_rate", n_boot=n_boot, seed=seed)
    return out


def _not_estimable(means: pd.Series, n_faces: int) -> dict:
    undefined = Estimate(float("nan"), float("nan"), float("nan"), n_faces, "not estimable",
                         warning="fewer than two race groups with a detected face")
    only = str(means.index[0]) if len(means) else "none"
    value = float(means.iloc[0]) if len(means) else float("nan")
    return {"coverage_contrast": undefined, "soft_coverage_contrast": undefined, "coverage_spread": undefined,
            "erased_spread": undefined, "no_face_spread": undefined, "contrast_groups": {"first": only, "second": only},
            "lowest_race": {"group": only, "coverage": value}, "highest_race": {"group": only, "coverage": value}}


def sensitivity(photos: pd.DataFrame, thresholds) -> tuple[dict, list[dict]]:
    """The erasure rate at other cut-offs, overall (Wilson) and as counts per race group."""
    faces = photos[photos["face_detected"]]
    metrics, rows = {}, []
    for t in thresholds:
        flag = faces["coverage"] < t
        metrics[f"below_{int(round(100 * t))}"] = proportion(int(flag.sum()), len(faces))
        row = {"erased if coverage below": t, "all photos": metrics[f"below_{int(round(100 * t))}"]}
        for race in ordered(faces["race"]):
            part = flag[faces["race"] == race]
            row[str(race)] = f"{int(part.sum())}/{len(part)}"
        rows.append(row)
    return metrics, rows


def model_card_rows(published: dict, card_regions: dict, race: dict[str, GroupSummary], overall: Summary) -> list[dict]:
    """The card's worst, best and mean IoU beside the lab's nearest perceived group (declared with
    each region in the segmenter's pin) and all photos."""
    rows = []
    for key in ("worst_region", "best_region", "mean"):
        card = published[key]
        region = card_regions.get(card["region"])
        lab = overall if region is None else race.get(group_key(region["nearest_perceived_group"]))
        rows.append({
            "model card group": card["region"],
            "model card IoU": f"{100 * card['iou']:.2f}% ± {100 * card['plus_minus']:.2f}",
            "lab group (perceived race)": "absent" if lab is None else ("all photos" if region is None else lab.label),
            "lab face coverage": "—" if lab is None else lab.coverage,
            "lab heads erased": "—" if lab is None else lab.erased,
        })
    return rows
