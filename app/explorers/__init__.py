"""Interactive explorers, one module per incident; each module defines ``show(lab, incident)``.

An incident names its explorer module in its contract (``Incident.explorer``).
"""

from __future__ import annotations

import importlib


def module_name(incident) -> str | None:
    return incident.explorer


def load(incident):
    """The explorer module of ``incident``, or None if it has none (import errors propagate)."""
    name = module_name(incident)
    return importlib.import_module(name) if name else None
