"""Counterfactual skin-tone edits: the same photo, its skin moved along the Monk Skin Tone ladder.

Each edited photo is paired against its unedited original in both positions, through the binary's
pipeline; if the crop cared only about the person, the edit would win half the time. The edit is
the toolkit's ITA edit in CIELAB (:func:`autopsy.counterfactual.edit_skin_tone`) on the skin of the
detected face.
"""

from __future__ import annotations

import pandas as pd

from autopsy import counterfactual, stats
from incidents.twitter_crop.canvases import CanvasScorer, outcome


def edits(detector, photo, *, levels) -> list[tuple[int, object, dict]] | None:
    """``(level, edited photo, measured ITA)`` per Monk level; None if no face (or too little skin) is found."""
    faces = detector.detect(photo)
    mask = counterfactual.skin_mask(photo, region=faces[0].box) if faces else None
    if mask is None or mask.sum() < 100:
        return None
    return [(level, *counterfactual.edit_skin_tone(photo, target=level, mask=mask)) for level in levels]


def edit_trials(network, photo, edited: list) -> list[dict]:
    """Each edit against the original, in both positions: who holds the binary's salient point."""
    images = {"original": photo, **{level: image for level, image, _ in edited}}
    scorer = CanvasScorer(network, images)
    rows = []
    for level, _, record in edited:
        before, after = record.measured["ita_before"], record.measured["ita_after"]
        for edited_left in (True, False):
            left, right = (level, "original") if edited_left else ("original", level)
            (grid,) = scorer.grids([left], [right])
            left_wins = outcome(grid, scorer.layout(left, right)).left_wins_max
            rows.append({"mst_level": level, "ita_before": before, "ita_after": after, "delta_ita": after - before,
                         "edited_left": edited_left, "edited_wins": left_wins == edited_left})
    return rows


def ladder_table(frame: pd.DataFrame) -> list[dict]:
    """Per Monk level: the mean ITA change and how often the edited photo wins (Wilson, binomial vs 0.5)."""
    return [{"MST level": int(level), "mean ΔITA": float(g["delta_ita"].mean()),
             "edited photo wins": stats.proportion(int(g["edited_wins"].sum()), len(g), test_against=0.5)}
            for level, g in frame.groupby("mst_level")]


def summary(frame: pd.DataFrame, skipped: list[str]) -> dict:
    """Lighter and darker edits' win rates against their originals, and the position check."""
    def rate(wins) -> stats.Estimate | None:
        return stats.proportion(int(wins.sum()), len(wins), test_against=0.5) if len(wins) else None

    return {
        "n_photos": int(frame["image"].nunique()) if len(frame) else 0, "n_trials": len(frame),
        "n_skipped": len(skipped), "skipped_files": skipped,
        "lighter_edit_wins": rate(frame[frame["delta_ita"] > 0]["edited_wins"]) if len(frame) else None,
        "darker_edit_wins": rate(frame[frame["delta_ita"] < 0]["edited_wins"]) if len(frame) else None,
        "position_left_wins": rate(frame["edited_wins"] == frame["edited_left"]) if len(frame) else None,
    }
