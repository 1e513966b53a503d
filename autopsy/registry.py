"""Discovery of incidents: a plain loop over the sub-packages of ``incidents`` (or ``$AUTOPSY_INCIDENTS``).

Each incident package exposes a module-level ``INCIDENT`` (an :class:`autopsy.contract.Incident`);
the result is a dict keyed by slug. A package without ``INCIDENT`` is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import os

from autopsy.contract import Incident

PACKAGE_ENV = "AUTOPSY_INCIDENTS"


class RegistryError(RuntimeError):
    """Two incidents claim one slug, or an incident package is malformed."""


def discover(package: str | None = None) -> dict[str, Incident]:
    """Import every sub-package of ``package`` (default ``$AUTOPSY_INCIDENTS`` or ``incidents``) and
    collect its ``INCIDENT``."""
    package = package or os.environ.get(PACKAGE_ENV) or "incidents"
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
    """The incident called ``slug``: from ``incidents``, else its own package when the package is
    named after the slug (importing one incident, not all: a run starts ~1.5 s sooner), else by
    :func:`discover`."""
    if incidents is None:
        package = os.environ.get(PACKAGE_ENV) or "incidents"
        if slug.isidentifier() and importlib.util.find_spec(f"{package}.{slug}") is not None:
            incident = getattr(importlib.import_module(f"{package}.{slug}"), "INCIDENT", None)
            if isinstance(incident, Incident) and incident.slug == slug:
                return incident
        incidents = discover()
    if slug not in incidents:
        known = ", ".join(sorted(incidents)) or "none"
        raise RegistryError(f"no incident called {slug!r}; known incidents: {known} (see `autopsy list`)")
    return incidents[slug]
