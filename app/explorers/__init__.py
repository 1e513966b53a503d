"""Interactive explorers, one module per incident slug; each module defines ``show(lab, incident)``.

An incident may name its own explorer module (``Incident.explorer``); otherwise this table is used.
"""

from __future__ import annotations

import importlib

EXPLORERS = {
    "twitter_crop": "app.explorers.twitter_crop",
    "zoom_matting": "app.explorers.zoom_matting",
}


def module_name(incident) -> str | None:
    return incident.explorer or EXPLORERS.get(incident.slug)


def load(incident):
    """The explorer module of ``incident``, or None if it has none (import errors propagate)."""
    name = module_name(incident)
    return importlib.import_module(name) if name else None
