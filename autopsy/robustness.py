"""How little it takes to change a decision: gradient attacks, few-pixel attacks, corruption curves.

A *decision target* is any callable from the model's output to one margin per example whose sign is
the decision (positive = True): the score on the right half of a saliency grid minus the score on the
left (:func:`region_max_margin`), the soft share of a face box a person mask keeps minus 0.5
(:func:`coverage_margin`), a logistic logit. Every probe here looks for the smallest change of the
input that flips that decision, or measures how the margin moves under a common corruption.

- :func:`fgsm` -- the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015,
  "Explaining and Harnessing Adversarial Examples"), under L-inf or L2.
- :func:`pgd` -- projected gradient descent (Madry, Makelov, Schmidt, Tsipras & Vladu, ICLR 2018,
  "Towards Deep Learning Models Resistant to Adversarial Attacks"), under L-inf or L2.
- :func:`minimal_budget` -- the smallest budget, per example, at which FGSM or PGD flips the
  decision: bisection over a grid of budgets, then optional continuous bisection.
- :func:`pixel_attack` -- the one-pixel / few-pixel attack of Su, Vargas & Sakurai (IEEE Trans.
  Evolutionary Computation 23(5), 2019, "One Pixel Attack for Fooling Deep Neural Networks"):
  differential evolution (Storn & Price 1997) over pixel positions and values, on a black box.
- :func:`corruption_curve` -- Gaussian noise, JPEG quality and brightness at graded levels, in the
  spirit of Hendrycks & Dietterich (ICLR 2019, "Benchmarking Neural Network Robustness to Common
  Corruptions and Perturbations").
- :func:`group_summary` -- success rate (Wilson interval) and median budget (bootstrap interval) by
  group, in the long format of :mod:`autopsy.fairness`; :func:`perturbation_figure` shows typical
  perturbations (amplified difference on cividis).

The gradient attacks are the Adversarial Robustness Toolbox's (Nicolae et al. 2018, arXiv
1807.01069; ART, an LF AI & Data project). ART rather than torchattacks because ART is actively
maintained (torchattacks' last release is from 2023), takes any input range (the Twitter model
works on 0-255 pixels; torchattacks clamps to [0, 1]), per-example budgets and a perturbation mask
(perturb one photo of a pair only; torchattacks has no masks), and a custom loss, which is how
the lab's margins drive it: the margin ``m`` becomes two logits ``(-m/2, m/2)`` and the loss is the
logit of the current decision, the margin loss of Carlini & Wagner (IEEE S&P 2017), whose gradient
does not vanish however confident the decision is (cross-entropy's does). The few-pixel attack uses
SciPy's differential evolution directly: ART's PixelAttack needs a classifier with class
probabilities and carries its own copy of that optimiser.

Inputs are float arrays or tensors with a batch axis first, in the range ``bounds`` (default
``(0, 1)``; budgets are in the same units). The forward receives float32 tensors. Models are never
switched between train and eval mode here: set the mode you want before calling.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from autopsy import fairness
from autopsy.saliency import _as_batch
from autopsy.stats import Estimate, proportion, wilson_interval

__all__ = [
    "Attack",
    "fgsm",
    "pgd",
    "MinimalBudget",
    "minimal_budget",
    "PixelAttack",
    "pixel_attack",
    "CORRUPTIONS",
    "corrupt",
    "CorruptionCurve",
    "corruption_curve",
    "group_summary",
    "region_max_margin",
    "coverage_margin",
    "coverage_decision",
    "perturbation_figure",
]

NORMS = ("inf", "2")
#: Default levels per corruption, mildest first: noise standard deviation as a share of the input
#: range (ImageNet-C's 0.08-0.38 with milder steps before), JPEG quality, brightness gain (darker).
CORRUPTIONS = {
    "gaussian_noise": (0.02, 0.04, 0.08, 0.12, 0.18, 0.26, 0.38),
    "jpeg": (90, 70, 50, 30, 20, 10, 5),
    "brightness": (0.9, 0.8, 0.6, 0.4, 0.2),
}
PGD_RELATIVE_STEP = 2.5  # step = 2.5 * eps / steps, as in Madry et al.'s robustness library
MIN_GROUP_SIZE = 30


# --------------------------------------------------------------------------- decision targets


def _grid(out: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) or (B, h, w) -> (B, h, w)."""
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 3:
        raise ValueError(f"expected a map of shape (B, 1, h, w) or (B, h, w); got {tuple(out.shape)}")
    return out


