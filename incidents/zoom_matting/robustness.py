"""How little it takes to erase a head: the smallest change of a photo that makes the mask drop the face,
and the darkness or noise at which heads start to vanish.

For photos whose head the mask keeps, on the model's own grid (the photo stretched to 256 x 256, as
MediaPipe feeds it; the face box mapped onto it):

- the decision is the run's rule: the head is kept while the share of the face box whose person
  probability reaches the mask threshold is at least the erasure threshold
  (:func:`autopsy.robustness.coverage_decision`, read on the pre-sigmoid logits);
- the margin that steers the search is the soft coverage -- the mean person probability over the
  box (:func:`autopsy.robustness.coverage_margin` at temperature 1 on the logits) -- minus the
  erasure threshold;
- the search is :func:`autopsy.robustness.minimal_budget` -- FGSM (Goodfellow, Shlens & Szegedy,
  ICLR 2015) or PGD (Madry et al., ICLR 2018) through the Adversarial Robustness Toolbox -- over
  L-inf budgets in 0-255 levels of the model input, anywhere in the photo.

The toolkit's attacks search a batch in shrinking subsets and its targets see only the model's
output, so each photo's face box travels with it as a fourth input channel that the perturbation
mask leaves untouched (:class:`BoxedLogits`). Common corruptions of the model input -- darker
exposure and sensor noise (Hendrycks & Dietterich, ICLR 2019) -- give the level at which heads
start to vanish (:func:`autopsy.robustness.corruption_curve`). Results are by perceived race and
race x gender with intervals; those labels are perceived attributes annotated by others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from autopsy import fairness, figures
from autopsy import robustness as rb
from autopsy.stats import Estimate, proportion
from incidents.zoom_matting import measure
from incidents.zoom_matting.autopsy_steps import to_model_box
from incidents.zoom_matting.groups import CONTRAST

by_group = partial(rb.outcomes_by_group, noun="photos")  # outcomes by perceived group

UNITS = "L-inf, 0-255 levels of the model input (the photo as MediaPipe feeds it, 256 x 256)"
CORRUPTIONS = {"brightness": "brightness gain (< 1: darker)", "gaussian_noise": "Gaussian noise (sd, share of range)"}


class BoxedLogits(nn.Module):
    """``[N, 4, H, W]`` -> ``[N, 2, H, W]``: the person logits of the first three channels (the model
    input in [0, 1]) and the fourth channel (the face box, 1 inside) passed through beside them."""

    def __init__(self, segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([measure.logits(self.segmenter, x[:, :3]), x[:, 3:]], dim=1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p)) if p < 1 else math.inf


def head_rule(*, mask_threshold: float, erased_below: float) -> tuple[Callable, Callable]:
    """(margin, decision) on :class:`BoxedLogits` outputs: soft coverage minus ``erased_below``, and kept or not."""
    cut = _logit(mask_threshold)

    def margin(out: torch.Tensor) -> torch.Tensor:
        return rb.coverage_margin(out[:, 1] > 0.5, pixel_threshold=cut, coverage_threshold=erased_below,
                                  temperature=1.0)(out[:, :1])

    def decision(out: torch.Tensor) -> torch.Tensor:
        return rb.coverage_decision(out[:, 1] > 0.5, pixel_threshold=cut, coverage_threshold=erased_below)(out[:, :1])

    return margin, decision


def inputs(segmenter, images, boxes) -> np.ndarray:
    """``[N, 4, H, W]``: each photo as the model sees it, and its face box (image pixels) on the model's grid."""
    height, width = segmenter.input_size
    out = []
    for image, box in zip(images, boxes):
        region = np.zeros((1, 1, height, width), np.float32)
        rows, cols = measure.box_slices(to_model_box(box, image.size, segmenter.input_size), (height, width))
        region[..., rows, cols] = 1
        out.append(np.concatenate([segmenter.preprocess(image).numpy(), region], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 4, height, width), np.float32)


