"""How little it takes to crop a face out: the smallest change of one photo that moves Twitter's crop.

On cross-race canvases of the run (published order, the first setting), each attack changes only
the photo that holds the binary's salient point -- a mask covers that photo's pixels of the
canvas -- and searches the smallest change that moves the point onto the other photo:

- the decision is the binary's rule read off the score grid (:func:`.canvases.outcome`); the margin
  that steers the search is the grid's maximum over the left photo's cells minus its maximum over
  the right photo's (:func:`autopsy.robustness.region_max_margin`);
- the search is :func:`autopsy.robustness.minimal_budget` -- FGSM (Goodfellow, Shlens & Szegedy,
  ICLR 2015) or PGD (Madry et al., ICLR 2018) through the Adversarial Robustness Toolbox -- over a
  grid of L-inf budgets in 0-255 pixel levels of the canvas as the binary receives it, through the
  binary's resize and the network (:class:`.autopsy_steps.CanvasSaliency`). A whole level is the
  smallest change an 8-bit photo can carry; changes that are not whole levels (PGD's) are also
  rounded to 8 bits and scored again.

Common corruptions of the whole canvas (JPEG quality, Gaussian noise, brightness; Hendrycks &
Dietterich, ICLR 2019) ask the same question of changes nobody designed. Results are by the
perceived race, and race x gender, of the face the attack crops out, with intervals
(:func:`autopsy.robustness.group_summary`); race and gender are perceived attributes annotated by
others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
from PIL import Image

from autopsy import fairness, figures
from autopsy import robustness as rb
from autopsy.stats import proportion
from incidents.twitter_crop import model, protocol
from incidents.twitter_crop.autopsy_steps import CanvasSaliency
from incidents.twitter_crop.canvases import Layout, join, outcome, to_tensor

by_group = partial(rb.outcomes_by_group, noun="faces")  # outcomes by perceived group

BOUNDS = (0.0, 255.0)
UNITS = "L-inf, 0-255 pixel levels of the photo as uploaded (before the binary's resize)"
CONTRAST = ("Black", "White")  # the incident's question: is a Black face easier to crop out than a white one?
CORRUPTION_NAMES = {"jpeg": "JPEG quality", "gaussian_noise": "Gaussian noise (sd, share of 0-255)",
                    "brightness": "brightness gain"}


@dataclass(frozen=True)
class PairAttack:
    """One canvas ``[left | right]`` attacked on the photo that held the salient point."""

    layout: Layout
    left_wins_before: bool
    left_wins_after: bool
    budget: float  # smallest budget of the grid that moved the point; +inf if none did
    margin_before: float  # the steering margin on the clean canvas (positive: left wins)
    eight_bit: bool | None  # the move survives rounding the change to whole pixel levels (None: no move)
    canvas: np.ndarray | None = None  # (3, H, W) RGB 0-255 as the binary receives it (with images=True)
    adversarial: np.ndarray | None = None  # the canvas that moved the point (the canvas where none did)

    @property
    def success(self) -> bool:
        return self.left_wins_after != self.left_wins_before

    @property
    def attacked(self) -> str:
        """Which photo was changed: the one that held the salient point."""
        return "left" if self.left_wins_before else "right"


def _left_cells(layout: Layout) -> np.ndarray:
    """(h, w) grid cells whose point lies on the left photo, as :func:`.canvases.outcome` reads them."""
    _, ys, _ = model.grid_geometry(layout.size, layout.resized)
    on_left = layout.cell_x() < layout.left[0]
    return np.broadcast_to(on_left, (len(ys), len(on_left))).copy()


def _decision(layout: Layout) -> Callable:
    """The binary's rule on a batch of score grids: does the salient point lie on the left photo?"""
    def left_wins(out: torch.Tensor) -> torch.Tensor:
        grids = out[:, 0].detach().cpu().numpy()
        return torch.tensor([outcome(g, layout).left_wins_max for g in grids])

    return left_wins


def _target(layout: Layout) -> Callable:
    left = _left_cells(layout)
    return rb.region_max_margin(left, ~left)


def _photo_mask(layout: Layout, left_wins: np.ndarray) -> np.ndarray:
    """(B, 1, H, W): 1 on the pixels of the photo holding the point; 0 on the other photo and the black fill."""
    width, height = layout.size
    mask = np.zeros((len(left_wins), 1, height, width), np.float32)
    for k, left in enumerate(left_wins):
        if left:
            mask[k, :, : layout.left[1], : layout.left[0]] = 1
        else:
            mask[k, :, : layout.right[1], layout.left[0]:] = 1
    return mask


