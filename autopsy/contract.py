"""The incident contract: what an incident package declares, and all the runner needs.

An incident is a small, typed plug-in. Its package exports one ``INCIDENT = Incident(...)`` that
names:

- **what happened**: ``slug``, ``title``, ``date``, ``harm``, ``aiid`` and the ``story`` (Markdown);
- **what it pins**: :class:`Weights` for each model (torchvision-style: the file, how inputs are
  prepared and the published metadata, declared once) and ``assets(config)`` for its data;
- **how to build its models**: ``models = {"name": build}``, every builder with one signature,
  ``build(*, weights=PIN | None)``; ``weights=None`` gives random parameters and reads no file;
- **its settings**: one frozen :class:`Config` subclass, with named ``profiles`` (``smoke`` for
  tests, ``quick`` the default, ``paper`` the published protocol at full size);
- **its investigation**: an ordered tuple of :class:`Stage` (plain functions, see below) whose last
  stage returns :class:`Findings` holding the incident's typed metrics record;
- **its explorer**: the dotted name of the app page module.

A stage is ``func(ctx, **earlier)``: ``ctx`` is the :class:`~autopsy.runner.RunContext` (config,
the run's output folder, progress, the engine that maps work over items) and every further
parameter is named after an earlier stage whose output it receives. The runner
(:mod:`autopsy.runner`) sequences, times, reports progress for, saves and resumes stages.

See ``docs/adding_an_incident.md`` and the complete minimal incident in ``tests/fixtures/``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from autopsy.assets import Asset, fetch


class ContractError(RuntimeError):
    """An incident package does not satisfy the contract; the message names the incident and the fix."""


# -- pinned weights ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Pretrained weights pinned once: the file(s), the input transform, the published metadata.

    ``transforms`` describes how an image becomes the model's input (sizes, colour order, means);
    code that prepares inputs reads it from here, never from a second copy. ``meta`` holds what
    the publication states (task, classes, accuracy, paper) and travels into reports.
    """

    name: str
    files: tuple[Asset, ...]
    transforms: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.files, Asset):
            object.__setattr__(self, "files", (self.files,))
        if not self.files:
            raise ValueError(f"weights {self.name!r} pin no file")

    @property
    def asset(self) -> Asset:
        """The single pinned file (an error if the weights span several)."""
        if len(self.files) != 1:
            raise ValueError(f"weights {self.name!r} have {len(self.files)} files; use .files")
        return self.files[0]

    def fetch(self) -> Path:
        """The verified local path of the (single) pinned file: cache, mirror, then network."""
        return fetch(self.asset)


def weights_of(value) -> Weights | None:
    """Accept a :class:`Weights`, an enum member holding one (``FastGaze.TWITTER``) or None."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, Weights):
        raise TypeError(f"weights must be a pinned Weights (or an enum of them) or None, got {value!r}")
    return value


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Settings every investigation shares. Incidents subclass it (all fields with defaults).

    ``images``/``labels`` select a bring-your-own run (a folder and a CSV ``file,race,gender``);
    they are the user's local paths and never enter the run record.
    """

    seed: int = 42
    n_bootstrap: int = 2000
    limit_per_group: int | None = None  # at most N photos per race x gender group (small runs)
    images: str | None = None
    labels: str | None = None
    carbon_country: str | None = None  # ISO 3166-1 alpha-3 grid for the run's emissions (None: $AUTOPSY_CARBON_COUNTRY or FRA)

    LOCAL_FIELDS = ("images", "labels")

    @property
    def custom(self) -> bool:
        return self.images is not None or self.labels is not None

    def replace(self, **changes) -> "Config":
        """A copy with ``changes``; unknown names are an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)} for {type(self).__name__}; "
                             f"known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items()})

    def to_dict(self, *, local: bool = False) -> dict:
        """The settings as plain data (tuples as lists); the local paths only if ``local``."""
        out = {}
        for f in fields(self):
            if not local and f.name in self.LOCAL_FIELDS:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _coerce(config: Config, name: str, value):
    """YAML gives lists where the dataclass holds tuples (tuples keep configs hashable and frozen)."""
    current = getattr(config, name)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


# -- stages and findings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One named step of an investigation: ``func(ctx, **outputs_of_earlier_stages)``.

    ``share`` is the stage's rough part of the run time (for progress). ``save=False`` for stages
    that are cheaper to recompute than to store (loading photos); their outputs are rebuilt when a
    run resumes.
    """

    name: str
    func: Callable
    share: float = 1.0
    save: bool = True

    @property
    def needs(self) -> tuple[str, ...]:
        params = list(inspect.signature(self.func).parameters)
        return tuple(params[1:])

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.func) or self.name
        return doc.splitlines()[0]


