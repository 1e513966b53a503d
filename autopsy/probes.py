"""Auxiliary classifiers ("probes") on a model's internal activations, with control tasks.

A probe asks whether a concept (perceived skin tone, gender, ...) can be read linearly from a
layer. High probe accuracy alone is weak evidence: a flexible probe can memorise. Hewitt & Liang
(EMNLP 2019), "Designing and Interpreting Probes with Control Tasks", compare it with the same probe
trained on a control task; here the control is the same labels shuffled (same class balance), so
selectivity = probe accuracy - control accuracy. See also Alain & Bengio (2016), "Understanding
intermediate layers using linear classifier probes".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from autopsy.stats import Estimate, bootstrap, wilson_interval

__all__ = ["activations", "probe", "ProbeResult"]

MIN_CLASS_SIZE = 10


def _module(model: torch.nn.Module, layer) -> torch.nn.Module:
    if isinstance(layer, torch.nn.Module):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module or a dotted name such as 'layer3.1'; got {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"the model has no layer named {layer!r}; names look like {names}") from None


def _pool(t: torch.Tensor, pool: str | None) -> torch.Tensor:
    if pool is None or t.ndim <= 2:
        return t.flatten(1)
    if pool == "mean":
        return t.flatten(2).mean(2)  # average over spatial (or sequence) positions, one value per channel
    if pool == "max":
        return t.flatten(2).amax(2)
    raise ValueError(f"pool must be 'mean', 'max' or None; got {pool!r}")


def activations(
    model: torch.nn.Module,
    layer,
    batches,
    *,
    pool: str | None = "mean",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Activations of ``layer`` (module or dotted name) for every input, as an (N, features) array.

    ``batches`` is a tensor or an iterable of tensors (or of (tensor, ...) tuples, e.g. a DataLoader;
    the first element is the input). ``pool="mean"`` averages (B, C, ...) activations over positions to
    (B, C); ``None`` flattens them. Inputs are moved to ``device``; the model is expected there. The
    model runs in eval mode under ``torch.no_grad`` and its mode is restored; the forward hook is always
    removed, even if the forward fails.
    """
    if pool not in ("mean", "max", None):
        raise ValueError(f"pool must be 'mean', 'max' or None; got {pool!r}")
    module = _module(model, layer)
    if isinstance(batches, (torch.Tensor, np.ndarray)):
        batches = [batches]
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        captured.append(_pool(output.detach(), pool).cpu())

    was_training = model.training
    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, (tuple, list)):
                    batch = batch[0]
                if isinstance(batch, np.ndarray):
                    batch = torch.from_numpy(batch)
                model(batch.to(device))
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise ValueError("no activations were captured: batches was empty, or the layer is not used by the forward")
    return torch.cat(captured).numpy()


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated probe accuracy against a shuffled-label control (Hewitt & Liang 2019)."""

    accuracy: Estimate
    control: Estimate | None
    selectivity: Estimate | None  # probe - control, paired bootstrap over items
    majority: float  # accuracy of always predicting the most frequent class
    class_counts: dict
    warning: str | None = None

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy.to_dict(),
            "control": None if self.control is None else self.control.to_dict(),
            "selectivity": None if self.selectivity is None else self.selectivity.to_dict(),
            "majority": float(self.majority),
            "class_counts": {str(k): int(v) for k, v in self.class_counts.items()},
            "warning": self.warning,
        }


def probe(
    features,
    labels,
    *,
    cv: int = 5,
    seed: int = 0,
    control: str | None = "shuffle",
    C: float = 1.0,
    level: float = 0.95,
) -> ProbeResult:
    """Cross-validated, standardised logistic-regression probe of ``labels`` from ``features``.

    Accuracy is over the n held-out predictions (each item predicted once, by the fold that did not
    train on it) with a Wilson interval. ``control="shuffle"`` trains the same probe on a permutation
    of the labels (same class balance, no relation to the features); selectivity is the accuracy
    difference with a paired bootstrap interval over items. A class with fewer than 10 examples is
    named in ``warning``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n_items, n_features); got shape {x.shape} -- flatten or pool them")
    if len(y) != len(x):
        raise ValueError(f"features and labels disagree: {len(x)} rows of features, {len(y)} labels")
    if control not in ("shuffle", None):
        raise ValueError(f"control must be 'shuffle' or None; got {control!r}")
    classes, counts = np.unique(y, return_counts=True)
    class_counts = dict(zip(classes.tolist(), counts.tolist()))
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least two classes; labels only contain {classes.tolist()}")
    if counts.min() < cv:
        raise ValueError(f"class {classes[counts.argmin()]!r} has {counts.min()} examples, fewer than cv={cv} "
                         "folds; lower cv or collect more examples")
    small = [f"{c!r} ({n})" for c, n in class_counts.items() if n < MIN_CLASS_SIZE]
    warning = (f"classes with fewer than {MIN_CLASS_SIZE} examples: {', '.join(small)}; accuracy is unstable"
               if small else None)

    def held_out_correct(targets: np.ndarray) -> np.ndarray:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
        return cross_val_predict(clf, x, targets, cv=folds) == targets

    def wilson(correct: np.ndarray, test: str) -> Estimate:
        low, high = wilson_interval(int(correct.sum()), len(correct), level=level)
        return Estimate(float(correct.mean()), low, high, len(correct), test, level=level, warning=warning)

    n = len(y)
    correct = held_out_correct(y)
    accuracy = wilson(correct, f"{cv}-fold CV logistic regression; Wilson {level:.0%} over held-out predictions")
    control_est = selectivity = None
    if control == "shuffle":
        shuffled = np.random.default_rng(seed).permutation(y)
        control_correct = held_out_correct(shuffled)
        control_est = wilson(control_correct, "same probe on shuffled labels (Hewitt & Liang 2019); "
                             f"Wilson {level:.0%}")
        resamples = 2000
        low, high = bootstrap(lambda a, b: a.mean() - b.mean(), correct, control_correct, level=level, seed=seed,
                              n_resamples=resamples)
        selectivity = Estimate(float(correct.mean() - control_correct.mean()), low, high, n,
                               f"probe - control accuracy; paired bootstrap over items ({resamples} resamples)",
                               level=level, warning=warning)
    return ProbeResult(accuracy, control_est, selectivity, float(counts.max() / n), class_counts, warning)
