"""Attribution over any forward callable (captum), plus the checks that say whether to trust a map.

- :func:`attribute` -- one entry point for gradient methods (integrated gradients, Sundararajan et al.
  2017; plain gradients, Simonyan et al. 2014; GradientSHAP and KernelSHAP, Lundberg & Lee 2017;
  Grad-CAM, Selvaraju et al. 2017) and gradient-free perturbation methods (occlusion, Zeiler & Fergus
  2014; feature ablation).
- :func:`randomisation_check` -- the model-parameter randomisation test of Adebayo et al. (NeurIPS
  2018), "Sanity Checks for Saliency Maps".
- :func:`faithfulness` -- deletion / insertion curves of Petsiuk et al. (BMVC 2018), "RISE:
  Randomized Input Sampling for Explanation of Black-box Models", against a random ordering.

``target`` is a class index or any callable mapping the model output to one scalar per batch item
(the value at the argmax of a saliency map, the mean logit inside a region, ...).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from captum import attr as _captum
from scipy import ndimage, stats

__all__ = [
    "GRADIENT_METHODS",
    "PERTURBATION_METHODS",
    "attribute",
    "randomisation_check",
    "RandomisationCheck",
    "faithfulness",
    "Faithfulness",
    "ssim",
]

GRADIENT_METHODS = ("integrated_gradients", "gradient", "gradient_shap", "grad_cam")
PERTURBATION_METHODS = ("occlusion", "feature_ablation", "kernel_shap")
_NOT_DIFFERENTIABLE = (
    "method {method!r} needs gradients, but {why}. Use a perturbation method, which only calls the "
    "forward: " + ", ".join(repr(m) for m in PERTURBATION_METHODS) + "."
)


def _as_batch(inputs, name: str = "inputs") -> torch.Tensor:
    """``inputs`` (a tensor or numpy array with a batch axis first) as a float tensor; clear errors otherwise."""
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array with a batch axis first; got "
                        f"{type(inputs).__name__}")
    if inputs.ndim < 2:
        raise ValueError(f"{name} need a batch axis first, e.g. (B, C, H, W); got shape {tuple(inputs.shape)}"
                         " -- add one with inputs[None]")
    return inputs.float() if not inputs.is_floating_point() else inputs


def _scalar_forward(forward: Callable, target) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``forward`` so captum sees one scalar per batch item: (B,)."""
    if target is not None and not callable(target) and not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be None, a class index (int) or a callable mapping the model output "
                        f"to one scalar per item; got {type(target).__name__}")

    def f(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        if not isinstance(out, torch.Tensor):  # numpy or plain numbers: fine for perturbation methods
            out = torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)
        if callable(target):
            out = target(out)
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)
        elif target is not None:
            if out.ndim < 2:
                raise ValueError(f"target={target} indexes a class axis, but the output has shape "
                                 f"{tuple(out.shape)}; pass target=None or a callable")
            out = out[:, int(target)]
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"the forward (after target) must give one scalar per batch item, shape ({x.shape[0]},); "
                f"got {tuple(out.shape)}. Pass target= a class index or a callable reducing the output, "
                "e.g. target=lambda out: out.flatten(1).amax(1)"
            )
        return out

    return f


def _resolve_layer(model, layer) -> torch.nn.Module:
    if isinstance(layer, torch.nn.Module):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a torch.nn.Module or a dotted name such as 'layer4.1.conv2'; got "
                        f"{type(layer).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"layer {layer!r} is a name, but the forward is not a torch.nn.Module to look it up "
                        "on; pass the layer module itself")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"the model has no layer named {layer!r}; names look like {names}") from None


def _image_grid_mask(x: torch.Tensor, cells: int = 8) -> torch.Tensor | None:
    """Feature groups for gradient-free methods: a cells x cells grid of patches shared by all channels."""
    if x.ndim != 4:
        return None
    h, w = x.shape[-2:]
    rows = torch.div(torch.arange(h) * min(cells, h), h, rounding_mode="floor")
    cols = torch.div(torch.arange(w) * min(cells, w), w, rounding_mode="floor")
    return (rows[:, None] * min(cells, w) + cols[None, :])[None, None].to(x.device)


