"""The incident's labelled images, by profile.

- ``quick``: the 540 FairFace head-and-shoulders photos pinned in :mod:`autopsy.data`
  (race x gender labels: the paper's four groups plus FairFace's other groups);
- ``paper``: WikiCeleb, rebuilt from Wikidata and Wikimedia Commons by :mod:`.wikiceleb`;
- ``custom``: a researcher's own folder of labelled photos (``--images DIR --labels CSV``).

Labels are perceived attributes annotated by others (see ``autopsy.data.PERCEIVED_LABELS_NOTE``).
"""

from autopsy.data import FAIRFACE_CONTEXT, labelled_folder, load_image_set


def assets(profile: str = "quick"):
    if profile == "quick":
        return FAIRFACE_CONTEXT.assets()
    if profile == "paper":
        return []  # WikiCeleb files are pinned in a lock file on first fetch (see wikiceleb.py)
    raise ValueError(f"unknown profile {profile!r}; choose quick or paper")


def load(profile: str = "quick", *, images=None, labels=None, limit_per_group=None):
    """The profile's images as a ``datasets.Dataset`` with ``path``, ``race`` and ``gender``."""
    if images is not None or labels is not None:
        return labelled_folder(images, labels)
    if profile == "quick":
        return load_image_set(FAIRFACE_CONTEXT, limit_per_group=limit_per_group)
    if profile == "paper":
        from incidents.twitter_crop import wikiceleb

        return wikiceleb.load(limit_per_group=limit_per_group)
    raise ValueError(f"unknown profile {profile!r}; choose quick or paper, or pass images and labels")