def _chunks(pairs: Sequence[tuple[Image.Image, Image.Image]], batch: int):
    """(layout, pair indices, canvases (B, 3, H, W)) in batches of one layout."""
    groups: dict[Layout, list[int]] = {}
    for k, (left, right) in enumerate(pairs):
        groups.setdefault(Layout(left.size, right.size), []).append(k)
    for layout, ks in groups.items():
        for start in range(0, len(ks), batch):
            chunk = ks[start:start + batch]
            yield layout, chunk, np.concatenate([to_tensor(join(*pairs[k])).numpy() for k in chunk])


def attack_pairs(network, pairs: Sequence[tuple[Image.Image, Image.Image]], *, budgets: Sequence[float],
                 method: str = "fgsm", steps: int = 10, seed: int = 0, batch: int = 8, images: bool = False,
                 progress: Callable[[float], None] | None = None) -> list[PairAttack]:
    """The smallest L-inf budget of ``budgets`` (0-255 levels) at which changing the winning photo of each
    ``(left, right)`` pair moves the salient point to the other photo.

    ``method`` is "fgsm" or "pgd" (``steps`` steps); one budget is a fixed-budget attack (the
    explorer's). ``images=True`` keeps each canvas and its attacked version (4.8 MB a FairFace pair).
    """
    forward = CanvasSaliency(network).eval()
    found: list = [None] * len(pairs)
    for layout, chunk, x in _chunks(pairs, batch):
        decide = _decision(layout)
        with torch.no_grad():
            before = decide(forward(torch.from_numpy(x))).numpy()
        result = rb.minimal_budget(forward, x, target=_target(layout), decision=decide, budgets=budgets,
                                   method=method, mask=_photo_mask(layout, before), bounds=BOUNDS, steps=steps,
                                   seed=seed, batch_size=batch)
        eight_bit = _eight_bit(forward, decide, result)
        for j, k in enumerate(chunk):
            found[k] = PairAttack(layout, bool(result.decision_before[j]), bool(result.decision_after[j]),
                                  float(result.budget[j]), float(result.margin_before[j]), eight_bit[j],
                                  x[j] if images else None, result.adversarial[j] if images else None)
        if progress:
            progress(sum(f is not None for f in found) / len(pairs))
    return found


def _eight_bit(forward, decide, result: rb.MinimalBudget) -> list[bool | None]:
    """Per example: None without a move; else whether the move survives rounding to whole pixel levels."""
    rounded = np.rint(result.adversarial)
    redo = np.flatnonzero(result.success & (np.abs(rounded - result.adversarial).reshape(len(rounded), -1).max(1) > 0))
    kept = result.success.copy()
    if redo.size:
        with torch.no_grad():
            again = decide(forward(torch.from_numpy(rounded[redo].astype(np.float32)))).numpy()
        kept[redo] = again != result.decision_before[redo]
    return [bool(k) if s else None for k, s in zip(kept, result.success)]


def corruption_flips(network, pairs: Sequence[tuple[Image.Image, Image.Image]],
                     corruptions: Mapping[str, Sequence[float]], *, seed: int = 0, batch: int = 8) -> pd.DataFrame:
    """Whole canvases corrupted: one row per pair, corruption and level, ``flipped`` = the crop changed photo."""
    forward = CanvasSaliency(network).eval()
    rows = []
    for layout, chunk, x in _chunks(pairs, batch):
        for name, levels in corruptions.items():
            if not len(levels):
                continue
            curve = rb.corruption_curve(forward, x, target=_target(layout), decision=_decision(layout),
                                        corruption=name, levels=levels, bounds=BOUNDS, seed=seed, batch_size=batch)
            rows += [{"pair": k, "corruption": name, "level": float(level), "flipped": bool(curve.flipped[j, m])}
                     for j, k in enumerate(chunk) for m, level in enumerate(curve.levels)]
    return pd.DataFrame(rows, columns=["pair", "corruption", "level", "flipped"])


# -- which canvases ------------------------------------------------------------------------------------