def _check_differentiable(f, x: torch.Tensor, method: str) -> None:
    probe = x[:1].detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = f(probe)
    except RuntimeError as err:  # e.g. .numpy() on a tensor that requires grad
        why = f"the forward failed under autograd ({err})"
        raise TypeError(_NOT_DIFFERENTIABLE.format(method=method, why=why)) from err
    if out.grad_fn is None:
        raise TypeError(_NOT_DIFFERENTIABLE.format(
            method=method, why="the forward's output is not connected to the input by autograd (no grad_fn: "
            "it returns numpy, detaches, or thresholds)"))


def attribute(
    forward: Callable,
    inputs,
    *,
    target=None,
    method: str = "integrated_gradients",
    layer=None,
    baselines=None,
    **method_kwargs,
) -> np.ndarray:
    """Attribute ``forward``'s (target) output to its ``inputs``; returns a numpy array.

    Maps have the shape of ``inputs`` except Grad-CAM, which returns (B, 1, H, W) upsampled
    bilinearly to the input size. ``method_kwargs`` go to the captum method (``n_steps`` for
    integrated gradients, ``sliding_window_shapes`` for occlusion, ``feature_mask`` / ``n_samples`` for
    feature ablation and KernelSHAP, ``relu_attributions`` for Grad-CAM...). Gradient-free methods group
    image pixels into an 8x8 grid of patches unless given ``feature_mask`` or a window. The model's
    train/eval mode is left as the caller set it.

    Example::

        maps = attribute(model, images, target=lambda out: out.flatten(1).amax(1), method="gradient")
    """
    x = _as_batch(inputs)
    f = _scalar_forward(forward, target)
    if method not in GRADIENT_METHODS + PERTURBATION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {GRADIENT_METHODS + PERTURBATION_METHODS}")
    if isinstance(baselines, np.ndarray):
        baselines = torch.from_numpy(baselines).to(x)

    if method in GRADIENT_METHODS:
        _check_differentiable(f, x, method)
        x = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                result = _gradient_method(f, forward, x, method, layer, baselines, method_kwargs)
        except RuntimeError as err:
            raise TypeError(_NOT_DIFFERENTIABLE.format(
                method=method, why=f"back-propagation through the forward failed ({err})")) from err
    else:
        with torch.no_grad():
            result = _perturbation_method(f, x, method, baselines, method_kwargs)
    return result.detach().cpu().numpy()


def _gradient_method(f, model, x, method, layer, baselines, kwargs) -> torch.Tensor:
    if method == "integrated_gradients":
        return _captum.IntegratedGradients(f).attribute(x, baselines=baselines, **kwargs)
    if method == "gradient":
        return _captum.Saliency(f).attribute(x, **kwargs)
    if method == "gradient_shap":
        if baselines is None:
            baselines = torch.zeros_like(x[:1])
        kwargs.setdefault("n_samples", 20)
        return _captum.GradientShap(f).attribute(x, baselines=baselines, **kwargs)
    # grad_cam
    if layer is None:
        raise ValueError("method 'grad_cam' needs layer= (a module, or a dotted name on the model), "
                         "usually the last convolution")
    kwargs.setdefault("relu_attributions", True)  # Selvaraju et al. keep positive evidence only
    cam = _captum.LayerGradCam(f, _resolve_layer(model, layer)).attribute(x, **kwargs)
    if cam.ndim == 4 and x.ndim == 4:
        cam = _captum.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return cam