def _region(region, like: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(np.asarray(region, dtype=bool), device=like.device)
    if r.ndim == 4 and r.shape[1] == 1:
        r = r[:, 0]
    try:
        return torch.broadcast_to(r, like.shape)
    except RuntimeError:
        raise ValueError(f"region of shape {tuple(r.shape)} does not match the output grid {tuple(like.shape[1:])}; "
                         "pass (h, w) for every example or (B, h, w) per example") from None


def region_max_margin(region_a, region_b, *, temperature: float | None = None) -> Callable:
    """Target: the map's maximum over ``region_a`` minus its maximum over ``region_b``.

    Positive exactly when the map's argmax lies in region A (ties aside): for Twitter, whether the
    salient point falls on one photo of a pair or the other. Regions are boolean (h, w) grids for
    every example, or (B, h, w) per example, at the output's resolution. ``temperature`` replaces
    each maximum by ``temperature * logsumexp(map / temperature)``, which spreads the gradient over
    near-maximal cells.
    """
    def margin(out: torch.Tensor) -> torch.Tensor:
        grid = _grid(out)
        a, b = _region(region_a, grid), _region(region_b, grid)
        if not (a.flatten(1).any(1).all() and b.flatten(1).any(1).all()):
            raise ValueError("region_max_margin: a region is empty for some example")
        lowest = torch.finfo(grid.dtype).min
        in_a = torch.where(a, grid, lowest).flatten(1)
        in_b = torch.where(b, grid, lowest).flatten(1)
        if temperature is None:
            return in_a.amax(1) - in_b.amax(1)
        return temperature * (torch.logsumexp(in_a / temperature, 1) - torch.logsumexp(in_b / temperature, 1))

    return margin


def coverage_margin(region, *, pixel_threshold: float = 0.5, coverage_threshold: float = 0.5,
                    temperature: float = 0.05) -> Callable:
    """Target: soft coverage of ``region`` by a probability map, minus ``coverage_threshold``.

    Coverage is the share of the region's cells where the map is at least ``pixel_threshold``
    (Zoom: the share of the face box the person mask keeps); the soft version replaces the step by
    ``sigmoid((p - pixel_threshold) / temperature)`` so that gradients flow. Pair it with
    :func:`coverage_decision`, the hard count, as the decision whose flip counts.
    """
    def margin(out: torch.Tensor) -> torch.Tensor:
        grid = _grid(out)
        r = _region(region, grid).to(grid.dtype)
        soft = torch.sigmoid((grid - pixel_threshold) / temperature)
        return (soft * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1) - coverage_threshold

    return margin


def coverage_decision(region, *, pixel_threshold: float = 0.5, coverage_threshold: float = 0.5) -> Callable:
    """Decision: the share of ``region`` where the map is >= ``pixel_threshold`` is >= ``coverage_threshold``."""
    def decision(out: torch.Tensor) -> torch.Tensor:
        grid = _grid(out)
        r = _region(region, grid).to(grid.dtype)
        kept = (grid >= pixel_threshold).to(grid.dtype)
        return (kept * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1) >= coverage_threshold

    return decision


# --------------------------------------------------------------------------- the decision probe


def _as_array(inputs, name: str = "inputs") -> np.ndarray:
    """``inputs`` checked as :func:`autopsy.saliency._as_batch` checks them, as contiguous float32 numpy (ART's input)."""
    return np.ascontiguousarray(_as_batch(inputs, name).detach().cpu().numpy(), dtype=np.float32)


def _check_bounds(x: np.ndarray, bounds, *, required: bool = False) -> tuple[float, float] | None:
    if not np.isfinite(x).all():
        raise ValueError("inputs contain NaN or infinite values; attack finite inputs only")
    if bounds is None:
        if required:
            raise ValueError("this probe needs the inputs' range: pass bounds=(low, high), e.g. (0, 255)")
        return None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}")
    if x.min() < lo - 1e-5 * (hi - lo) or x.max() > hi + 1e-5 * (hi - lo):
        raise ValueError(f"inputs range over [{x.min():.4g}, {x.max():.4g}], outside bounds=({lo:g}, {hi:g}); "
                         "pass the range your inputs live in, e.g. bounds=(0, 255) for 8-bit pixels, or "
                         "bounds=None for unbounded features")
    return lo, hi


def _norm_name(norm) -> str:
    name = str(norm).lower().replace("l", "")
    if name in ("inf", "infinity") or norm == np.inf:
        return "inf"
    if name in ("2", "2.0"):
        return "2"
    raise ValueError(f"norm must be 'inf' or 2; got {norm!r}")


def _norms(delta: np.ndarray, norm: str) -> np.ndarray:
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    return np.abs(flat).max(1) if norm == "inf" else np.sqrt((flat**2).sum(1))


def _mask(mask, x: np.ndarray) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    try:
        return np.ascontiguousarray(np.broadcast_to(m, x.shape), dtype=np.float32)
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} does not broadcast to the inputs {x.shape}; pass (H, W) for the "
                         "same pixels in every example or (B, 1, H, W) per example (nonzero = may change)") from None


