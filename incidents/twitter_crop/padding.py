"""Left-padding sensitivity: a few black columns on the left of a canvas, and the crop changes face.

Entrants of Twitter's algorithmic bias bounty (2021) reported that padding an image with a few
black pixels could move the crop from one face to another. Padding shifts every pixel against the
binary's 320-px resize and its 16-pixel output grid, so the maximum can land in another cell. This
module measures it on the protocol's own cross-race canvases: the share of canvases whose winner
changes, per padding width, split by the perceived race of the face that won without padding.
"""

from __future__ import annotations

import pandas as pd
import torch
from PIL import Image

from autopsy import stats
from incidents.twitter_crop import model
from incidents.twitter_crop.canvases import Layout, join, outcome, to_tensor


def padded(canvas: Image.Image, pixels: int) -> Image.Image:
    """``canvas`` with ``pixels`` black columns added on its left."""
    out = Image.new("RGB", (canvas.width + pixels, canvas.height))
    out.paste(canvas, (pixels, 0))
    return out


def left_wins(network, left: Image.Image, right: Image.Image, pixels: int = 0) -> bool:
    """Whether the binary's salient point on the (padded) canvas of ``left`` and ``right`` is in the left photo."""
    canvas = padded(join(left, right), pixels)
    with torch.no_grad():
        scores = model.score_grid(to_tensor(canvas), model=network)[0, 0].numpy()
    return outcome(scores, Layout((left.width + pixels, left.height), right.size)).left_wins_max


def probe(network, pairs: list[tuple[Image.Image, Image.Image, str, str]], widths, progress=None, *,
          before=None) -> pd.DataFrame:
    """One row per canvas and padding width: the winner's group without and with padding.

    ``pairs`` holds (left photo, right photo, left group, right group); ``before`` (optional) whether
    the left photo wins each unpadded canvas, where the caller has already scored them (the trials).
    """
    rows = []
    for k, (left, right, left_group, right_group) in enumerate(pairs):
        before_k = left_wins(network, left, right) if before is None else bool(before[k])
        for width in widths:
            after = left_wins(network, left, right, width)
            rows.append({"canvas": k, "padding": width, "winner_before": left_group if before_k else right_group,
                         "winner_after": left_group if after else right_group, "flipped": after != before_k})
        if progress:
            progress((k + 1) / len(pairs), f"{k + 1}/{len(pairs)} canvases")
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> list[dict]:
    """Per padding width: how often the crop changes face, overall and by the race of the first winner."""
    out = []
    for width, g in frame.groupby("padding"):
        row = {"padding (px)": int(width), "crop changes face": _rate(g["flipped"])}
        for race, code in (("Black", "B"), ("white", "W")):
            part = g[g["winner_before"].str[0] == code]["flipped"]
            row[f"changes when a {race} face won"] = _rate(part) if len(part) else None
        out.append(row)
    return out


def _rate(flags) -> stats.Estimate:
    return stats.proportion(int(flags.sum()), len(flags))