def grid_coverage(segmenter, x: np.ndarray, *, mask_threshold: float) -> np.ndarray:
    """Hard coverage of each face box on the model grid (what :func:`head_rule` decides on)."""
    with torch.no_grad():
        out = BoxedLogits(segmenter)(torch.from_numpy(x))
    kept = (out[:, 0] >= _logit(mask_threshold)).float()
    box = out[:, 1] > 0.5
    return ((kept * box).flatten(1).sum(1) / box.flatten(1).sum(1).clamp_min(1)).numpy()


@dataclass(frozen=True)
class Erasure:
    """One photo attacked: the smallest budget that erased its head, the coverage before and after."""

    budget: float  # 0-255 levels; +inf if no budget of the grid erased it
    coverage_before: float  # hard coverage of the face box on the model grid
    coverage_after: float  # at that budget (the clean coverage where no budget erased it)
    original: np.ndarray  # [3, H, W] model input
    adversarial: np.ndarray

    @property
    def success(self) -> bool:
        return bool(np.isfinite(self.budget))


def erase_heads(segmenter, x: np.ndarray, *, budgets: Sequence[float], mask_threshold: float, erased_below: float,
                method: str = "fgsm", steps: int = 10, seed: int = 0, batch: int = 16,
                progress: Callable[[float], None] | None = None) -> list[Erasure | None]:
    """The smallest L-inf budget of ``budgets`` (0-255 levels) that erases each head of :func:`inputs` ``x``.

    None for a head already erased on the model grid: there is nothing to erase. A single budget
    is a fixed-budget attack (what the explorer runs).
    """
    if not len(x):
        return []
    net = BoxedLogits(segmenter).eval()
    margin, decision = head_rule(mask_threshold=mask_threshold, erased_below=erased_below)
    before = grid_coverage(segmenter, x, mask_threshold=mask_threshold)
    kept = np.flatnonzero(before >= erased_below)
    found: list = [None] * len(x)
    for start in range(0, len(kept), batch):
        rows = kept[start:start + batch]
        mask = np.ones_like(x[rows])
        mask[:, 3] = 0  # the face box is not the photo: never changed
        result = rb.minimal_budget(net, x[rows], target=margin, decision=decision, mask=mask, method=method,
                                   budgets=np.asarray(budgets, float) / 255, bounds=(0.0, 1.0), steps=steps,
                                   seed=seed, batch_size=batch)
        after = grid_coverage(segmenter, result.adversarial, mask_threshold=mask_threshold)
        for j, i in enumerate(rows):
            found[i] = Erasure(float(np.round(result.budget[j] * 255, 6)), float(before[i]), float(after[j]), x[i, :3],
                               result.adversarial[j, :3])
        if progress:
            progress(min(1.0, (start + batch) / len(kept)))
    return found


def corruption_curves(segmenter, x: np.ndarray, levels: dict, *, mask_threshold: float, erased_below: float,
                      seed: int = 0, batch: int = 16) -> dict[str, np.ndarray]:
    """Corruption -> ``[N, L]`` whether each head is erased at each level (the model input corrupted)."""
    net = BoxedLogits(segmenter).eval()
    out = {}
    for name, values in levels.items():
        if not len(values):
            continue
        parts = []
        for start in range(0, len(x), batch):
            chunk = x[start:start + batch]
            region = chunk[:, 3] > 0.5

            def forward(images, region=region):  # the chunk's own boxes; a curve runs the whole chunk at once
                return net(torch.cat([images, torch.from_numpy(region[:, None].astype(np.float32))], dim=1))

            margin, decision = head_rule(mask_threshold=mask_threshold, erased_below=erased_below)
            curve = rb.corruption_curve(forward, chunk[:, :3], target=margin, decision=decision, corruption=name,
                                        levels=values, bounds=(0.0, 1.0), seed=seed, batch_size=len(chunk))
            parts.append(~curve.decision)
        out[name] = np.concatenate(parts) if parts else np.zeros((0, len(values)), bool)
    return out


# -- which photos, and the record ---------------------------------------------------------------------


