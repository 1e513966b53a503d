"""Images and labelled image sets.

Labelled sets are :class:`datasets.Dataset` tables with one row per image: ``file``, ``path``
(a verified local file) and the annotation columns. Race, gender and age in face datasets are
*perceived* attributes annotated by others, not self-identification; every report says so.

Two public sets are pinned here because more than one incident uses them (FairFace,
Kärkkäinen & Joo, WACV 2021, CC BY 4.0); the per-file SHA-256 lives in ``manifests/``.
Bring-your-own sets come from :func:`labelled_folder`, which normalises labels to the
canonical group names of :data:`LABEL_VOCABULARY` and refuses what it cannot use; photos a run
then leaves out (a per-group limit, a group the protocol does not study) are recorded as
:class:`Exclusions` for the run record.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from autopsy.assets import Asset, fetch, sha256_of

MANIFESTS = Path(__file__).parent / "manifests"

#: Largest image accepted, in pixels (a decompression-bomb guard; ~50 megapixels).
MAX_PIXELS = 50_000_000
#: Smallest side accepted, in pixels: FastGaze pools by 16, and a face needs more than that.
MIN_SIDE = 16
#: Most elongated shape accepted (longer side / shorter side). Scaling the shorter side to a
#: model's working size multiplies the longer one by the same factor, so this bounds memory.
MAX_ASPECT = 10
#: What transparent pixels are composited on: white, as a web page shows a transparent photo.
BACKGROUND = (255, 255, 255)

#: Canonical group names of the perceived labels (FairFace's seven race groups, two genders).
#: Labels are matched ignoring case, spaces, '_', '-' and '/' ("latino hispanic" -> "Latino_Hispanic").
RACE_GROUPS = ("White", "Black", "East Asian", "Southeast Asian", "Indian", "Middle Eastern", "Latino_Hispanic")
GENDER_GROUPS = ("Female", "Male")
LABEL_VOCABULARY = {"race": RACE_GROUPS, "gender": GENDER_GROUPS}

PERCEIVED_LABELS_NOTE = (
    "Race, gender and age labels are perceived attributes annotated by others "
    "(FairFace annotators or the dataset's curators), not how the people pictured identify."
)

FAIRFACE_CITATION = (
    "Kärkkäinen, K. & Joo, J. FairFace: Face Attribute Dataset for Balanced Race, Gender, and Age "
    "for Bias Measurement and Mitigation. WACV 2021."
)


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def load_image(source, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE, max_aspect: float = MAX_ASPECT,
               background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied.

    ``source`` is a path or a binary file object. The shape is checked before any pixel is
    decoded: more than ``max_pixels``, a side under ``min_side`` or a shape more elongated than
    ``max_aspect`` : 1 is refused. 16-bit greyscale is scaled to 8 bits (not clipped) and
    transparency is composited on ``background``. Every problem raises :class:`ImageError`
    naming the file.
    """
    name = getattr(source, "name", None) or ("the image" if hasattr(source, "read") else str(source))
    try:
        with Image.open(source) as probe:
            _check_shape(name, probe.format, *probe.size, max_pixels=max_pixels, min_side=min_side,
                         max_aspect=max_aspect)
            try:
                probe.load()
            except (OSError, SyntaxError, ValueError) as err:
                raise _damaged(name, probe.format or "image", err) from None
            return to_rgb(ImageOps.exif_transpose(probe), background=background)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image file") from None
    except Image.DecompressionBombError as err:
        kind = image_format(source) or "image"
        raise ImageError(f"{name}: this {kind} file is larger than the {max_pixels:,}-pixel limit (a guard "
                         f"against decompression bombs: {err}); resize the image first.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file the lab can read; use a JPEG, PNG or WebP photo.") from None
    except (OSError, SyntaxError, ValueError) as err:
        kind = image_format(source)
        if kind is not None:
            raise _damaged(name, kind, err) from None
        raise ImageError(f"{name}: not an image file the lab can read ({err}); "
                         "use a JPEG, PNG or WebP photo.") from None


def _damaged(name, kind: str, err) -> ImageError:
    return ImageError(f"{name}: this {kind} file is damaged or truncated ({err}); export it again or use another copy.")