def choose(trials: pd.DataFrame, setting: str, per_group: int) -> pd.DataFrame:
    """Cross-race canvases of ``setting`` (published order): for each of the paper's groups, the first
    ``per_group`` trials won by a photo of that group, each winning photo once."""
    part = trials[(trials["setting"] == setting) & (trials["order"] == "published")
                  & (trials["first"].str[0] != trials["second"].str[0])]
    part = part.assign(winner=np.where(part["first_wins_max"], part["first"], part["second"]),
                       winner_image=np.where(part["first_wins_max"], part["first_image"], part["second_image"]))
    chosen = part.drop_duplicates("winner_image").groupby("winner", sort=False).head(per_group)
    return chosen.sort_values(["winner", "trial"]).reset_index(drop=True)


def attacked_frame(chosen: pd.DataFrame, attacks: Sequence[PairAttack], *, files: pd.Series) -> pd.DataFrame:
    """One row per canvas: whose photo was attacked (perceived group), the budget that moved the crop, success.

    ``files`` maps the photos' row ids to their file names (the photo table's ``file`` column).
    """
    left = np.array([a.attacked == "left" for a in attacks], bool)
    code = np.where(left, chosen["first"], chosen["second"])
    image = np.where(left, chosen["first_image"], chosen["second_image"])
    return pd.DataFrame({
        "first_image": chosen["first_image"].to_numpy(), "second_image": chosen["second_image"].to_numpy(),
        "attacked_side": np.where(left, "left", "right"), "attacked_file": files.loc[image].to_numpy(),
        "attacked": code, "opponent": np.where(left, chosen["second"], chosen["first"]),
        "race": [protocol.PAPER_GROUPS[c][0] for c in code], "gender": [protocol.PAPER_GROUPS[c][1] for c in code],
        "success": [a.success for a in attacks], "budget": [a.budget for a in attacks],
        "margin_before": [abs(a.margin_before) for a in attacks], "eight_bit": [a.eight_bit for a in attacks]})


def corruptions(config) -> dict[str, tuple]:
    """The configured corruption levels, mildest first."""
    return {"jpeg": config.corruption_jpeg, "gaussian_noise": config.corruption_noise,
            "brightness": config.corruption_brightness}


# -- summaries ---------------------------------------------------------------------------------------


def within_budgets(frame: pd.DataFrame, budgets: Sequence[float], *, n_boot: int, seed: int) -> list[dict]:
    """Per budget: the share of Black and of white faces cropped out within it, and their difference."""
    rows = []
    for b in budgets:
        moved = frame["budget"].to_numpy(float) <= b
        row = {"budget": rb.whole(b)}
        for race in CONTRAST:
            part = moved[frame["race"].to_numpy() == race]
            row[race] = proportion(int(part.sum()), len(part))
        row["difference"] = rb.flips_between(moved, frame["race"], CONTRAST, n_boot=n_boot, seed=seed,
                                              noun="canvases")["difference"]
        rows.append(row)
    return rows


def corruption_rows(flips: pd.DataFrame, frame: pd.DataFrame) -> list[dict]:
    """Per corruption and level: how often the crop changed face, overall and by who held it."""
    race = frame["race"].to_numpy()
    rows = []
    for (name, level), g in flips.groupby(["corruption", "level"], sort=False):
        flipped = g["flipped"].to_numpy(bool)
        held = race[g["pair"].to_numpy()]
        row = {"corruption": CORRUPTION_NAMES.get(name, name), "level": level,
               "crop changes face": proportion(int(flipped.sum()), len(flipped))}
        for r in CONTRAST:
            row[f"when a {r} face held it"] = proportion(int(flipped[held == r].sum()), int((held == r).sum()))
        rows.append(row)
    return rows


# -- figures -------------------------------------------------------------------------------------------