def choose(coverage: pd.DataFrame, per_group: int, erased_below: float, races: Sequence[str] = ()) -> pd.DataFrame:
    """The first ``per_group`` photos with a detected, kept head in each perceived race x gender cell
    (of ``races`` only, if given)."""
    kept = coverage[coverage["face_detected"] & (coverage["coverage"] >= erased_below)]
    if len(races):
        kept = kept[kept["race"].astype(str).isin(races)]
    return kept.groupby("race_gender", sort=False).head(per_group)


def _level(step: float, levels: Sequence[float]) -> float:
    return float(levels[int(step) - 1]) if np.isfinite(step) else float("nan")


def first_level(erased: np.ndarray, levels: Sequence[float], race: pd.Series, *, n_boot: int, seed: int) -> dict:
    """Per contrast group: the median level at which heads start to vanish (bootstrap over photos; heads
    kept at every level count as beyond the last), as a level of the corruption rather than a step."""
    steps = np.where(erased.any(1), erased.argmax(1) + 1.0, np.inf)
    race = race.astype(str).reset_index(drop=True)
    out = {}
    for g in CONTRAST:
        part = steps[(race == g).to_numpy()]
        if not len(part):
            out[g] = rb.undefined(f"{g} photos")
            continue
        est = rb.group_summary(pd.DataFrame({"success": np.isfinite(part), "budget": part}), np.full(len(part), g),
                               n_boot=n_boot, seed=seed).query("metric == 'median_budget'").iloc[0]
        mild, severe = _level(est.low, levels), _level(est.high, levels)  # NaN: beyond the last level
        low, high = (mild, severe) if levels[-1] >= levels[0] else (severe, mild)
        out[g] = Estimate(_level(est.value, levels), low, high, int(est.n),
                          "median first level that erased the head; percentile bootstrap over photos "
                          f"({n_boot} resamples; heads kept at every level count as beyond the last)",
                          warning=est.warning)
    return out


def corruptions(config) -> dict[str, tuple]:
    """The configured corruption levels, mildest first."""
    return {"brightness": config.corruption_brightness, "gaussian_noise": config.corruption_noise}


def summarise(frame: pd.DataFrame, erased: dict, config, *, seed: int) -> tuple[dict, dict]:
    """The metrics record and the story's tables of the robustness stage."""
    boot = {"n_boot": config.n_bootstrap, "seed": seed}
    budgets = [rb.whole(b) for b in sorted(float(b) for b in config.attack_budgets)]
    everyone = by_group(frame.assign(all="all"), "all", **boot).get("all") or {
        "success_rate": rb.undefined("photos"), "median_budget": rb.undefined("photos")}
    races = by_group(frame, "race", expect=CONTRAST, **boot)
    cells = by_group(frame, "race_gender", **boot)
    spent = frame["budget"].to_numpy(float)
    half = [b for b in budgets if len(spent) and np.mean(spent <= b) >= 0.5]
    reference = half[0] if half else budgets[-1]  # the smallest budget that erased half of all heads
    steps = {name: list(values) for name, values in corruptions(config).items() if len(values)}
    vanish = {name: {"levels": steps[name], "first_level": first_level(flags, steps[name], frame["race"], **boot),
                     "erased": {f"{v:g}": proportion(int(flags[:, j].sum()), len(flags))
                                for j, v in enumerate(steps[name])}}
              for name, flags in erased.items()}
    metrics = {
        "method": config.attack_method.upper(), "steps": 1 if config.attack_method == "fgsm" else config.attack_steps,
        "units": UNITS, "budgets": budgets, "largest_budget": budgets[-1], "n_photos": len(frame),
        "success_rate": everyone["success_rate"], "median_budget": everyone["median_budget"],
        "by_race": races, "by_race_gender": cells,
        "contrast": {"budget": reference, **rb.flips_between(spent <= reference, frame["race"], CONTRAST, noun="photos", **boot)},
        "coverage_after": fairness.mean_estimate(frame.loc[frame["success"], "coverage_after"], **boot),
        "corruptions": vanish}
    largest = f"{budgets[-1]:g}"
    tables = {
        "robustness_groups": [{"perceived group": key.replace("_", " "), f"head erased within {largest} levels":
                               v["success_rate"], "median budget (levels)": v["median_budget"]}
                              for key, v in {**races, **cells}.items()],
        "robustness_budgets": [_budget_row(b, spent <= b, frame, boot) for b in budgets],
        "robustness_corruptions": _corruption_rows(erased, steps, frame, boot) or [
            {"note": "no corruption configured"}]}
    return metrics, tables


