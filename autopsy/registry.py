"""The incident record and its discovery over ``incidents/*``.

Each incident package exposes a module-level ``INCIDENT``. Discovery is a plain loop over the
sub-packages of :mod:`incidents`; the result is a dict keyed by slug.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from autopsy.assets import Asset


class RegistryError(RuntimeError):
    """Two incidents claim one slug, or an incident package is malformed."""


@dataclass(frozen=True)
class Incident:
    """One reproduced incident: what it pins, how to build its model, how to investigate it.

    ``investigate(out_dir, params)`` writes ``metrics/<slug>.json`` and figures under
    ``out_dir`` and returns the metrics dict. ``load_data(profile=...)`` returns the labelled
    set of a profile. ``build_model(weights=None)`` must build without any download.
    """

    slug: str
    title: str
    date: str
    harm: str  # one line, for cards and listings
    assets: Callable[[str], list[Asset]]  # profile -> the pinned artefacts it needs
    build_model: Callable
    load_data: Callable
    investigate: Callable
    story: Path
    profiles: tuple[str, ...] = ("quick", "paper")
    aiid: int | None = None
    explorer: str | None = None  # dotted name of the app page module, if any


def discover(package: str = "incidents") -> dict[str, Incident]:
    """Import every sub-package of ``package`` and collect its ``INCIDENT``."""
    root = importlib.import_module(package)
    found: dict[str, Incident] = {}
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        incident = getattr(module, "INCIDENT", None)
        if incident is None:
            continue
        if not isinstance(incident, Incident):
            raise RegistryError(f"{package}.{info.name}.INCIDENT is a {type(incident).__name__}, not an Incident")
        if incident.slug in found:
            raise RegistryError(
                f"duplicate incident slug {incident.slug!r}: {package}.{info.name} and an earlier package "
                "both register it; give each incident its own slug"
            )
        found[incident.slug] = incident
    return found


def get(slug: str, incidents: dict[str, Incident] | None = None) -> Incident:
    incidents = discover() if incidents is None else incidents
    if slug not in incidents:
        known = ", ".join(sorted(incidents)) or "none"
        raise RegistryError(f"no incident called {slug!r}; known incidents: {known} (see `autopsy list`)")
    return incidents[slug]