def _check_shape(name, kind, width, height, *, max_pixels, min_side, max_aspect) -> None:
    kind = kind or "image"
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: this {kind} file is {width}x{height} pixels, larger than the {max_pixels:,}-pixel limit "
            "(a guard against decompression bombs); resize the image first."
        )
    if min(width, height) < min_side:
        raise ImageError(f"{name}: this {kind} file is {width}x{height} pixels; each side must be at least "
                         f"{min_side} px for the models to see anything. Use a larger photo.")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(f"{name}: this {kind} file is {width}x{height} pixels, a shape of "
                         f"{max(width, height) / min(width, height):.0f}:1; the lab accepts shapes up to "
                         f"{max_aspect:g}:1. Crop the image (or pad it) to a less elongated shape first.")


def image_format(source) -> str | None:
    """The format ("PNG", "JPEG"...) the first bytes of a path or binary file declare, read
    without decoding (for a file Pillow refuses to open, such as a decompression bomb)."""
    try:
        if hasattr(source, "read"):
            position = source.tell()
            source.seek(0)
            head = source.read(64)
            source.seek(position)
        else:
            with open(source, "rb") as f:
                head = f.read(64)
    except OSError:
        return None
    Image.init()
    common = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # first: some rare plugins accept loosely
    for kind in (*common, *(k for k in Image.ID if k not in common)):
        if kind not in Image.OPEN:
            continue
        accept = Image.OPEN[kind][1]
        try:
            if accept is not None and accept(head):
                return kind
        except Exception:  # a plugin's sniffer on a short header
            continue
    return None


def to_rgb(image: Image.Image, *, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """An image in any Pillow mode as 8-bit RGB.

    16-bit greyscale (``I;16``; ``I`` is read as 16-bit samples, as PNG gives them) is scaled by
    255/65535 rather than clipped at 255 (Pillow's ``convert`` turns most such photos white), and
    any transparency is composited on ``background`` rather than dropped (which shows whatever
    colour the transparent pixels hold, usually black).
    """
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(values * (255 / 65535)), 0, 255).astype(np.uint8))
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        base = Image.new("RGBA", image.size, (*background, 255))
        image = Image.alpha_composite(base, image.convert("RGBA"))
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageSet:
    """A public set of images pinned file by file (URL template + manifest of SHA-256)."""

    name: str
    description: str
    manifest: str  # CSV in autopsy/manifests: file, sha256, size, then label columns
    url_template: str  # formatted with the manifest row, e.g. ".../{file}"
    mirror_folder: str
    licence: str
    citation: str
    source_page: str

    @cached_property
    def rows(self) -> list[dict]:
        with open(MANIFESTS / self.manifest, newline="") as f:
            return list(csv.DictReader(f))

    def asset(self, row: dict) -> Asset:
        return Asset(
            name=f"{self.name}/{row['file']}",
            url=self.url_template.format(**row),
            sha256=row["sha256"],
            size=int(row["size"]),
            licence=self.licence,
            citation=self.citation,
            source_page=self.source_page,
            mirror_path=f"{self.mirror_folder}/{row['file']}",
        )

    def assets(self) -> list[Asset]:
        return [self.asset(row) for row in self.rows]


FAIRFACE_CONTEXT = ImageSet(
    name="fairface-context",
    description="540 FairFace head-and-shoulders photos with background (448x448, padding 1.25, train split)",
    manifest="fairface_context.csv",
    url_template=(
        "https://raw.githubusercontent.com/thlaiquid-ai/demographic-test-images/"
        "3225e93be7349143e5496eda971c65969efe7c35/fairface/{file}"
    ),
    mirror_folder="fairface-context",
    licence="CC-BY-4.0",
    citation=FAIRFACE_CITATION,
    source_page="https://github.com/joojs/fairface",
)

