"""Feature visualisation by optimisation (lucent, the PyTorch port of lucid).

Optimises an image so that a unit -- a channel, one neuron, or a direction in a layer's activation
space -- responds strongly (Olah, Mordvintsev & Schubert 2017, "Feature Visualization", Distill; Erhan
et al. 2009). The image is parametrised in a decorrelated Fourier basis and jittered, scaled and rotated
at each step, as in lucid. Defaults are CPU-sized (64 px, 64 steps).

We use lucent 0.1.8's image parametrisation, transforms and objectives but run our own loop instead of
``lucent.optvis.render.render_vis``, which (a) opens an image viewer by default (``show_image=True``),
(b) forces ``model.eval()`` and device ``cuda:0`` when available and leaves them so, (c) names layers
with "_" in place of "." and hooks every module without removing the hooks on error, (d) always
ImageNet-normalises and upsamples to 224 px, and (e) back-propagates into the model's own ``.grad``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # kornia 0.4.1 calls the deprecated torch.jit.script
    from lucent.optvis import objectives as _objectives
    from lucent.optvis import param as _param
    from lucent.optvis import transform as _transform

__all__ = ["render", "channel", "neuron", "direction", "imagenet_normalise"]

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """The ``preprocess`` for torchvision ImageNet models: [0, 1] RGB -> normalised."""
    return (x - _IMAGENET_MEAN.to(x.device)) / _IMAGENET_STD.to(x.device)


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _transforms(transforms) -> list[Callable]:
    if transforms == "standard":
        return list(_transform.standard_transforms)  # pad 12, jitter 8, scale +-10%, rotate +-10 deg, jitter 4
    if transforms is None:
        return []
    if isinstance(transforms, (list, tuple)) and all(callable(t) for t in transforms):
        return list(transforms)
    raise ValueError("transforms must be 'standard', None or a list of callables on (B, 3, H, W) tensors")


def render(
    model: torch.nn.Module,
    objective,
    *,
    size: int = 64,
    steps: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    preprocess: Callable | None = None,
    transforms="standard",
    decorrelate: bool = True,
    fft: bool = True,
    batch: int = 1,
) -> np.ndarray:
    """Optimise an image for ``objective``; returns float (size, size, 3) in [0, 1] ((batch, ...) if batch > 1).

    ``objective`` may also be a list: one image per objective, optimised together in one batch
    (each image's loss reaches only its own parameters, so this is separate renders at the cost of
    one; see :func:`render_each`).

    ``objective`` is a lucent ``Objective`` (or "layer:channel"), whose layer names may be dotted
    ("layer3.1.conv2"), lucent-style ("layer3_1_conv2"), "input" or "output" (the model's own
    output, e.g. a saliency map). ``preprocess`` maps the [0, 1] RGB image to what the model takes
    (normalisation, a grey channel, a resize to a fixed input size); default identity -- use
    :func:`imagenet_normalise` for torchvision ImageNet models. The model runs in eval mode, its mode
    and ``.grad`` are left as they were, and all hooks are removed.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"feature visualisation needs a torch.nn.Module with named layers; got {type(model).__name__}")
    if size < 8 or steps < 1:
        raise ValueError(f"size must be >= 8 pixels and steps >= 1; got size={size}, steps={steps}")
    if isinstance(objective, (list, tuple)):
        each, batch = [_objectives.as_objective(o) for o in objective], len(objective)
        objective = _objectives.Objective(lambda T: sum(o(_item(T, i)) for i, o in enumerate(each)), name="each")
    else:
        objective = _objectives.as_objective(objective)
    tfms = _transforms(transforms)
    device = _model_device(model)
    features: dict[str, torch.Tensor] = {}
    modules = {name: m for name, m in model.named_modules() if name}
    lucent_names = {name.replace(".", "_"): name for name in modules}

    def T(name: str) -> torch.Tensor:
        key = name if name in features else lucent_names.get(name, name)
        if key not in features:
            known = ["input", "output"] + list(modules)[:15]
            raise ValueError(f"layer {name!r} produced no activation: it is not a layer of the model, or the "
                             f"forward did not reach it. Layer names look like {known}")
        return features[key]

    def hook_for(name):
        def hook(_module, _inputs, output):
            # a module called twice per forward (e.g. a shared ReLU) keeps its last output, as in lucent
            features[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    np_state = np.random.get_state()  # lucent's transforms draw from numpy's global generator
    was_training = model.training
    handles = [m.register_forward_hook(hook_for(name)) for name, m in modules.items()]
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed)
            np.random.seed(seed)
            # lucent creates its tensors on "cuda:0" whenever CUDA exists; we move the image to the model
            params, image_f = _param.image(size, batch=batch, decorrelate=decorrelate, fft=fft)
            optimiser = torch.optim.Adam(params, lr=lr)
            model.eval()
            for _ in range(steps):
                optimiser.zero_grad()
                image = image_f()
                x = image
                for t in tfms:
                    x = t(x)
                x = x.to(device)
                if preprocess is not None:
                    x = preprocess(x)
                features.clear()
                features["input"] = image
                out = model(x)
                features["output"] = out[0] if isinstance(out, (tuple, list)) else out
                loss = objective(T)
                # grad w.r.t. the image parameters only: the caller's model.grad stays untouched
                for p, g in zip(params, torch.autograd.grad(loss, params)):
                    p.grad = g
                optimiser.step()
            result = image_f().detach().cpu().numpy().transpose(0, 2, 3, 1)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        np.random.set_state(np_state)
    result = np.clip(result.astype(np.float64), 0.0, 1.0)
    return result[0] if batch == 1 else result


