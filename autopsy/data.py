"""Images and labelled image sets.

Labelled sets are :class:`datasets.Dataset` tables with one row per image: ``file``, ``path``
(a verified local file) and the annotation columns. Race, gender and age in face datasets are
*perceived* attributes annotated by others, not self-identification; every report says so.

Two public sets are pinned here because more than one incident uses them (FairFace,
Kärkkäinen & Joo, WACV 2021, CC BY 4.0); the per-file SHA-256 lives in ``manifests/``.
Bring-your-own sets come from :func:`labelled_folder`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from autopsy.assets import Asset, fetch

MANIFESTS = Path(__file__).parent / "manifests"

#: Largest image accepted, in pixels (a decompression-bomb guard; ~50 megapixels).
MAX_PIXELS = 50_000_000

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


def load_image(source, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied.

    ``source`` is a path or a binary file object. Corrupt, non-image or oversized files
    raise :class:`ImageError` naming the file.
    """
    name = getattr(source, "name", None) or str(source)
    try:
        with Image.open(source) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} pixels is larger than the {max_pixels:,}-pixel limit "
                    "(a guard against decompression bombs); resize the image first."
                )
            probe.load()
            image = ImageOps.exif_transpose(probe).convert("RGB")
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ImageError(f"{name}: not a readable image ({err}); use a JPEG or PNG file.") from None
    return image


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


def labelled_folder(images_dir, labels_csv, *, required_columns=("file",), label_columns=("race", "gender")):
    """A researcher's own labelled images as a ``datasets.Dataset``.

    ``labels_csv`` has a ``file`` column (relative to ``images_dir``) and the label columns.
    Every problem — a missing folder or CSV, an unknown column, a listed file that is absent
    or unreadable — raises a ValueError that names it; no row is silently dropped.
    """
    import datasets
    import pandas as pd

    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist; pass --images DIR with your photos")
    if not labels_csv.is_file():
        raise ValueError(f"labels file {labels_csv} does not exist; pass --labels CSV (columns: file,race,gender)")
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except Exception as err:
        raise ValueError(f"labels file {labels_csv} is not a readable CSV: {err}") from None
    missing = [c for c in (*required_columns, *label_columns) if c not in table.columns]
    if missing:
        raise ValueError(
            f"labels file {labels_csv} lacks the column(s) {missing}; it has {list(table.columns)}. "
            f"Expected a header like: {','.join((*required_columns, *label_columns))}"
        )
    problems = []
    paths = []
    for name in table["file"]:
        path = images_dir / name
        if not path.is_file():
            problems.append(f"{name}: listed in {labels_csv.name} but not found in {images_dir}")
            paths.append("")
            continue
        try:
            load_image(path)
        except ImageError as err:
            problems.append(str(err))
        paths.append(str(path))
    if problems:
        shown = "\n  ".join(problems[:10]) + ("" if len(problems) <= 10 else f"\n  ... and {len(problems) - 10} more")
        raise ValueError(f"{len(problems)} problem(s) with the labelled images:\n  {shown}")
    if len(table) == 0:
        raise ValueError(f"labels file {labels_csv} lists no images")
    table["path"] = paths
    return datasets.Dataset.from_pandas(table, preserve_index=False)