FAIRFACE_CROPS = ImageSet(
    name="fairface-crops",
    description="2,800 FairFace tight face crops (224x224, padding 0.25), 200 per race x gender",
    manifest="fairface_crops.csv",
    url_template=(
        "https://raw.githubusercontent.com/sumanvithaeadala/EthnicityDetection/"
        "9b001ff28a8a2e7840bcf1c01c8efb97d22471e8/fair_face/{file}"
    ),
    mirror_folder="fairface-crops",
    licence="CC-BY-4.0",
    citation=FAIRFACE_CITATION,
    source_page="https://github.com/joojs/fairface",
)


def load_image_set(image_set: ImageSet, *, limit_per_group: int | None = None, group_by=("race", "gender")):
    """Fetch and verify the set's files; return a ``datasets.Dataset`` (file, path, labels...).

    ``limit_per_group`` keeps the first N images of every ``group_by`` cell (manifest order),
    for small, balanced runs.
    """
    import datasets

    rows = image_set.rows
    if limit_per_group is not None:
        seen: dict[tuple, int] = {}
        kept = []
        for row in rows:
            key = tuple(row[c] for c in group_by)
            if seen.get(key, 0) < limit_per_group:
                seen[key] = seen.get(key, 0) + 1
                kept.append(row)
        rows = kept
    records = [{**row, "path": str(fetch(image_set.asset(row)))} for row in rows]
    for record in records:
        record.pop("size")
    return datasets.Dataset.from_list(records)


def canonical_label(value, groups) -> str | None:
    """The name in ``groups`` that ``value`` spells, ignoring case, surrounding spaces and the
    separators ' ', '_', '-', '/'; None if it spells none of them."""
    keys = {_label_key(g): g for g in groups}
    return keys.get(_label_key(value))


def _label_key(value) -> str:
    return " ".join(re.split(r"[\s_\-/]+", str(value).casefold())).strip()


def labelled_folder(images_dir, labels_csv, *, required_columns=("file",), label_columns=("race", "gender"),
                    vocabulary=LABEL_VOCABULARY):
    """A researcher's own labelled images as a ``datasets.Dataset``.

    ``labels_csv`` has a ``file`` column (relative to ``images_dir``) and the label columns.
    Labels are normalised once: surrounding spaces are stripped and a column that ``vocabulary``
    names is mapped to its canonical group names (``" black"`` -> ``"Black"``). Every problem
    raises a ValueError that names it, with the CSV line: a missing folder or CSV, an unknown
    column, an empty or unknown label (with the nearest known one), a file listed twice or two
    rows with identical image files, a file outside ``images_dir``, a listed file that is absent
    or unreadable. No row is silently dropped.
    """
    import datasets
    import pandas as pd

    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist; pass --images DIR with your photos")
    if not labels_csv.is_file():
        raise ValueError(f"labels file {labels_csv} does not exist; pass --labels CSV (columns: file,race,gender)")
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as err:
        raise ValueError(f"labels file {labels_csv} is not a readable CSV: {err}") from None
    table.columns = [str(c).strip() for c in table.columns]
    if table.columns.duplicated().any():
        raise ValueError(f"labels file {labels_csv} repeats the column(s) "
                         f"{sorted(set(table.columns[table.columns.duplicated()]))}; keep one of each")
    missing = [c for c in (*required_columns, *label_columns) if c not in table.columns]
    if missing:
        raise ValueError(
            f"labels file {labels_csv} lacks the column(s) {missing}; it has {list(table.columns)}. "
            f"Expected a header like: {','.join((*required_columns, *label_columns))}"
        )
    if len(table) == 0:
        raise ValueError(f"labels file {labels_csv} lists no images")

    root = images_dir.resolve()
    problems, paths = [], []
    first_line_of: dict[Path, int] = {}
    first_line_with: dict[str, tuple[int, str]] = {}
    for column in ("file", *label_columns):
        table[column] = table[column].str.strip()
    for i, row in table.iterrows():
        line = i + 2  # the header is line 1, as in a text editor or a spreadsheet
        name = row["file"]
        where = f"line {line}, {name}" if name else f"line {line}"
        paths.append("")
        for column in label_columns:
            value = row[column]
            groups = (vocabulary or {}).get(column)
            if not value:
                problems.append(f"{where}: the {column} label is empty")
            elif groups:
                canonical = canonical_label(value, groups)
                if canonical is None:
                    keys = {_label_key(g): g for g in groups}
                    near = difflib.get_close_matches(_label_key(value), keys, n=1, cutoff=0.6)
                    hint = f" (did you mean {keys[near[0]]!r}?)" if near else ""
                    problems.append(f"{where}: {column} {value!r} is not a known group{hint}; "
                                    f"use one of {', '.join(groups)}")
                else:
                    table.at[i, column] = canonical
        if not name:
            problems.append(f"{where}: the file column is empty")
            continue
        path = images_dir / name
        if PurePath(name).is_absolute() or ".." in PurePath(name).parts or not path.resolve().is_relative_to(root):
            problems.append(f"{where}: the file points outside the images folder {images_dir}; "
                            "list files by their path inside that folder")
            continue
        resolved = path.resolve()
        if resolved in first_line_of:
            problems.append(f"{where}: the file is listed again (first on line {first_line_of[resolved]}); "
                            "list each photo once")
            continue
        first_line_of[resolved] = line
        if not path.is_file():
            problems.append(f"{where}: listed in {labels_csv.name} but not found in {images_dir}")
            continue
        try:
            load_image(path)
        except ImageError as err:
            problems.append(f"line {line}: {err}")
            continue
        digest = sha256_of(path)
        if digest in first_line_with:
            other_line, other = first_line_with[digest]
            problems.append(f"{where}: the same image file as line {other_line} ({other}); "
                            "a photo counted twice skews every rate, list it once")
            continue
        first_line_with[digest] = (line, name)
        paths[-1] = str(path)
    if problems:
        shown = "\n  ".join(problems[:20]) + ("" if len(problems) <= 20 else f"\n  ... and {len(problems) - 20} more")
        raise ValueError(f"{len(problems)} problem(s) with the labelled images in {labels_csv}:\n  {shown}")
    table["path"] = paths
    return datasets.Dataset.from_pandas(table, preserve_index=False)


