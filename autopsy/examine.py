"""The autopsy sequence in one call: attribution, its sanity checks, feature visualisation, probes.

Every incident examines its model the same way, and :func:`examine` runs that sequence:

1. **attribution** of a target (one callable for the batch, or one per input) to the input pixels
   with Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks"),
   Grad-CAM on a named layer (Selvaraju et al. 2017) and occlusion with a square window (Zeiler &
   Fergus 2014), through :func:`autopsy.saliency.attribute`; optionally the share of the
   attribution mass in named regions of each input;
2. the **cascading parameter-randomisation check** of Adebayo et al. (NeurIPS 2018), "Sanity Checks
   for Saliency Maps", on the first input (an optional layer cascade);
3. **deletion / insertion faithfulness** of the first input's map (Petsiuk et al., BMVC 2018, "RISE");
4. **feature visualisation** of given objectives (Olah et al. 2017, Distill), :mod:`autopsy.featviz`;
5. **probes** of given feature sets with a shuffled-label control (Hewitt & Liang, EMNLP 2019,
   "Designing and Interpreting Probes with Control Tasks"), :mod:`autopsy.probes`.

Each part is skipped when its option is empty (no inputs, ``randomisation=False``,
``faithfulness_steps=0``, no objectives, no probes). The result is a frozen :class:`Examination`:
:meth:`~Examination.metrics` is the plain-JSON view an incident puts in its metrics record and
:meth:`~Examination.tables` the story's tables (their estimates are :class:`~autopsy.stats.Estimate`
records, which the run record serialises), so no incident builds them twice; nothing is written to disk.

Example::

    found = examine(model, images, target=lambda out: out.flatten(1).amax(1), layer="conv2", window=8,
                    objectives={"channel 0": "conv2:0"}, probes={"conv1": (features, labels)})
    found.metrics()["randomisation_check"]["passed"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from autopsy import featviz, probes as _probes, saliency
from autopsy.probes import ProbeResult
from autopsy.saliency import Faithfulness, RandomisationCheck

__all__ = ["ATTRIBUTION_METHODS", "Examination", "ProbeOutcome", "examine", "region_shares"]

#: The attribution methods the sequence runs by default: one path method, one layer method, one
#: gradient-free method, so that a map all three agree on does not hinge on one method's artefacts.
ATTRIBUTION_METHODS = ("integrated_gradients", "grad_cam", "occlusion")
#: captum options per method unless the caller gives others (IG: four scaled inputs per forward).
DEFAULT_OPTIONS = {"integrated_gradients": {"internal_batch_size": 4}}


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe: its result and the folds it used, or why it was skipped."""

    result: ProbeResult | None
    cv: int | None = None
    skipped: str | None = None

    def to_dict(self) -> dict:
        if self.result is None:
            return {"skipped": self.skipped}
        return {**self.result.to_dict(), "n_classes": len(self.result.class_counts), "cv": self.cv}


