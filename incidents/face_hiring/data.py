"""The candidates and the labels the field used.

- **Candidates**: the 2,800 FairFace face crops pinned in :mod:`autopsy.data`
  (:data:`~autopsy.data.FAIRFACE_CROPS`: 224x224, 200 per perceived race x gender; Kärkkäinen &
  Joo, WACV 2021, CC BY 4.0). Race and gender are perceived attributes annotated by others
  (:data:`~autopsy.data.PERCEIVED_LABELS_NOTE`).
- **Labels**: the ChaLearn First Impressions V2 annotations (Ponce-López et al. 2016; Escalante et
  al. 2018): for each of 10,000 fifteen-second YouTube clips, the Big Five personality traits and
  ``interview`` ("would you invite this person to a job interview?"), scores in [0, 1] derived
  from crowd workers' pairwise comparisons. Only the annotations are pinned (no videos). They are
  Python 2 pickles; :func:`load_annotation_pickle` reads them with a restricted unpickler that
  admits only the two numpy constructors these files use, for float64 values only, so a crafted
  file cannot run code.

The First Impressions data is for **non-commercial research** (:data:`FIRST_IMPRESSIONS_LICENCE`),
and its curators advise against using it to build systems that make decisions about people
(:data:`FIRST_IMPRESSIONS_CAVEAT`); both travel with every table :func:`first_impressions` returns
(``DataFrame.attrs``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd

from autopsy.assets import Asset, fetch
from autopsy.data import (FAIRFACE_CROPS, PERCEIVED_LABELS_NOTE, labelled_folder, load_image_set,
                          select_per_group)

__all__ = [
    "FIRST_IMPRESSIONS",
    "FIRST_IMPRESSIONS_LICENCE",
    "FIRST_IMPRESSIONS_CAVEAT",
    "TRAITS",
    "UnsafePickleError",
    "load_annotation_pickle",
    "first_impressions",
    "candidates",
    "candidate_assets",
    "adult",
    "load",
    "crop_faces",
    "assets",
    "PERCEIVED_LABELS_NOTE",
]

FIRST_IMPRESSIONS_LICENCE = "CC BY-NC 4.0 (non-commercial research)"
FIRST_IMPRESSIONS_CAVEAT = (
    "ChaLearn First Impressions scores are crowd workers' first impressions of 15-second YouTube "
    "clips, not measurements of personality or of suitability for a job. The data is distributed "
    "for non-commercial research (check ChaLearn's terms before any other use), and its curators "
    "advise against using it to build systems that make decisions about people."
)
FIRST_IMPRESSIONS_CITATION = (
    "Ponce-López, V. et al. ChaLearn LAP 2016: First Round Challenge on First Impressions - Dataset and "
    "Results. ECCV Workshops (2016); Escalante, H. J. et al. Explaining First Impressions: Modeling, "
    "Recognizing, and Explaining Apparent Personality from Videos. arXiv:1802.00745 (2018)."
)
_URL = ("https://raw.githubusercontent.com/mterzolo/first-impressions/"
        "b32261398c51cbe0b3eb7ce3d6187a29ea8e697f/data/annotation_{}.pkl")

#: The Big Five, in the usual OCEAN order, then the hiring question.
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
LABEL_COLUMNS = (*TRAITS, "interview")

SPLITS = ("training", "validation", "test")
_PINS = {
    "training": ("cdf3aaccfb8ed217e0f34a40b0560fd5367991c4feba63d94031188da99fb2b6", 793769),
    "validation": ("4393caee5468ae44904598359d84e73ee0cbc9431d9c70465948725084527d77", 261721),
    "test": ("1d758f806581497ee17fdb1bc00c89d37b3321ffd588c3116fad4f8f479f3f4b", 261721),
}

#: The pinned annotation files, by split (6,000 / 2,000 / 2,000 clips).
FIRST_IMPRESSIONS: dict[str, Asset] = {
    split: Asset(
        name=f"first-impressions/annotation_{split}.pkl", url=_URL.format(split), sha256=sha, size=size,
        licence=FIRST_IMPRESSIONS_LICENCE, citation=FIRST_IMPRESSIONS_CITATION,
        source_page="https://github.com/mterzolo/first-impressions",
        mirror_path=f"first-impressions/annotation_{split}.pkl",
    )
    for split, (sha, size) in _PINS.items()
}


# ----------------------------------------------------------------------------------------------
# The restricted unpickler
# ----------------------------------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks for something the annotation files never contain; it is refused, not run."""