def figure_budgets(rows: list[dict]):
    """Share of faces cropped out within each budget, by the perceived race of the face (Wilson 95%)."""
    fig = figures.new_figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    budgets = np.array([r["budget"] for r in rows])
    for k, (race, marker, style) in enumerate(zip(CONTRAST, ("o", "s"), ("-", "--"))):
        est = [r[race] for r in rows]
        figures.estimate_errorbars(ax, budgets * (1.04 if k else 0.96), est, fmt=marker + style, capsize=3,
                                   color=figures.OKABE_ITO[k], label=f"{race} face held the crop (n = {est[0].n})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("largest change per pixel (L∞, 0-255 levels), one photo only")
    ax.set_ylabel("share of crops moved to the other face")
    ax.set_title("How little it takes to crop a face out (perceived race; 95% intervals)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig, ("Share of cross-race canvases whose crop moved off the face when that photo alone changed by at "
                 "most each budget")


def figure_examples(attacks: Sequence[PairAttack], titles: Sequence[str]):
    """The canvases, their attacked versions and the change (amplified, cividis)."""
    fig = rb.perturbation_figure(np.stack([a.canvas for a in attacks]), np.stack([a.adversarial for a in attacks]),
                                 titles=list(titles), bounds=BOUNDS, size=2.6)
    return fig, ("Typical attacks, one per perceived race of the face cropped out: the canvas, the canvas with that "
                 "photo changed, and the change (amplified)")


def draw(network, pairs, frame: pd.DataFrame, config, *, seed: int) -> dict:
    """The stage's figures: typical attacks (re-run at their budget, keeping the images) and the budget curves."""
    budgets = sorted(float(b) for b in config.attack_budgets)
    picks = rb.typical_examples(frame, "race", CONTRAST)
    layout = Layout(*(p.size for p in pairs[picks[0]])) if picks else None
    picks = [k for k in picks if Layout(*(p.size for p in pairs[k])) == layout]  # one figure, one canvas size
    shown = [attack_pairs(network, [pairs[k]], budgets=(frame.at[k, "budget"] if frame.at[k, "success"] else
                                                        budgets[-1],), method=config.attack_method,
                          steps=config.attack_steps, seed=seed, images=True)[0] for k in picks]
    titles = [f"{frame.at[k, 'race']} {frame.at[k, 'gender']}, "
              + (f"out at L∞ {frame.at[k, 'budget']:g}" if a.success else f"kept at L∞ {budgets[-1]:g}")
              for k, a in zip(picks, shown)]
    rows = within_budgets(frame, budgets, n_boot=config.n_bootstrap, seed=seed)
    drawn = {"robustness_budgets.png": figure_budgets(rows)}
    if shown:
        drawn["robustness.png"] = figure_examples(shown, titles)
    return drawn


# -- the stage's record ----------------------------------------------------------------------------------


def summarise(frame: pd.DataFrame, flips: pd.DataFrame, config, *, seed: int) -> tuple[dict, dict]:
    """The metrics record and the story's tables of the robustness stage."""
    boot = {"n_boot": config.n_bootstrap, "seed": seed}
    budgets = [rb.whole(b) for b in sorted(float(b) for b in config.attack_budgets)]
    everyone = by_group(frame.assign(all="all"), ["all"], **boot).get("all") or {
        "success_rate": rb.undefined("canvases"), "median_budget": rb.undefined("canvases")}
    races = by_group(frame, ["race"], expect=CONTRAST, **boot)
    cells = by_group(frame, ["race", "gender"], **boot)
    rows = within_budgets(frame, budgets, **boot)
    spent = frame["budget"].to_numpy(float)
    half = [b for b in budgets if len(spent) and np.mean(spent <= b) >= 0.5]
    reference = half[0] if half else budgets[-1]  # the smallest budget that moved half of all crops
    contrast = next(r for r in rows if r["budget"] == reference)
    moved = frame["success"].to_numpy(bool)
    metrics = {
        "setting": config.settings[0], "method": config.attack_method.upper(),
        "steps": 1 if config.attack_method == "fgsm" else config.attack_steps, "units": UNITS,
        "budgets": budgets, "largest_budget": budgets[-1], "n_canvases": len(frame),
        "success_rate": everyone["success_rate"], "median_budget": everyone["median_budget"],
        "by_race": races, "by_race_gender": cells,
        "contrast": {"budget": reference, **{r: contrast[r] for r in CONTRAST}, "difference": contrast["difference"]},
        "eight_bit": proportion(sum(bool(e) for e in frame["eight_bit"][moved]), int(moved.sum())),
        "clean_margin": fairness.mean_estimate(frame["margin_before"], **boot),
        "corruptions": {name: {f"{level:g}": proportion(int(g["flipped"].sum()), len(g))
                               for level, g in part.groupby("level", sort=False)}
                        for name, part in flips.groupby("corruption", sort=False)}}
    largest = f"{budgets[-1]:g}"
    tables = {
        "robustness_groups": [{"face cropped out (perceived)": key.replace("_", " "),
                               f"crop moved within {largest} levels": v["success_rate"],
                               "median budget (levels)": v["median_budget"]}
                              for key, v in {**races, **cells}.items()],
        "robustness_budgets": [{"budget (levels)": r["budget"], "Black face held the crop": r["Black"],
                                "white face held the crop": r["White"], "difference (Black − white)": r["difference"]}
                               for r in rows],
        "robustness_corruptions": corruption_rows(flips, frame) or [{"note": "no corruption configured"}]}
    return metrics, tables