@dataclass(frozen=True)
class Findings:
    """What the last stage returns: the typed metrics record, story tables, and figure captions.

    ``metrics`` is the incident's own frozen dataclass (its fields are what the story's
    placeholders can reference); ``figures`` maps file names under the run's output folder to
    captions; ``summary`` holds a few lines for the command line.
    """

    metrics: Any
    tables: Mapping[str, list] = field(default_factory=dict)
    figures: Mapping[str, str] = field(default_factory=dict)
    summary: tuple[str, ...] = ()


# -- the incident ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One reproduced incident. See the module docstring for what each field means."""

    slug: str
    title: str
    date: str
    harm: str  # one line, for cards and listings
    story: Path
    config: type[Config]
    profiles: Mapping[str, Config]
    stages: tuple[Stage, ...]
    metrics: type  # the typed metrics record (a dataclass) the last stage returns in Findings
    assets: Callable[[Config], list[Asset]]  # every pinned file a run of this config reads
    models: Mapping[str, Callable] = field(default_factory=dict)  # name -> build(*, weights=PIN | None)
    weights: Mapping[str, Weights] = field(default_factory=dict)  # name -> the default pin of each model
    aiid: int | None = None
    explorer: str | None = None  # dotted name of the app page module, if any

    def __post_init__(self):
        check(self)

    @property
    def default_profile(self) -> str:
        return "quick" if "quick" in self.profiles else next(iter(self.profiles))

    def settings(self, profile: str | None = None, overrides: Mapping | None = None) -> Config:
        """The frozen config of ``profile`` (default: quick) with ``overrides`` applied."""
        profile = profile or self.default_profile
        if profile not in self.profiles:
            raise ValueError(f"{self.slug} has no profile {profile!r}; choose one of {', '.join(self.profiles)}")
        return self.profiles[profile].replace(**dict(overrides or {}))

    def profile_of(self, config: Config) -> str:
        """The profile a config was made from ('custom' for bring-your-own, else the closest by name)."""
        if config.custom:
            return "custom"
        for name, base in self.profiles.items():
            if base == config:
                return name
        return "custom" if config.custom else "modified"

    def build(self, name: str | None = None, *, weights="default"):
        """Build model ``name`` (default: the first) with its default pin, a given pin, or None."""
        name = name or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"{self.slug} has no model {name!r}; models: {', '.join(self.models)}")
        pin = self.weights.get(name) if weights == "default" else weights
        return self.models[name](weights=pin)


def check(incident: Incident) -> None:
    """Raise :class:`ContractError` naming what is wrong with ``incident``, if anything."""
    who = f"incident {incident.slug!r}"
    if not dataclasses.is_dataclass(incident.config) or not issubclass(incident.config, Config):
        raise ContractError(f"{who}: config must be a frozen dataclass subclassing autopsy.contract.Config")
    if not incident.config.__dataclass_params__.frozen:
        raise ContractError(f"{who}: config {incident.config.__name__} must be frozen (@dataclass(frozen=True))")
    if not incident.profiles:
        raise ContractError(f"{who}: declare at least one profile (smoke, quick, paper)")
    for name, config in incident.profiles.items():
        if not isinstance(config, incident.config):
            raise ContractError(f"{who}: profile {name!r} is a {type(config).__name__}, not {incident.config.__name__}")
    if "smoke" not in incident.profiles:
        raise ContractError(f"{who}: declare a 'smoke' profile (tiny, for tests)")
    if not incident.stages:
        raise ContractError(f"{who}: declare its investigation as a tuple of Stage")
    seen: list[str] = []
    for stage in incident.stages:
        if not isinstance(stage, Stage):
            raise ContractError(f"{who}: {stage!r} is not a Stage")
        if stage.name in seen:
            raise ContractError(f"{who}: two stages are called {stage.name!r}")
        missing = [n for n in stage.needs if n not in seen]
        if missing:
            raise ContractError(f"{who}: stage {stage.name!r} needs {', '.join(missing)}, which no earlier stage "
                                f"produces (earlier: {', '.join(seen) or 'none'})")
        seen.append(stage.name)
    if not dataclasses.is_dataclass(incident.metrics):
        raise ContractError(f"{who}: metrics must be a dataclass type (the typed record the story reads)")
    for name, build in incident.models.items():
        params = inspect.signature(build).parameters
        if "weights" not in params or params["weights"].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ContractError(f"{who}: model builder {name!r} must take keyword-only `weights=` "
                                "(a pinned Weights, or None for random parameters)")
    unknown = set(incident.weights) - set(incident.models)
    if unknown:
        raise ContractError(f"{who}: weights given for unknown model(s) {', '.join(sorted(unknown))}")