def _budget_row(budget: float, flags: np.ndarray, frame: pd.DataFrame, boot: dict) -> dict:
    shares = rb.flips_between(flags, frame["race"], CONTRAST, noun="photos", **boot)
    return {"budget (levels)": budget, **{f"{g} heads erased": shares[g] for g in CONTRAST},
            f"difference ({' − '.join(CONTRAST)})": shares["difference"]}


def _corruption_rows(erased: dict, steps: dict, frame: pd.DataFrame, boot: dict) -> list[dict]:
    rows = []
    for name, flags in erased.items():
        for j, level in enumerate(steps[name]):
            shares = rb.flips_between(flags[:, j], frame["race"], CONTRAST, noun="photos", **boot)
            rows.append({"corruption": CORRUPTIONS[name], "level": level,
                         "heads erased": proportion(int(flags[:, j].sum()), len(flags)),
                         **{f"{g} heads erased": shares[g] for g in CONTRAST}})
    return rows


# -- figures -------------------------------------------------------------------------------------------


def figure_curves(frame: pd.DataFrame, erased: dict, config):
    """Heads erased within each attack budget, and at each corruption level, by perceived race (Wilson 95%)."""
    panels = [("attack", sorted(float(b) for b in config.attack_budgets), None)]
    panels += [(name, list(corruptions(config)[name]), flags) for name, flags in erased.items()]
    fig = figures.new_figure(figsize=(4.6 * len(panels), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    race = frame["race"].astype(str).to_numpy()
    for ax, (name, levels, flags) in zip(axes, panels):
        for k, (group, marker, style) in enumerate(zip(CONTRAST, ("o", "s"), ("-", "--"))):
            rows = race == group
            if name == "attack":
                hits = [frame["budget"].to_numpy(float)[rows] <= b for b in levels]
            else:
                hits = [flags[rows, j] for j in range(len(levels))]
            est = [proportion(int(h.sum()), len(h)) for h in hits]
            figures.estimate_errorbars(ax, np.arange(len(levels)) + (k - 0.5) * 0.1, est, fmt=marker + style,
                                       capsize=3, color=figures.OKABE_ITO[k], label=f"{group} (n = {int(rows.sum())})")
        ax.set_xticks(range(len(levels)), [f"{v:g}" for v in levels])
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("largest change per pixel (L∞, 0-255 levels)" if name == "attack" else CORRUPTIONS[name])
        ax.set_title("smallest attack" if name == "attack" else name.replace("_", " "), fontsize=10)
    axes[0].set_ylabel("share of kept heads erased")
    axes[0].legend(fontsize=8, loc="upper left", title="perceived race", title_fontsize=8)
    return fig, ("Share of kept heads erased by the smallest attack within each budget, and by darker exposure and "
                 "noise at each level, by perceived race (95% intervals)")


def figure_examples(erasures: Sequence[Erasure], titles: Sequence[str]):
    """The model inputs, their attacked versions and the change (amplified, cividis)."""
    if not erasures:  # a run without a kept head of the contrast groups: say so where the examples would be
        fig = figures.new_figure(figsize=(6.0, 1.2))
        fig.text(0.5, 0.5, "No kept head of the attacked groups in this run: nothing to erase.", ha="center")
        return fig, "No kept head of the attacked groups in this run"
    fig = rb.perturbation_figure(np.stack([e.original for e in erasures]), np.stack([e.adversarial for e in erasures]),
                                 titles=list(titles), size=2.4)
    return fig, ("Typical attacks, one per perceived race: the photo as the model sees it, the photo changed just "
                 "enough to erase the head, and the change (amplified)")