def render_each(model: torch.nn.Module, objectives: dict, **options) -> dict[str, np.ndarray]:
    """``{title: render(model, objective)}`` for every objective, optimised as one batch (one
    forward and backward pass per step for all of them: 2-3x faster than one by one on a CPU)."""
    if not objectives:
        return {}
    images = render(model, list(objectives.values()), **options)
    images = images[None] if len(objectives) == 1 else images
    return dict(zip(objectives, images))


def _item(T: Callable, i: int) -> Callable:
    """``T`` (layer name -> activations of the batch) restricted to image ``i``."""
    return lambda name: T(name)[i:i + 1]


def channel(model: torch.nn.Module, layer: str, index: int, **options) -> np.ndarray:
    """Image that maximises the mean activation of channel ``index`` of ``layer`` (all positions)."""
    return render(model, _objectives.channel(layer, int(index)), **options)


def neuron(model: torch.nn.Module, layer: str, index: int, *, x: int | None = None, y: int | None = None,
           **options) -> np.ndarray:
    """Image that maximises channel ``index`` of ``layer`` at one position (column ``x``, row ``y``;
    default the centre). For a 2-D (B, features) layer this is the unit itself."""

    def objective(T):
        acts = T(layer)
        if acts.ndim == 2:
            return -acts[:, index].mean()
        h, w = acts.shape[-2:]
        # lucent's _extract_act_pos swaps x and y on non-square maps; index explicitly instead
        col, row = (w // 2 if x is None else x), (h // 2 if y is None else y)
        return -acts[:, index, row, col].mean()

    return render(model, _objectives.Objective(objective, name=f"neuron {layer}:{index}"), **options)


def direction(model: torch.nn.Module, layer: str, vector, **options) -> np.ndarray:
    """Image whose ``layer`` activations align (cosine similarity over channels, averaged over
    positions) with ``vector``, e.g. a probe's weight vector or a concept direction (Kim et al. 2018,
    TCAV). Works for (B, C, H, W) and (B, C) layers."""
    vec = torch.as_tensor(np.asarray(vector, dtype=np.float32)).flatten()
    if vec.norm() == 0:
        raise ValueError("direction vector is all zeros")

    def objective(T):
        acts = T(layer)
        if acts.shape[1] != vec.numel():
            raise ValueError(f"direction has {vec.numel()} entries but layer {layer!r} has {acts.shape[1]} channels")
        v = vec.to(acts.device).view(1, -1, *([1] * (acts.ndim - 2)))
        return -torch.nn.functional.cosine_similarity(acts, v, dim=1).mean()

    return render(model, _objectives.Objective(objective, name=f"direction {layer}"), **options)