@dataclass(frozen=True)
class Examination:
    """What :func:`examine` found. Arrays are per input in the order given."""

    methods: tuple[str, ...]
    maps: Mapping[str, np.ndarray] = field(default_factory=dict)  # method -> (B, C, H, W); Grad-CAM C = 1
    shares: tuple[Mapping[str, Mapping[str, float]], ...] = ()  # per input: method -> region -> share
    randomisation: RandomisationCheck | None = None
    faithfulness: Faithfulness | None = None
    renders: Mapping[str, np.ndarray] = field(default_factory=dict)  # title -> (H, W, 3) in [0, 1]
    probes: Mapping[str, ProbeOutcome] = field(default_factory=dict)

    def metrics(self) -> dict:
        """The sanity checks' verdicts and the probes as plain JSON data, for an incident's metrics record."""
        out: dict = {}
        if self.randomisation is not None:
            check = self.randomisation
            out["randomisation_check"] = {"method": check.method, "passed": check.passed, "reason": check.reason,
                                          "final_spearman": float(check.steps["spearman"].iloc[-1]),
                                          "n_layers": int(len(check.steps))}
        if self.faithfulness is not None:
            out["faithfulness"] = {k: v for k, v in self.faithfulness.to_dict().items() if not isinstance(v, list)}
        if self.probes:
            out["probe"] = {name: outcome.to_dict() for name, outcome in self.probes.items()}
        return out

    def tables(self, *, items: Sequence[Mapping] | None = None, probe_column: str = "probe",
               max_steps: int | None = 8) -> dict[str, list[dict]]:
        """Story tables: attribution shares (``items`` adds columns per input), every k-th step of the
        randomisation cascade so that about ``max_steps`` rows remain (None: every step), and one row
        per probe (named in the column ``probe_column``)."""
        out: dict[str, list[dict]] = {}
        if self.shares:
            if items is not None and len(items) != len(self.shares):
                raise ValueError(f"items describe {len(items)} inputs but {len(self.shares)} were examined")
            out["attribution_shares"] = [
                _rounded({**(items[k] if items is not None else {"input": k}), "method": method.replace("_", " "),
                          **regions})
                for k, per_method in enumerate(self.shares) for method, regions in per_method.items()]
        if self.randomisation is not None:
            steps = self.randomisation.steps
            every = 1 if max_steps is None else max(1, len(steps) // max_steps)
            out["randomisation_steps"] = steps.iloc[::every].round(3).to_dict(orient="records")
        if self.probes:
            out["probe"] = [_probe_row(probe_column, name, outcome) for name, outcome in self.probes.items()]
        return out


def _rounded(row: dict) -> dict:
    return {k: float(np.round(v, 3)) if isinstance(v, (float, np.floating)) else v for k, v in row.items()}


def _probe_row(column: str, name: str, outcome: ProbeOutcome) -> dict:
    if outcome.result is None:
        return {column: name, "probe accuracy": outcome.skipped}
    r = outcome.result
    return {column: name, "classes": len(r.class_counts), "probe accuracy": r.accuracy,
            "control (shuffled labels)": r.control, "selectivity": r.selectivity, "majority class": r.majority,
            "warning": r.warning}


def region_shares(attribution: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of one input's attribution mass (|values| summed over channels) in each named region
    (a boolean (H, W) mask); regions need not cover the image or be disjoint."""
    mass = np.abs(attribution).sum(0)
    total = max(float(mass.sum()), 1e-12)
    out = {}
    for name, region in regions.items():
        region = np.asarray(region, dtype=bool)
        if region.shape != mass.shape:
            raise ValueError(f"region {name!r} has shape {region.shape}; the map is {mass.shape} (H, W)")
        out[name] = float(mass[region].sum() / total)
    return out


def examine(
    model: torch.nn.Module,
    inputs=None,
    *,
    target=None,
    methods: Sequence[str] = ATTRIBUTION_METHODS,
    layer=None,
    window: int | None = None,
    steps: int = 16,
    method_options: Mapping[str, Mapping] | None = None,
    regions: Sequence[Mapping[str, np.ndarray]] | None = None,
    randomisation: bool = True,
    cascade: Sequence | None = None,
    faithfulness_steps: int = 10,
    faithfulness_of: str = "integrated_gradients",
    n_random: int = 2,
    faithfulness_batch: int = 64,
    objectives: Mapping[str, object] | None = None,
    featviz_size: int = 64,
    featviz_steps: int = 64,
    preprocess: Callable | None = None,
    probes: Mapping[str, tuple] | None = None,
    probe_cv: int = 5,
    seed: int = 0,
    check_seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> Examination:
    """Run the autopsy sequence on ``model`` (see the module docstring); returns an :class:`Examination`.

    ``inputs`` is a (B, C, H, W) batch (None: no attribution and no sanity checks). ``target`` maps
    the model output to one scalar per item: one callable for the whole batch, or a sequence of B
    callables, one per input (each input is then attributed on its own). ``layer`` names Grad-CAM's
    layer; ``window`` is occlusion's square, non-overlapping window in pixels; ``steps`` are
    Integrated Gradients' steps; ``method_options`` adds captum options per method (e.g.
    ``{"occlusion": {"perturbations_per_eval": 8}}``). ``regions`` (one mapping name -> boolean
    (H, W) mask per input) adds the attribution shares. The randomisation check (``cascade``: its
    layers, output side first; default every parametrised layer) and deletion/insertion
    (``faithfulness_steps``, of the ``faithfulness_of`` map) run on the first input, with random
    draws from ``check_seed``. ``objectives`` maps a title to a feature-visualisation objective
    ("layer:channel" or a lucent objective), rendered at ``featviz_size`` px for ``featviz_steps``
    with ``preprocess``. ``probes`` maps a name to ``(features (n, d), labels (n,))``: a probe with
    ``min(probe_cv, smallest class)`` folds and its shuffled-label control, skipped with a reason
    when a class has fewer than two items. ``seed`` seeds feature visualisation and probes.
    """
    report = progress or (lambda fraction, message: None)
    methods = tuple(methods) if inputs is not None else ()
    _check_options(methods, layer, faithfulness_of, faithfulness_steps)
    x, targets = _batch_and_targets(inputs, target)
    maps, shares, check, faith = {}, (), None, None
    if x is not None:
        report(0.0, "attribution")
        maps = _attribute_all(model, x, targets, methods, layer=layer, window=window, steps=steps,
                              options=method_options or {})
        if regions is not None:
            if len(regions) != len(x):
                raise ValueError(f"regions are given for {len(regions)} inputs but there are {len(x)}")
            shares = tuple({m: region_shares(maps[m][k], regions[k]) for m in methods} for k in range(len(x)))
        if randomisation:
            report(0.5, "randomisation check (Adebayo et al. 2018)")
            check = saliency.randomisation_check(model, x[:1], target=targets[0], method="gradient",
                                                 layers=cascade, seed=check_seed)
        if faithfulness_steps:
            report(0.6, "deletion and insertion (Petsiuk et al. 2018)")
            faith = saliency.faithfulness(model, x[:1], maps[faithfulness_of][:1], target=targets[0],
                                          steps=faithfulness_steps, n_random=n_random, seed=check_seed,
                                          batch_size=faithfulness_batch)
    report(0.7, "feature visualisation")
    renders = featviz.render_each(model, dict(objectives or {}), size=featviz_size, steps=featviz_steps, seed=seed,
                                  preprocess=preprocess)
    report(0.9, "probes with a control task")
    found = {name: _probe(features, labels, cv=probe_cv, seed=seed) for name, (features, labels) in (probes or {}).items()}
    report(1.0, "done")
    return Examination(methods, maps, shares, check, faith, renders, found)


def _check_options(methods, layer, faithfulness_of, faithfulness_steps) -> None:
    known = saliency.GRADIENT_METHODS + saliency.PERTURBATION_METHODS
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown attribution method(s) {unknown}; choose from {known}")
    if "grad_cam" in methods and layer is None:
        raise ValueError("Grad-CAM needs layer= (a dotted layer name, usually the last convolution); "
                         "or leave 'grad_cam' out of methods")
    if faithfulness_steps and methods and faithfulness_of not in methods:
        raise ValueError(f"faithfulness_of={faithfulness_of!r} is not among the methods {methods}; "
                         "add it, name another, or pass faithfulness_steps=0")


def _batch_and_targets(inputs, target):
    if inputs is None:
        return None, None
    x = torch.from_numpy(inputs) if isinstance(inputs, np.ndarray) else inputs
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise ValueError("inputs must be a non-empty batch (B, C, H, W) tensor or array, or None to skip attribution")
    if callable(target) or target is None or isinstance(target, (int, np.integer)):
        return x, [target] * len(x)
    targets = list(target)
    if len(targets) != len(x) or not all(callable(t) for t in targets):
        raise ValueError(f"target must be one callable or a sequence of one callable per input; got "
                         f"{len(targets)} target(s) for {len(x)} inputs")
    return x, targets


def _attribute_all(model, x, targets, methods, *, layer, window, steps, options) -> dict[str, np.ndarray]:
    """Maps per method; inputs with their own targets are attributed one at a time."""
    shared = all(t is targets[0] for t in targets)
    maps = {}
    for method in methods:
        kwargs = {**DEFAULT_OPTIONS.get(method, {}), **dict(options.get(method, {}))}
        if method == "integrated_gradients":
            kwargs.setdefault("n_steps", steps)
        elif method == "grad_cam":
            kwargs["layer"] = layer
        elif method == "occlusion" and window is not None:
            channels = x.shape[1]
            kwargs.setdefault("sliding_window_shapes", (channels, window, window))
            kwargs.setdefault("strides", (channels, window, window))
        if shared:
            maps[method] = saliency.attribute(model, x, target=targets[0], method=method, **kwargs)
        else:
            maps[method] = np.concatenate([saliency.attribute(model, x[k:k + 1], target=t, method=method, **kwargs)
                                           for k, t in enumerate(targets)])
    return maps


def _probe(features, labels, *, cv: int, seed: int) -> ProbeOutcome:
    labels = np.asarray(labels).astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        return ProbeOutcome(None, skipped=f"skipped: a probe needs at least 2 classes with 2 items each; got "
                                          f"{dict(zip(classes.tolist(), counts.tolist()))}")
    folds = int(min(cv, counts.min()))
    return ProbeOutcome(_probes.probe(features, labels, cv=folds, seed=seed), cv=folds)