class _Probe:
    """The lab's decision on a forward: the margin (differentiable), the decision, and call counts."""

    def __init__(self, forward: Callable, target: Callable, decision: Callable | None):
        if not callable(forward):
            raise TypeError(f"forward must be a model or callable; got {type(forward).__name__}")
        if not callable(target):
            raise TypeError("target must be a callable mapping the model output to one margin per example "
                            "(its sign is the decision), e.g. target=lambda out: out[:, 1] - out[:, 0]")
        self.forward, self.target, self.decision = forward, target, decision
        self.forwards = 0  # images passed forward
        self.backwards = 0  # images back-propagated
        params = list(forward.parameters()) if isinstance(forward, torch.nn.Module) else []
        self.device = params[0].device if params else torch.device("cpu")

    def _output(self, x: torch.Tensor):
        out = self.forward(x)
        if not isinstance(out, torch.Tensor):  # black boxes may answer in numpy
            out = torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)
        return out

    def _per_item(self, value, n: int, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value))
        if value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if tuple(value.shape) != (n,):
            raise ValueError(f"the {what} must give one value per example, shape ({n},); got {tuple(value.shape)}. "
                             "Reduce the model output per example, e.g. lambda out: out.flatten(1).amax(1)")
        return value

    def margin(self, x: torch.Tensor, *, count: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._output(x)
        m = self._per_item(self.target(out), len(x), "target")
        if count:
            self.forwards += len(x)
            if m.requires_grad:
                m.register_hook(self._count_backward(len(x)))
        return m, out

    def _count_backward(self, n: int):
        def hook(grad):
            self.backwards += n

        return hook

    def evaluate(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Margins and decisions of a batch of inputs, without gradients."""
        margins, decisions = [], []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                chunk = torch.from_numpy(x[start : start + batch_size]).to(self.device)
                m, out = self.margin(chunk)
                d = m > 0 if self.decision is None else self._per_item(self.decision(out), len(chunk), "decision")
                margins.append(m.float().cpu().numpy())
                decisions.append(np.asarray(d.cpu() if isinstance(d, torch.Tensor) else d).astype(bool))
        return np.concatenate(margins), np.concatenate(decisions)

    def check_differentiable(self, x: np.ndarray, what: str) -> None:
        probe = torch.from_numpy(x[:1]).to(self.device).requires_grad_(True)
        try:
            with torch.enable_grad():
                m, _ = self.margin(probe, count=False)
        except RuntimeError as err:
            raise TypeError(f"{what} needs gradients, but the forward failed under autograd ({err}). Use "
                            "pixel_attack or corruption_curve, which only call the forward.") from err
        if m.grad_fn is None:
            raise TypeError(f"{what} needs gradients, but the margin is not connected to the input by autograd "
                            "(the forward or target returns numpy, detaches or thresholds). Use pixel_attack or "
                            "corruption_curve, which only call the forward.")


class _MarginNet(torch.nn.Module):
    """Two logits ``(-m/2, m/2)`` from the margin, so ART sees the decision as a two-class classifier.

    The caller's model is held outside the module tree so that ART's ``train``/``eval`` calls and
    device moves leave it as the caller set it.
    """

    def __init__(self, probe: _Probe):
        super().__init__()
        self._probe = (probe,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, _ = self._probe[0].margin(x)
        return torch.stack([-m, m], 1).float() / 2


class _MarginLoss(torch.nn.Module):
    """Carlini & Wagner's margin loss for two logits: minus the logit of the decision to keep."""

    def forward(self, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return -(logits * onehot.to(logits.dtype)).sum()


def _art_classifier(probe: _Probe, x: np.ndarray, bounds: tuple[float, float] | None):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=_MarginNet(probe), loss=_MarginLoss(), input_shape=x.shape[1:], nb_classes=2,
        clip_values=None if bounds is None else (np.float32(bounds[0]), np.float32(bounds[1])),
        device_type="gpu" if probe.device.type == "cuda" else "cpu",
    )


def _per_example(eps, n: int, ndim: int, name: str = "eps") -> np.ndarray:
    e = np.asarray(eps, dtype=np.float32)
    if e.ndim == 0:
        e = np.full(n, e, dtype=np.float32)
    if e.shape != (n,):
        raise ValueError(f"{name} must be a number or one value per example, shape ({n},); got {e.shape}")
    if not (np.isfinite(e).all() and (e > 0).all()):
        raise ValueError(f"{name} must be positive and finite; got {e.min():g}..{e.max():g}")
    return e.reshape((n,) + (1,) * (ndim - 1))


def _run_gradient_attack(probe, x, keep, eps, *, method, norm, steps, step_size, random_init, mask, bounds,
                         seed, batch_size) -> np.ndarray:
    """One ART attack on ``x`` pushing every margin away from the decision ``keep`` (bool per example)."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch

    classifier = _art_classifier(probe, x, bounds)
    onehot = np.stack([~keep, keep], 1).astype(np.float32)
    order = np.inf if norm == "inf" else 2
    if method == "fgsm":
        attack = FastGradientMethod(classifier, norm=order, eps=eps, eps_step=eps, batch_size=batch_size)
    else:
        step = eps * np.float32(PGD_RELATIVE_STEP / steps) if step_size is None else step_size
        attack = ProjectedGradientDescentPyTorch(
            classifier, norm=order, eps=eps, eps_step=np.asarray(step, np.float32) * np.ones_like(eps),
            max_iter=steps, num_random_init=int(random_init), batch_size=batch_size, verbose=False)
    state = np.random.get_state()  # ART draws random starts from numpy's global generator
    np.random.seed(seed)
    try:
        return attack.generate(x, y=onehot, mask=mask).astype(np.float32)
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------- fixed-budget attacks


def _success_estimate(success: np.ndarray, level: float) -> Estimate:
    n, k = len(success), int(np.sum(success))
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "no examples")
    low, high = wilson_interval(k, n, level=level)
    return Estimate(k / n, low, high, n, f"Wilson {level:.0%}", level=level)


def _median_budget_estimate(budget: np.ndarray, *, n_boot: int, seed: int, level: float) -> Estimate:
    """Median budget with failures as +inf (beyond every budget tried), percentile bootstrap interval.

    Inverted-CDF quantiles keep an infinite bound infinite instead of interpolating towards it.
    """
    budget = np.asarray(budget, dtype=float)
    n = len(budget)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "no examples")
    rng = np.random.default_rng(seed)
    medians = np.median(budget[rng.integers(0, n, (n_boot, n))], axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha], method="inverted_cdf")
    value = float(np.median(budget))
    warning = None
    if not np.isfinite(value):
        warning = "fewer than half the examples flipped within the largest budget tried: the median lies beyond it"
    elif not np.isfinite(high):
        warning = "the interval's upper end lies beyond the largest budget tried"
    return Estimate(value, float(low), float(high), n,
                    f"percentile bootstrap {level:.0%} ({n_boot} resamples; failures as +inf)", level=level,
                    warning=warning)


class _Rates:
    """Success rate and median budget of a result with ``success`` and ``budget`` arrays."""

    def success_rate(self, *, level: float = 0.95) -> Estimate:
        """Share of examples whose decision flipped, with its Wilson interval."""
        return _success_estimate(self.success, level)

    def median_budget(self, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
        """Median budget needed (failures as +inf), with a percentile bootstrap interval."""
        return _median_budget_estimate(self.budget, n_boot=n_boot, seed=seed, level=level)


@dataclass(frozen=True)
class Attack(_Rates):
    """A fixed-budget gradient attack: what it did to each example (arrays have the batch first)."""

    method: str  # "fgsm" or "pgd"
    norm: str  # "inf" or "2"
    eps: np.ndarray  # (B,) budget per example
    adversarial: np.ndarray  # perturbed inputs, shape of the inputs
    perturbation_norm: np.ndarray  # (B,) size of the change actually made, in the attack's norm
    margin_before: np.ndarray
    margin_after: np.ndarray
    decision_before: np.ndarray
    decision_after: np.ndarray
    forward_per_item: float  # forward passes per example (images through the model)
    backward_per_item: float

    @property
    def success(self) -> np.ndarray:
        """(B,) True where the decision flipped."""
        return self.decision_before != self.decision_after

    @property
    def budget(self) -> np.ndarray:
        """(B,) the perturbation's size where the decision flipped, +inf elsewhere."""
        return np.where(self.success, self.perturbation_norm, np.inf)

    def to_dict(self) -> dict:
        return {"method": self.method, "norm": self.norm, "n": int(len(self.eps)),
                "eps": self.eps.tolist(), "success": self.success.tolist(),
                "success_rate": self.success_rate().to_dict(),
                "perturbation_norm": self.perturbation_norm.tolist(),
                "forward_per_item": self.forward_per_item, "backward_per_item": self.backward_per_item}


def _gradient_attack(method, forward, inputs, *, target, eps, norm, decision, mask, bounds, steps, step_size,
                     random_init, seed, batch_size) -> Attack:
    x = _as_array(inputs)
    bounds = _check_bounds(x, bounds)
    norm = _norm_name(norm)
    probe = _Probe(forward, target, decision)
    probe.check_differentiable(x, method)
    e = _per_example(eps, len(x), x.ndim)
    margin0, decision0 = probe.evaluate(x, batch_size)
    adv = _run_gradient_attack(probe, x, decision0, e, method=method, norm=norm, steps=steps, step_size=step_size,
                               random_init=random_init, mask=_mask(mask, x), bounds=bounds, seed=seed,
                               batch_size=batch_size)
    margin1, decision1 = probe.evaluate(adv, batch_size)
    return Attack(method, norm, e.reshape(-1).astype(float), adv, _norms(adv - x, norm), margin0, margin1,
                  decision0, decision1, probe.forwards / len(x), probe.backwards / len(x))


def fgsm(forward: Callable, inputs, *, target: Callable, eps, norm="inf", decision: Callable | None = None,
         mask=None, bounds=(0.0, 1.0), batch_size: int = 32) -> Attack:
    """One gradient step of size ``eps`` that pushes each margin towards the other decision.

    Goodfellow et al. (2015): under L-inf the step is ``eps * sign(gradient)``; under L2,
    ``eps * gradient / ||gradient||``. ``target`` maps the model output to one margin per example
    (its sign is the decision); ``decision`` (output -> bool per example, default ``margin > 0``)
    is the decision whose flip counts, when the margin is only a differentiable stand-in for it.
    ``eps`` is a number or one budget per example; ``mask`` (broadcastable to the inputs, nonzero =
    may change) restricts where the perturbation goes. The result is clipped to ``bounds``
    (``None``: unbounded, e.g. frozen features feeding a logistic decision).

    Example::

        res = fgsm(model, images, target=lambda out: out[:, 1] - out[:, 0], eps=8 / 255)
        res.success, res.adversarial
    """
    return _gradient_attack("fgsm", forward, inputs, target=target, eps=eps, norm=norm, decision=decision, mask=mask,
                            bounds=bounds, steps=1, step_size=None, random_init=False, seed=0, batch_size=batch_size)


def pgd(forward: Callable, inputs, *, target: Callable, eps, norm="inf", steps: int = 20,
        step_size: float | None = None, random_init: bool = False, decision: Callable | None = None, mask=None,
        bounds=(0.0, 1.0), seed: int = 0, batch_size: int = 32) -> Attack:
    """Projected gradient descent (Madry et al. 2018) on the margin, inside the ``eps`` ball.

    ``steps`` steps of size ``step_size`` (default ``2.5 * eps / steps``), each projected back onto
    the L-inf or L2 ball of radius ``eps`` around the input and clipped to ``bounds``;
    ``random_init`` starts from a random point in the ball (numpy seeded with ``seed``). Other
    arguments as :func:`fgsm`. The last iterate is returned.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    return _gradient_attack("pgd", forward, inputs, target=target, eps=eps, norm=norm, decision=decision, mask=mask,
                            bounds=bounds, steps=steps, step_size=step_size, random_init=random_init, seed=seed,
                            batch_size=batch_size)


# --------------------------------------------------------------------------- minimal budget


@dataclass(frozen=True)
class MinimalBudget(_Rates):
    """The smallest budget at which an attack flipped each example's decision."""

    method: str
    norm: str
    budgets: np.ndarray  # the grid searched, ascending
    budget: np.ndarray  # (B,) smallest budget found to flip; +inf where even the largest did not
    success: np.ndarray  # (B,) flipped within the largest budget
    adversarial: np.ndarray  # the flipping input at that budget (the original where none)
    perturbation_norm: np.ndarray  # (B,) size of that change (<= budget)
    margin_before: np.ndarray
    margin_after: np.ndarray
    decision_before: np.ndarray
    decision_after: np.ndarray
    rounds: int  # attacks run (each on the examples still being searched)
    forward_per_item: float
    backward_per_item: float

    def to_dict(self) -> dict:
        return {"method": self.method, "norm": self.norm, "n": int(len(self.budget)),
                "budgets": self.budgets.tolist(),
                "budget": [float(b) if np.isfinite(b) else None for b in self.budget],
                "success": self.success.tolist(), "success_rate": self.success_rate().to_dict(),
                "median_budget": self.median_budget().to_dict(), "rounds": self.rounds,
                "forward_per_item": self.forward_per_item, "backward_per_item": self.backward_per_item}


def minimal_budget(forward: Callable, inputs, *, target: Callable, budgets, method: str = "pgd", norm="inf",
                   refine: int = 0, decision: Callable | None = None, mask=None, bounds=(0.0, 1.0),
                   steps: int = 20, random_init: bool = False, seed: int = 0,
                   batch_size: int = 32) -> MinimalBudget:
    """Per example, the smallest budget in ``budgets`` at which ``method`` ("pgd" or "fgsm") flips the decision.

    Every example is first attacked at the largest budget (``success`` says whether that flipped
    it); then bisection over the grid, each example at its own budget, finds the first budget that
    flips it, and ``refine`` rounds of continuous bisection narrow the bracket below it (each halves
    it). ``rounds`` is 1 + ceil(log2(len(budgets))) + ``refine`` at most. Bisection assumes that an
    attack that flips at some budget also flips at every larger one: exact for a linear decision,
    usual for PGD; FGSM can break it on curved decisions. Other arguments as :func:`pgd`.
    """
    if method not in ("pgd", "fgsm"):
        raise ValueError(f"method must be 'pgd' or 'fgsm'; got {method!r}")
    grid = np.asarray(budgets, dtype=float).ravel()
    if grid.size == 0 or not (np.isfinite(grid).all() and (grid > 0).all()):
        raise ValueError(f"budgets must be a non-empty list of positive numbers, e.g. np.linspace(1, 16, 16) / 255; "
                         f"got {budgets!r}")
    if refine < 0:
        raise ValueError(f"refine must be >= 0; got {refine}")
    grid = np.unique(grid)
    x = _as_array(inputs)
    bounds = _check_bounds(x, bounds)
    norm = _norm_name(norm)
    probe = _Probe(forward, target, decision)
    probe.check_differentiable(x, method)
    full_mask = _mask(mask, x)
    margin0, decision0 = probe.evaluate(x, batch_size)
    n = len(x)

    best_adv, best_margin, best_decision = x.copy(), margin0.copy(), decision0.copy()
    rounds = 0

    def attack(rows: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Attack ``rows`` at budgets ``eps``; keep the flips; return which rows flipped."""
        nonlocal rounds
        rounds += 1
        adv = _run_gradient_attack(
            probe, x[rows], decision0[rows], _per_example(eps, len(rows), x.ndim), method=method, norm=norm,
            steps=steps, step_size=None, random_init=random_init,
            mask=None if full_mask is None else full_mask[rows], bounds=bounds, seed=seed, batch_size=batch_size)
        m, d = probe.evaluate(adv, batch_size)
        flipped = d != decision0[rows]
        best_adv[rows[flipped]], best_margin[rows[flipped]], best_decision[rows[flipped]] = (
            adv[flipped], m[flipped], d[flipped])
        return flipped

    success = attack(np.arange(n), np.full(n, grid[-1]))
    lo = np.full(n, -1)  # grid index known not to flip (-1: budget 0)
    hi = np.full(n, len(grid) - 1)  # grid index known to flip
    while (active := np.flatnonzero(success & (hi - lo > 1))).size:
        mid = (lo[active] + hi[active]) // 2
        flipped = attack(active, grid[mid])
        hi[active[flipped]] = mid[flipped]
        lo[active[~flipped]] = mid[~flipped]
    lo_eps = np.where(lo >= 0, grid[np.maximum(lo, 0)], 0.0)
    hi_eps = grid[hi].astype(float)
    for _ in range(refine):
        active = np.flatnonzero(success)
        if not active.size:
            break
        mid = (lo_eps[active] + hi_eps[active]) / 2
        flipped = attack(active, mid)
        hi_eps[active[flipped]] = mid[flipped]
        lo_eps[active[~flipped]] = mid[~flipped]
    budget = np.where(success, hi_eps, np.inf)
    return MinimalBudget(method, norm, grid, budget, success, best_adv, _norms(best_adv - x, norm), margin0,
                         best_margin, decision0, best_decision, rounds, probe.forwards / n, probe.backwards / n)


# --------------------------------------------------------------------------- few-pixel attack


@dataclass(frozen=True)
class PixelAttack(_Rates):
    """A few-pixel attack by differential evolution (Su et al. 2019), per example."""

    pixels: int  # pixels changed per example
    success: np.ndarray  # (B,) the decision flipped
    positions: np.ndarray  # (B, pixels, 2) row, column of each changed pixel
    values: np.ndarray  # (B, pixels, C) their new values
    adversarial: np.ndarray  # the perturbed inputs (the first flip found; else the lowest margin found)
    margin_before: np.ndarray
    margin_after: np.ndarray
    decision_before: np.ndarray
    decision_after: np.ndarray
    evaluations: np.ndarray  # (B,) forward passes spent on each example
    generations: np.ndarray  # (B,) generations of evolution run

    @property
    def budget(self) -> np.ndarray:
        """(B,) pixels changed where the decision flipped, +inf elsewhere."""
        return np.where(self.success, float(self.pixels), np.inf)

    @property
    def forward_per_item(self) -> float:
        return float(self.evaluations.mean()) if len(self.evaluations) else 0.0

    def to_dict(self) -> dict:
        return {"method": "differential_evolution", "pixels": self.pixels, "n": int(len(self.success)),
                "success": self.success.tolist(), "success_rate": self.success_rate().to_dict(),
                "positions": self.positions.tolist(), "evaluations": self.evaluations.tolist(),
                "forward_per_item": self.forward_per_item}


def _allowed_pixels(mask, x: np.ndarray) -> list[np.ndarray]:
    full = _mask(mask, x)
    if full is None:
        h, w = x.shape[-2:]
        every = np.argwhere(np.ones((h, w), bool))
        return [every] * len(x)
    allowed = [np.argwhere(m.any(0)) for m in full != 0]
    empty = [i for i, a in enumerate(allowed) if not len(a)]
    if empty:
        raise ValueError(f"the mask allows no pixel in example(s) {empty[:5]}; nonzero entries mark where pixels "
                         "may change")
    return allowed


def pixel_attack(forward: Callable, inputs, *, target: Callable, pixels: int = 1, decision: Callable | None = None,
                 mask=None, bounds=(0.0, 1.0), population: int = 400, generations: int = 100, seed: int = 0,
                 batch_size: int = 64) -> PixelAttack:
    """Change ``pixels`` pixels of each (B, C, H, W) input to flip its decision, calling only the forward.

    Su, Vargas & Sakurai (2019): each candidate is ``pixels`` x (position, value per channel);
    differential evolution (DE/rand/1, F = 0.5, no crossover, as in the paper; SciPy's
    ``differential_evolution``) minimises the margin on the current decision's side, about
    ``population`` candidates per generation, for at most ``generations`` generations, and stops
    after the generation in which a candidate flips the decision. ``forward`` may be any black
    box: it receives float32 tensors and may return numpy. ``mask`` (broadcastable to the inputs)
    restricts the positions to pixels with a nonzero entry. The paper's defaults (400 candidates,
    100 generations) cost up to ~40,000 forward passes per example: size them to the model.
    """
    from scipy.optimize import differential_evolution

    x = _as_array(inputs)
    if x.ndim != 4:
        raise ValueError(f"pixel_attack needs images (B, C, H, W); got shape {x.shape}")
    if pixels < 1:
        raise ValueError(f"pixels must be at least 1; got {pixels}")
    if population < 5 or generations < 1:
        raise ValueError(f"population must be >= 5 and generations >= 1; got {population}, {generations}")
    lo, hi = _check_bounds(x, bounds, required=True)
    probe = _Probe(forward, target, decision)
    margin0, decision0 = probe.evaluate(x, batch_size)
    allowed = _allowed_pixels(mask, x)
    channels = x.shape[1]
    ndim = pixels * (1 + channels)
    rng = np.random.default_rng(seed)
    results = []
    for i in range(len(x)):
        results.append(_evolve(probe, x[i], decision0[i], allowed[i], pixels=pixels, bounds=(lo, hi),
                               popsize=max(1, math.ceil(population / ndim)), generations=generations,
                               rng=rng, batch_size=batch_size, optimiser=differential_evolution))
    adv = np.stack([r["image"] for r in results])
    margin1, decision1 = np.array([r["margin"] for r in results]), np.array([r["decision"] for r in results])
    return PixelAttack(pixels, decision1 != decision0, np.stack([r["positions"] for r in results]),
                       np.stack([r["values"] for r in results]), adv, margin0, margin1, decision0, decision1,
                       np.array([r["evaluations"] for r in results]), np.array([r["generations"] for r in results]))


def _evolve(probe, image, keep, allowed, *, pixels, bounds, popsize, generations, rng, batch_size, optimiser) -> dict:
    """Differential evolution on one image; candidates are ``pixels`` x (position index, values)."""
    channels = image.shape[0]
    side = 1.0 if keep else -1.0  # minimise the margin on the kept decision's side
    gene_bounds = [(0, len(allowed) - 1)] + [bounds] * channels
    integrality = [True] + [False] * channels
    found = {"evaluations": 0, "flip": None, "best": None}

    def paint(genes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        genes = genes.reshape(len(genes), pixels, 1 + channels)
        where = allowed[np.clip(np.rint(genes[..., 0]).astype(int), 0, len(allowed) - 1)]  # (S, pixels, 2)
        values = genes[..., 1:].astype(np.float32)
        batch = np.repeat(image[None], len(genes), 0)
        rows = np.arange(len(genes))
        for j in range(pixels):
            batch[rows, :, where[:, j, 0], where[:, j, 1]] = values[:, j]
        return batch, where, values

    def objective(population: np.ndarray) -> np.ndarray:  # (ndim, S) -> (S,)
        batch, where, values = paint(population.T)
        margins, decisions = probe.evaluate(batch, batch_size)
        found["evaluations"] += len(batch)
        energy = side * margins.astype(float)
        flips = np.flatnonzero(decisions != keep)
        if flips.size and found["flip"] is None:
            k = flips[np.argmin(energy[flips])]
            found["flip"] = (batch[k], where[k], values[k], margins[k], decisions[k])
        k = int(np.argmin(energy))
        if found["best"] is None or energy[k] < found["best"][0]:
            found["best"] = (energy[k], (batch[k], where[k], values[k], margins[k], decisions[k]))
        return energy

    result = optimiser(objective, gene_bounds * pixels, strategy="rand1bin", maxiter=generations, popsize=popsize,
                       mutation=0.5, recombination=1.0, rng=rng, polish=False, tol=0.0, init="latinhypercube",
                       integrality=integrality * pixels, vectorized=True, updating="deferred",
                       callback=lambda intermediate_result: found["flip"] is not None)
    chosen = found["flip"] if found["flip"] is not None else found["best"][1]
    img, where, values, margin, decided = chosen
    return {"image": img, "positions": where, "values": values, "margin": float(margin), "decision": bool(decided),
            "evaluations": found["evaluations"], "generations": int(result.nit)}


# --------------------------------------------------------------------------- common corruptions


def corrupt(inputs, corruption: str, level: float, *, bounds=(0.0, 1.0), seed: int = 0) -> np.ndarray:
    """One corruption at one level, clipped to ``bounds``.

    - ``gaussian_noise``: adds ``level * (high - low) * z``, z standard normal (seeded, so every
      level of a curve scales the same draw);
    - ``jpeg``: encodes and decodes (B, C, H, W) images with C = 1 or 3 at JPEG quality ``level``
      (Pillow, 1-95), through 8-bit pixels;
    - ``brightness``: multiplies the distance from ``low`` by the gain ``level`` (< 1 darker).
    """
    x = _as_array(inputs)
    lo, hi = _check_bounds(x, bounds, required=True)
    if corruption == "gaussian_noise":
        if level < 0:
            raise ValueError(f"gaussian_noise level is a standard deviation (share of the range) >= 0; got {level}")
        z = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
        return np.clip(x + np.float32(level * (hi - lo)) * z, lo, hi)
    if corruption == "brightness":
        if level < 0:
            raise ValueError(f"brightness level is a gain >= 0 (1 = unchanged); got {level}")
        return np.clip(lo + (x - lo) * np.float32(level), lo, hi)
    if corruption == "jpeg":
        return _jpeg(x, int(level), lo, hi)
    raise ValueError(f"unknown corruption {corruption!r}; choose one of {sorted(CORRUPTIONS)}")


def _jpeg(x: np.ndarray, quality: int, lo: float, hi: float) -> np.ndarray:
    from PIL import Image

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs images (B, C, H, W) with 1 or 3 channels; got shape {x.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg level is a quality in 1..100 (95 and below are Pillow's useful range); got {quality}")
    pixels = np.rint((np.clip(x, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    out = np.empty_like(x)
    for i, img in enumerate(pixels):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(arr).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
        out[i] = decoded[None] if img.shape[0] == 1 else decoded.transpose(2, 0, 1)
    return (lo + out / 255 * (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class CorruptionCurve(_Rates):
    """Margin and decision of every example at every level of one corruption, mildest level first."""

    corruption: str
    levels: np.ndarray  # (L,) in the order given
    margin: np.ndarray  # (B, L)
    decision: np.ndarray  # (B, L) bool
    margin_clean: np.ndarray  # (B,)
    decision_clean: np.ndarray  # (B,)
    forward_per_item: float

    @property
    def flipped(self) -> np.ndarray:
        """(B, L) the decision differs from the clean input's."""
        return self.decision != self.decision_clean[:, None]

    @property
    def success(self) -> np.ndarray:
        """(B,) some level flipped the decision."""
        return self.flipped.any(1)

    @property
    def first_flip(self) -> np.ndarray:
        """(B,) the first level (in the given order) that flipped the decision; NaN if none did."""
        first = self.flipped.argmax(1)
        return np.where(self.success, self.levels[first].astype(float), np.nan)

    @property
    def budget(self) -> np.ndarray:
        """(B,) severity step of the first flip (1 = the first level), +inf if none: comparable across groups."""
        return np.where(self.success, self.flipped.argmax(1) + 1.0, np.inf)

    def flip_rates(self, *, level: float = 0.95) -> list[Estimate]:
        """Share of examples whose decision flipped, per corruption level (Wilson intervals)."""
        return [_success_estimate(self.flipped[:, j], level) for j in range(len(self.levels))]

    def to_frame(self) -> pd.DataFrame:
        """Long table: item, corruption, level, margin, decision, flipped (one row per example and level)."""
        b, n_levels = self.margin.shape
        return pd.DataFrame({
            "item": np.repeat(np.arange(b), n_levels), "corruption": self.corruption,
            "level": np.tile(self.levels, b), "margin": self.margin.ravel(), "decision": self.decision.ravel(),
            "flipped": self.flipped.ravel()})

    def to_dict(self) -> dict:
        return {"corruption": self.corruption, "levels": self.levels.tolist(), "n": int(len(self.margin)),
                "flip_rate": [e.to_dict() for e in self.flip_rates()],
                "mean_margin": self.margin.mean(0).tolist(), "forward_per_item": self.forward_per_item}


def corruption_curve(forward: Callable, inputs, *, target: Callable, corruption: str, levels=None,
                     decision: Callable | None = None, bounds=(0.0, 1.0), seed: int = 0,
                     batch_size: int = 32) -> CorruptionCurve:
    """The margin and decision of each example under ``corruption`` at each of ``levels``.

    ``levels`` default to :data:`CORRUPTIONS` ``[corruption]``, mildest first; pass them in order of
    severity, since :attr:`CorruptionCurve.first_flip` reads them in that order (e.g. brightness
    gains (1.25, 1.5, 2) for overexposure). Noise uses one seeded draw scaled across levels, so a
    curve moves with the level only. Only the forward is called (black boxes welcome).
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {sorted(CORRUPTIONS)}")
    x = _as_array(inputs)
    bounds = _check_bounds(x, bounds, required=True)
    levels = np.asarray(CORRUPTIONS[corruption] if levels is None else levels, dtype=float).ravel()
    if levels.size == 0:
        raise ValueError("levels must list at least one corruption level")
    probe = _Probe(forward, target, decision)
    margin0, decision0 = probe.evaluate(x, batch_size)
    margins, decisions = [], []
    for value in levels:
        m, d = probe.evaluate(corrupt(x, corruption, value, bounds=bounds, seed=seed), batch_size)
        margins.append(m)
        decisions.append(d)
    return CorruptionCurve(corruption, levels, np.stack(margins, 1), np.stack(decisions, 1), margin0, decision0,
                           probe.forwards / len(x))


# --------------------------------------------------------------------------- by group, and a figure


def group_summary(result, sensitive, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                  min_group_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Success rate and median budget by group, in :func:`autopsy.fairness.group_metrics`' long format.

    ``result`` is any record here (its ``success`` and ``budget``) or a DataFrame with those
    columns. Rows: the group columns, ``metric`` ("success_rate": Wilson interval;
    "median_budget": percentile bootstrap within the group, with failed examples counted as +inf,
    i.e. beyond every budget tried, so a group where few flip has a large median rather than a
    flattering one), ``value``, ``low``, ``high``, ``n``, ``test``, ``level``, ``warning`` (small
    group, or a median beyond the budgets tried). ``sensitive`` is one label per example or a
    DataFrame of attributes (intersectional groups); race and gender labels in the lab's data are
    perceived attributes annotated by others.
    """
    if isinstance(result, pd.DataFrame):
        success, budget = result["success"].to_numpy(bool), result["budget"].to_numpy(float)
    else:
        success, budget = np.asarray(result.success, bool), np.asarray(result.budget, float)
    frame = fairness.sensitive_frame(sensitive, len(success))
    keys = list(frame.columns)
    records = []
    for key, rows in frame.groupby(keys if len(keys) > 1 else keys[0], sort=True).indices.items():
        labels = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        small = f"n={len(rows)} < {min_group_size}: interval unreliable, group too small" if (
            len(rows) < min_group_size) else None
        rate = _success_estimate(success[rows], level)
        median = _median_budget_estimate(budget[rows], n_boot=n_boot, seed=seed, level=level)
        for metric, est in (("success_rate", rate), ("median_budget", median)):
            warning = "; ".join(w for w in (small, est.warning) if w) or None
            records.append({**labels, "metric": metric, "value": est.value, "low": est.low, "high": est.high,
                            "n": est.n, "test": est.test, "level": level, "warning": warning})
    return pd.DataFrame(records, columns=[*keys, "metric", "value", "low", "high", "n", "test", "level", "warning"])


def _displayable(images: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(N, C, H, W) in bounds -> (N, H, W, C) or (N, H, W) floats in [0, 1]."""
    scaled = np.clip((images - lo) / (hi - lo), 0, 1)
    return scaled[:, 0] if scaled.shape[1] == 1 else scaled.transpose(0, 2, 3, 1)


def perturbation_figure(original, perturbed, *, titles=None, bounds=(0.0, 1.0), size: float = 2.2):
    """Each example as original | perturbed | size of the change, one row per example.

    Images are (N, C, H, W) with C = 1 or 3, in ``bounds``. The third column is the largest change
    over channels, as a share of the input range, on cividis (colour-vision-deficiency safe) with
    one scale for every row and a colour bar, so an invisible perturbation becomes visible
    (amplified) and rows compare. Returns a Figure; nothing is written.
    """
    from autopsy.figures import MAP_CMAP, new_figure

    a, b = _as_array(original, "original"), _as_array(perturbed, "perturbed")
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"original and perturbed must be images (N, C, H, W) with C = 1 or 3 and the same shape; "
                         f"got {a.shape} and {b.shape}")
    lo, hi = (float(v) for v in bounds)
    change = np.abs(b - a).max(1) / (hi - lo)
    vmax = max(float(change.max()), 1e-12)
    shown_a, shown_b = _displayable(a, lo, hi), _displayable(b, lo, hi)
    fig = new_figure(figsize=(3 * size + 0.8, size * len(a)))
    grid = fig.add_gridspec(len(a), 3)
    change_axes = []
    for i in range(len(a)):
        label = f"{titles[i]}: " if titles is not None else ""
        l2 = float(np.sqrt((((b[i] - a[i]) / (hi - lo)) ** 2).sum()))
        for j, (img, title) in enumerate(((shown_a[i], f"{label}original"), (shown_b[i], "perturbed"))):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        ax = fig.add_subplot(grid[i, 2])
        shown = ax.imshow(change[i], cmap=MAP_CMAP, vmin=0, vmax=vmax)
        ax.set_title(f"change: L∞ {change[i].max():.3g}, L2 {l2:.3g}", fontsize=8)
        ax.set_axis_off()
        change_axes.append(ax)
    fig.colorbar(shown, ax=change_axes, label="largest change per pixel\n(share of the input range)", shrink=0.8)
    return fig


# --------------------------------------------------------------------------- summaries incidents share


def undefined(what: str) -> Estimate:
    """An estimate for a group with no examples in this run, saying so (never a silent zero)."""
    return Estimate(float("nan"), float("nan"), float("nan"), 0, "no examples", warning=f"no {what} in this run")


def whole(value: float):
    """A budget as a story prints it: 4, not 4.0."""
    return int(value) if float(value).is_integer() else float(value)


def outcomes_by_group(frame: pd.DataFrame, columns, *, n_boot: int = 2000, seed: int = 0, expect=(),
                      noun: str = "examples") -> dict:
    """Group key -> {"success_rate", "median_budget"} Estimates (:func:`group_summary`) from a frame with
    ``success`` and ``budget`` columns; ``columns`` name the group attribute(s), keys join them with ``_``.
    Groups in ``expect`` with no example get :func:`undefined` estimates."""
    import re

    columns = [columns] if isinstance(columns, str) else list(columns)
    key = lambda value: re.sub(r"\W+", "_", str(value)).strip("_")  # noqa: E731 - 'East Asian' -> 'East_Asian'
    out = {key(g): {"success_rate": undefined(f"{g} {noun}"), "median_budget": undefined(f"{g} {noun}")}
           for g in expect}
    if len(frame):
        table = group_summary(frame[["success", "budget"]], frame[columns].astype(str), n_boot=n_boot, seed=seed)
        for row in table.itertuples(index=False):
            name = "_".join(key(getattr(row, c)) for c in columns)
            out.setdefault(name, {})[row.metric] = Estimate(row.value, row.low, row.high, int(row.n), row.test,
                                                            level=row.level, warning=row.warning)
    return out


def flips_between(flags, groups, between: tuple[str, str], *, n_boot: int = 2000, seed: int = 0,
                  noun: str = "examples") -> dict:
    """Each of two groups' share of decisions flipped (Wilson) and their difference (bootstrap within groups)."""
    flags = np.asarray(flags, dtype=bool)
    groups = pd.Series(groups).astype(str).reset_index(drop=True)
    out = {g: proportion(int(flags[(groups == g).to_numpy()].sum()), int((groups == g).sum())) for g in between}
    if set(between) <= set(groups):
        keep = groups.isin(between).to_numpy()
        out["difference"] = fairness.demographic_parity_difference(
            flags[keep].astype(int), groups[keep].reset_index(drop=True), between=between, n_boot=n_boot, seed=seed)
    else:
        out["difference"] = undefined(f"{noun} of both groups")
    return out


def typical_examples(frame: pd.DataFrame, column: str, groups) -> list[int]:
    """Per group, the row (position) of the flip whose budget is nearest the group's median flip (its first
    row if none flipped): the examples a figure shows."""
    picks = []
    for group in groups:
        rows = np.flatnonzero((frame[column].astype(str) == group).to_numpy())
        done = rows[frame["success"].to_numpy(bool)[rows]]
        if done.size:
            spent = frame["budget"].to_numpy(float)[done]
            picks.append(int(done[np.argmin(np.abs(spent - np.median(spent)))]))
        elif rows.size:
            picks.append(int(rows[0]))
    return picks