@dataclass(frozen=True)
class Exclusion:
    """One photo a run left out, and why."""

    file: str
    reason: str


@dataclass(frozen=True)
class Exclusions:
    """The photos a run left out of ``n_listed``, each with its reason, for the run record.

    Records add up (``first + second``) as a run excludes in several steps.
    """

    n_listed: int
    items: tuple[Exclusion, ...] = ()

    def __add__(self, other: "Exclusions") -> "Exclusions":
        return Exclusions(max(self.n_listed, other.n_listed), self.items + other.items)

    def to_dict(self) -> dict:
        return {
            "n_listed": self.n_listed,
            "n_excluded": len(self.items),
            "by_reason": dict(Counter(item.reason for item in self.items)),
            "photos": [{"file": item.file, "reason": item.reason} for item in self.items],
        }


def exclude(dataset, keep, reason: str):
    """``dataset`` without the rows where ``keep`` is false, and an :class:`Exclusions` record
    naming each row left out with ``reason``. Returns ``(dataset, exclusions)``."""
    keep = [bool(k) for k in keep]
    if len(keep) != len(dataset):
        raise ValueError(f"keep has {len(keep)} values for {len(dataset)} rows")
    files = dataset["file"]
    dropped = tuple(Exclusion(str(files[i]), reason) for i, k in enumerate(keep) if not k)
    return dataset.select([i for i, k in enumerate(keep) if k]), Exclusions(len(dataset), dropped)


def select_per_group(dataset, limit_per_group: int | None, *, by=("race", "gender")):
    """The first ``limit_per_group`` rows of every ``by`` group (dataset order), and an
    :class:`Exclusions` record of the rest. Returns ``(dataset, exclusions)``."""
    if limit_per_group is None:
        return dataset, Exclusions(len(dataset))
    if limit_per_group < 1:
        raise ValueError(f"limit_per_group must be at least 1, got {limit_per_group}")
    seen: Counter = Counter()
    keep = []
    for key in zip(*(dataset[c] for c in by)):
        seen[key] += 1
        keep.append(seen[key] <= limit_per_group)
    return exclude(dataset, keep, f"over the limit of {limit_per_group} per {' x '.join(by)} group")