def _float_dtype(spec, align=False, copy=True):
    """``numpy.dtype`` as the files call it (``dtype('f8', 0, 1)``), for float dtypes only."""
    if not isinstance(spec, str) or spec not in ("f8", "<f8", "f4", "<f4"):
        raise UnsafePickleError(f"the pickle asks for numpy dtype {spec!r}; only float dtypes are allowed")
    return np.dtype(spec)


def _float_scalar(dtype, data):
    """``numpy.core.multiarray.scalar(dtype, raw bytes)``, for float dtypes and exact-size data."""
    if not isinstance(dtype, np.dtype) or dtype.kind != "f":
        raise UnsafePickleError(f"the pickle builds a numpy scalar of dtype {dtype!r}; only floats are allowed")
    raw = data.encode("latin1") if isinstance(data, str) else data  # Python 2 str arrives as latin-1 text
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise UnsafePickleError(f"the pickle's {dtype} scalar has {len(raw) if isinstance(raw, bytes) else raw!r} "
                                f"bytes, not {dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)[0]


class _AnnotationUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy", "dtype"): _float_dtype,
        ("numpy.core.multiarray", "scalar"): _float_scalar,
        ("numpy._core.multiarray", "scalar"): _float_scalar,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle asks for {module}.{name}, which First Impressions annotation files never "
                "contain; it was refused and nothing in it was run. Use the pinned annotation files."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle uses persistent ids, which annotation files never contain")


def load_annotation_pickle(path) -> dict[str, dict[str, float]]:
    """A First Impressions annotation pickle as ``{label: {clip: score}}`` (plain floats).

    Only numpy float dtypes and scalars may be constructed; any other global, or a payload that is
    not a dict of dicts of numbers, raises :class:`UnsafePickleError` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _AnnotationUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path.name}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise UnsafePickleError(f"{path.name}: not a readable annotation pickle ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UnsafePickleError(f"{path.name}: expected a dict of {{label: {{clip: score}}}}, "
                                f"got {type(data).__name__}")
    out = {}
    for label, scores in data.items():
        if not all(isinstance(k, str) and isinstance(v, (float, np.floating)) for k, v in scores.items()):
            raise UnsafePickleError(f"{path.name}: label {label!r} holds values other than clip -> float")
        out[str(label)] = {k: float(v) for k, v in scores.items()}
    return out


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

_CLIP = re.compile(r"^(?P<video>.+)\.(?P<segment>\d{3})\.mp4$")


def first_impressions(splits=SPLITS) -> pd.DataFrame:
    """The First Impressions annotations as one tidy table, one row per clip.

    Columns: ``split``, ``clip`` (the file name, e.g. ``J4GQm9j0JZ0.003.mp4``), ``video`` (the
    YouTube id), ``segment``, the Big Five (:data:`TRAITS`) and ``interview``. The licence, the
    curators' caveat and the citation are in ``table.attrs``.
    """
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    unknown = [s for s in splits if s not in FIRST_IMPRESSIONS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
    frames = []
    for split in splits:
        labels = load_annotation_pickle(fetch(FIRST_IMPRESSIONS[split]))
        missing = [c for c in LABEL_COLUMNS if c not in labels]
        if missing:
            raise ValueError(f"annotation_{split}.pkl lacks the label(s) {missing}")
        frame = pd.DataFrame({c: pd.Series(labels[c]) for c in LABEL_COLUMNS})
        if frame.isna().any().any():
            raise ValueError(f"annotation_{split}.pkl: some clips lack a score for some labels")
        frame = frame.rename_axis("clip").reset_index()
        parts = frame["clip"].str.extract(_CLIP)
        frame.insert(0, "split", split)
        frame.insert(2, "video", parts["video"])
        frame.insert(3, "segment", parts["segment"].astype("Int64"))
        frames.append(frame.sort_values("clip", kind="stable"))
    table = pd.concat(frames, ignore_index=True)
    table.attrs.update(licence=FIRST_IMPRESSIONS_LICENCE, caveat=FIRST_IMPRESSIONS_CAVEAT,
                       citation=FIRST_IMPRESSIONS_CITATION)
    return table


def candidates(*, limit_per_group: int | None = None):
    """The FairFace face crops as a ``datasets.Dataset`` (``file``, ``path``, ``age``, ``gender``,
    ``race``, ...); ``limit_per_group`` keeps the first N of each perceived race x gender cell."""
    return load_image_set(FAIRFACE_CROPS, limit_per_group=limit_per_group)


def candidate_assets() -> list[Asset]:
    return FAIRFACE_CROPS.assets()


# ----------------------------------------------------------------------------------------------
# The run's candidates
# ----------------------------------------------------------------------------------------------

_AGE_START = re.compile(r"\d+")


def adult(age, min_age: int | None) -> bool:
    """Whether a FairFace age bin ("20-29", "more than 70", "3-9") starts at ``min_age`` or later.

    A missing or unreadable age (a bring-your-own CSV without ages) counts as adult: the user chose
    the photos. ``min_age=None`` keeps everyone.
    """
    if min_age is None or age is None or not str(age).strip():
        return True
    found = _AGE_START.search(str(age))
    return True if found is None else int(found.group()) >= min_age


def load(config) -> tuple[pd.DataFrame, dict]:
    """The run's candidates, one row per face (``file``, ``path``, ``race``, ``gender``, ``age``), and
    the photos left out, by reason and perceived race x gender cell (never dropped silently).

    FairFace crops (the default): minors are left out before the per-cell limit (``min_age``):
    hiring candidates are adults, and so are the people in both published comparisons (NBA players
    in Rhue 2018, parliamentarians in Buolamwini & Gebru 2018). The first ``limit_per_group``
    adults of each cell are kept, in manifest order. Bring-your-own (``config.images`` and
    ``config.labels``): the labelled folder, its first ``limit_per_group`` photos per cell, and an
    ``age`` column applied if the CSV has one.
    """
    left_out: dict = {"minors": {"n": 0}, "over_limit": {"n": 0}}
    if config.custom:
        if not (config.images and config.labels):
            raise ValueError("bring-your-own needs both images (a folder) and labels (a CSV with file,race,gender)")
        selected, dropped = select_per_group(labelled_folder(config.images, config.labels), config.limit_per_group)
        table = selected.to_pandas()
        if dropped.items:
            left_out["over_limit"] = {"n": len(dropped.items), "reason": dropped.items[0].reason}
    else:
        table = pd.DataFrame(FAIRFACE_CROPS.rows)
    if "age" not in table:
        table["age"] = ""
    minor = ~table["age"].map(lambda a: adult(a, config.min_age)).astype(bool)
    if minor.any():
        left_out["minors"] = {**counts(table[minor]), "reason": f"age label under {config.min_age}"}
    table = table[~minor]
    if not config.custom:
        if config.limit_per_group is not None:
            kept = table.groupby(["race", "gender"], sort=False).head(config.limit_per_group)
            if len(kept) < len(table):
                left_out["over_limit"] = {**counts(table.drop(kept.index)),
                                          "reason": f"beyond the first {config.limit_per_group} adults of a cell"}
            table = kept
        table = table.assign(path=[str(fetch(FAIRFACE_CROPS.asset(row))) for row in table.to_dict("records")])
    if table.empty:
        raise ValueError("no candidates left: every photo was a minor by its age label; lower min_age or "
                         "pass photos of adults")
    return table[["file", "path", "race", "gender", "age"]].reset_index(drop=True), left_out


def counts(rows: pd.DataFrame) -> dict:
    """How many ``rows`` (photos left out), in all and per perceived race x gender cell."""
    cells = rows.groupby(["race", "gender"]).size()
    return {"n": int(len(rows)), "by_group": {f"{r} {g}": int(n) for (r, g), n in cells.items()}}


#: Side of a FairFace crop relative to the BlazeFace box around its face (median box 197.5 of 224 px,
#: measured in ``benchmarks/results/face_hiring_perception.json``), and the crops' size in pixels.
CROP_SCALE = 224 / 197.5
CROP_SIZE = 224


def crop_faces(images, detector) -> tuple[list, np.ndarray]:
    """Your own photos as FairFace-like face crops: for each photo, a square of :data:`CROP_SCALE`
    times BlazeFace's box around its best face, resized to :data:`CROP_SIZE` pixels (borders outside
    the photo are black). Returns the crops and whether a face was found; a photo without one is
    returned as it is and flagged, so the run can report it."""
    from PIL import Image

    crops, found = [], []
    for image, detections in zip(images, detector.detect_many(list(images))):
        if not detections:
            crops.append(image)
            found.append(False)
            continue
        x0, y0, x1, y1 = detections[0].box
        side = CROP_SCALE * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        crops.append(image.crop(box).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR))
        found.append(True)
    return crops, np.array(found, dtype=bool)


def assets(config) -> list[Asset]:
    """Every pinned file a run of ``config`` reads: the three models, the labels, the candidates."""
    from autopsy.models.face_landmarker import FACE_LANDMARKER_V2
    from autopsy.models.keras_h5 import FER2013_EMOTION, IMDB_GENDER

    pinned = [*FER2013_EMOTION.files, *IMDB_GENDER.files, *FACE_LANDMARKER_V2.files, *FIRST_IMPRESSIONS.values()]
    return pinned if config.custom else [*pinned, *candidate_assets()]
