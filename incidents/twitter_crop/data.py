"""The incident's labelled images, by profile.

- ``quick`` and ``smoke``: the 540 FairFace head-and-shoulders photos pinned in :mod:`autopsy.data`
  (race x gender labels: the paper's four groups plus FairFace's other groups);
- ``paper``: WikiCeleb, rebuilt from Wikidata and Wikimedia Commons by :mod:`.wikiceleb`;
- bring-your-own: a researcher's own folder of labelled photos (``--images DIR --labels CSV``).

Labels are perceived attributes annotated by others (see ``autopsy.data.PERCEIVED_LABELS_NOTE``).
"""

from autopsy.data import FAIRFACE_CONTEXT, Exclusions, exclude, labelled_folder, load_image_set, select_per_group
from incidents.twitter_crop.model import FASTGAZE


def assets(config) -> list:
    """Every pinned file a run of ``config`` reads (WikiCeleb pins its files in a lock file on first fetch)."""
    if config.custom or config.source == "wikiceleb":
        return [FASTGAZE]
    return [FASTGAZE, *FAIRFACE_CONTEXT.assets()]


def load(config):
    """The configured photos as a ``datasets.Dataset`` with ``file``, ``path``, ``race`` and ``gender``."""
    return load_with_exclusions(config)[0]


def load_with_exclusions(config):
    """``(dataset, exclusions)``: the configured photos and the record of those left out (and why)."""
    if config.custom:
        if not (config.images and config.labels):
            raise ValueError("bring-your-own needs both images (a folder) and labels (a CSV with file,race,gender)")
        return select_per_group(labelled_folder(config.images, config.labels), config.limit_per_group)
    if config.source == "wikiceleb":
        from incidents.twitter_crop import wikiceleb

        dataset = wikiceleb.load(limit_per_group=config.limit_per_group)
    else:
        dataset = load_image_set(FAIRFACE_CONTEXT, limit_per_group=config.limit_per_group)
    return dataset, Exclusions(len(dataset))