def _perturbation_method(f, x, method, baselines, kwargs) -> torch.Tensor:
    if method == "occlusion":
        if "sliding_window_shapes" not in kwargs:
            if x.ndim == 4:
                c, h, w = x.shape[1:]
                win = (c, max(1, -(-h // 8)), max(1, -(-w // 8)))
                kwargs["sliding_window_shapes"] = win
                kwargs.setdefault("strides", (c, max(1, win[1] // 2), max(1, win[2] // 2)))
            else:
                kwargs["sliding_window_shapes"] = (1,) * (x.ndim - 1)
        return _captum.Occlusion(f).attribute(x, baselines=baselines, **kwargs)
    kwargs.setdefault("feature_mask", _image_grid_mask(x))
    if method == "feature_ablation":
        return _captum.FeatureAblation(f).attribute(x, baselines=baselines, **kwargs)
    # kernel_shap: captum fits one surrogate per example, so attribute item by item
    kwargs.setdefault("n_samples", 200)
    explainer = _captum.KernelShap(f)
    per_item = isinstance(baselines, torch.Tensor) and baselines.shape[0] == x.shape[0] > 1
    items = []
    for i in range(x.shape[0]):
        base_i = baselines[i : i + 1] if per_item else baselines
        items.append(explainer.attribute(x[i : i + 1], baselines=base_i, **kwargs))
    return torch.cat(items)


# --------------------------------------------------------------------------- sanity checks


@dataclass(frozen=True)
class RandomisationCheck:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), one row per step in ``steps``."""

    method: str
    steps: pd.DataFrame  # step, layer, spearman (|map|), spearman_signed, ssim (|map|); means over the batch
    threshold: float
    passed: bool
    reason: str

    def to_dict(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "passed": self.passed,
                "reason": self.reason, "steps": self.steps.to_dict(orient="records")}


def _map_per_item(a: np.ndarray, *, absolute: bool = True) -> np.ndarray:
    """Map summed over channels, of |values| or signed: (B, C, H, W) -> (B, H, W); else flat per item."""
    a = np.abs(a) if absolute else a
    if a.ndim == 4:
        return a.sum(1)
    return a.reshape(a.shape[0], -1)


def _spearman(o: np.ndarray, r: np.ndarray) -> float:
    if np.ptp(o) == 0 or np.ptp(r) == 0:  # a constant map has no ranking to correlate
        return 1.0 if np.allclose(o, r) else 0.0
    return float(stats.spearmanr(o.ravel(), r.ravel()).statistic)


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two maps, each min-max scaled to [0, 1].

    Uniform window, K1 = 0.01, K2 = 0.03, as scikit-image's default ``structural_similarity``.
    """
    def scale(m):
        m = np.asarray(m, dtype=np.float64)
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    a, b = scale(a), scale(b)
    window = max(1, min(window, *a.shape))
    n = window**a.ndim
    cov_norm = n / (n - 1) if n > 1 else 1.0
    mu_a, mu_b = ndimage.uniform_filter(a, window), ndimage.uniform_filter(b, window)
    var_a = cov_norm * (ndimage.uniform_filter(a * a, window) - mu_a**2)
    var_b = cov_norm * (ndimage.uniform_filter(b * b, window) - mu_b**2)
    cov = cov_norm * (ndimage.uniform_filter(a * b, window) - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = (window - 1) // 2
    inner = s[tuple(slice(pad, dim - pad) if dim > 2 * pad else slice(None) for dim in s.shape)]
    return float(inner.mean())


def _similarity(original: np.ndarray, randomised: np.ndarray) -> dict[str, float]:
    abs_o, abs_r = _map_per_item(original), _map_per_item(randomised)
    signed_o, signed_r = _map_per_item(original, absolute=False), _map_per_item(randomised, absolute=False)
    return {
        "spearman": float(np.mean([_spearman(o, r) for o, r in zip(abs_o, abs_r)])),
        "spearman_signed": float(np.mean([_spearman(o, r) for o, r in zip(signed_o, signed_r)])),
        "ssim": float(np.mean([ssim(o, r) for o, r in zip(abs_o, abs_r)])),
    }


def _parametrised_layers(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def _reinitialise(module: torch.nn.Module) -> None:
    """Re-initialise every parametrised submodule (so a whole block can be one cascade step)."""
    for m in module.modules():
        if next(m.parameters(recurse=False), None) is None:
            continue
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        else:
            with torch.no_grad():
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, 0.02)


def randomisation_check(
    model: torch.nn.Module,
    inputs,
    *,
    target=None,
    method: str = "gradient",
    layers=None,
    seed: int = 0,
    threshold: float = 0.5,
    **method_kwargs,
) -> RandomisationCheck:
    """Cascading parameter randomisation test (Adebayo et al., NeurIPS 2018).

    Re-initialises the layers of a deep copy of ``model`` one after another, from the output side
    ("top") down, recomputing the map after each step, and compares it to the map of the intact model
    by Spearman rank correlation and SSIM of absolute values, channels summed (Adebayo et al.'s
    "absolute value" comparison), and by rank correlation of the signed maps. A map that explains the
    model must change when the model's weights do. Verdict: ``passed`` if the absolute-value rank
    correlation after the last step is below ``threshold`` (default 0.5; Adebayo et al. read
    correlations that stay high as a failure). Absolute maps keep some similarity from the
    architecture alone (stride and pooling patterns), so a fully random network can stay near 0.5 on
    tiny inputs: read the signed column too. ``layers`` (modules or dotted names, in cascade order) defaults to every
    module with its own parameters, last registered first; a block given by name is re-initialised
    whole, in one step. The caller's model is never modified.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"randomisation_check needs a torch.nn.Module to randomise; got {type(model).__name__}")
    names = _parametrised_layers(model)[::-1] if layers is None else [_layer_name(model, l) for l in layers]
    if not names:
        raise ValueError("the model has no parametrised layers to randomise")
    randomised = copy.deepcopy(model)
    if "layer" in method_kwargs and method_kwargs["layer"] is not None:
        method_kwargs["layer"] = randomised.get_submodule(_layer_name(model, method_kwargs["layer"]))

    original = attribute(randomised, inputs, target=target, method=method, **method_kwargs)
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step, name in enumerate(names, start=1):
            _reinitialise(randomised.get_submodule(name))
            new = attribute(randomised, inputs, target=target, method=method, **method_kwargs)
            rows.append({"step": step, "layer": name, **_similarity(original, new)})
    steps = pd.DataFrame(rows)
    final = steps["spearman"].iloc[-1]
    passed = bool(final < threshold)
    reason = (
        f"rank correlation with the original map fell to {final:.2f} (< {threshold}) after randomising "
        f"{len(names)} layers" if passed else
        f"rank correlation with the original map is still {final:.2f} (>= {threshold}) after randomising "
        f"{len(names)} layers: the {method} map barely depends on the learned weights"
    )
    return RandomisationCheck(method=method, steps=steps, threshold=threshold, passed=passed, reason=reason)


def _layer_name(model: torch.nn.Module, layer) -> str:
    if isinstance(layer, str):
        _resolve_layer(model, layer)
        return layer
    for name, m in model.named_modules():
        if m is layer:
            return name
    raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model; pass a dotted name")


@dataclass(frozen=True)
class Faithfulness:
    """Deletion / insertion curves (Petsiuk et al. 2018), averaged over the batch, with a random baseline."""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    fractions: np.ndarray  # fraction of units deleted / inserted, (steps + 1,)
    deletion_curve: np.ndarray  # (B, steps + 1) target score
    insertion_curve: np.ndarray
    random_deletion_curve: np.ndarray  # mean over random orders, (B, steps + 1)
    random_insertion_curve: np.ndarray
    passed: bool
    reason: str

    def to_dict(self) -> dict:
        keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "passed", "reason")
        d = {k: getattr(self, k) for k in keys}
        d.update(fractions=self.fractions.tolist(), deletion_curve=self.deletion_curve.mean(0).tolist(),
                 insertion_curve=self.insertion_curve.mean(0).tolist())
        return d


def faithfulness(
    forward: Callable,
    inputs,
    attribution,
    *,
    target=None,
    steps: int = 20,
    baseline=0.0,
    n_random: int = 5,
    seed: int = 0,
    batch_size: int = 64,
) -> Faithfulness:
    """Deletion and insertion AUCs (Petsiuk et al. 2018, RISE) with a random-order baseline.

    Units (pixels for (B, C, H, W) inputs, all channels together; elements otherwise) are ranked by
    attribution summed over channels, highest first. Deletion replaces the top units by ``baseline``
    (a number or a tensor broadcastable to the inputs, e.g. a blurred copy) and tracks the target
    score; insertion starts from the baseline and restores them. AUCs use the trapezoid rule over the
    fraction of units. A faithful map has a lower deletion AUC and a higher insertion AUC than random
    orderings (``passed``). Petsiuk et al. score class probabilities: pass a softmax in ``target`` to
    match them.
    """
    x = _as_batch(inputs)
    f = _scalar_forward(forward, target)
    if isinstance(attribution, torch.Tensor):
        attribution = attribution.detach().cpu().numpy()
    a = np.asarray(attribution, dtype=np.float64)
    if x.ndim == 4:
        if a.ndim == 4:
            a = a.sum(1)
        if a.shape != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f"attribution shape {a.shape} does not match the inputs {tuple(x.shape)}; expect "
                             "(B, C, H, W), (B, 1, H, W) or (B, H, W)")
    elif a.shape != tuple(x.shape):
        raise ValueError(f"attribution shape {a.shape} must equal the inputs' shape {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    n_units = int(np.prod(a.shape[1:]))
    counts = np.round(np.linspace(0, n_units, steps + 1)).astype(int)
    unit_shape = a.shape[1:]
    rng = np.random.default_rng(seed)

    def curves(order: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        rank = np.empty(n_units, dtype=np.int64)
        rank[order] = np.arange(n_units)
        masks = torch.as_tensor(rank[None, :] < counts[:, None], device=x.device).reshape(-1, *unit_shape)
        if x.ndim == 4:
            masks = masks[:, None]
        masks = masks.to(x.dtype)
        deleted = x[i] * (1 - masks) + base[i] * masks
        inserted = base[i] * (1 - masks) + x[i] * masks
        return _scores(f, deleted, batch_size), _scores(f, inserted, batch_size)

    dele, ins, rdel, rins = [], [], [], []
    for i in range(x.shape[0]):
        d, s = curves(np.argsort(-a[i].ravel(), kind="stable"), i)
        dele.append(d)
        ins.append(s)
        rand = [curves(rng.permutation(n_units), i) for _ in range(n_random)]
        rdel.append(np.mean([r[0] for r in rand], 0))
        rins.append(np.mean([r[1] for r in rand], 0))
    fractions = counts / n_units
    auc = lambda c: float(np.mean(np.trapezoid(np.asarray(c), fractions, axis=1)))  # noqa: E731
    d_auc, i_auc, rd_auc, ri_auc = auc(dele), auc(ins), auc(rdel), auc(rins)
    passed = d_auc < rd_auc and i_auc > ri_auc
    reason = (f"deletion AUC {d_auc:.3g} vs random {rd_auc:.3g} (lower is better); insertion AUC {i_auc:.3g} vs "
              f"random {ri_auc:.3g} (higher is better)")
    if not passed:
        reason = "the map orders units no better than random: " + reason
    return Faithfulness(d_auc, i_auc, rd_auc, ri_auc, fractions, np.asarray(dele), np.asarray(ins),
                        np.asarray(rdel), np.asarray(rins), bool(passed), reason)


def _scores(f, batch: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([f(chunk).detach().cpu().numpy() for chunk in batch.split(batch_size)])
