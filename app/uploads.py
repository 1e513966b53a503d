"""Photos for the explorers: a checked upload, or a file of the lab's public sets from the user's cache.

Uploads are read from memory (Streamlit keeps them in RAM; nothing is written to disk), checked
for size and type, opened through :func:`autopsy.data.load_image` (decompression-bomb guard,
sides of at least ``MIN_SIDE`` px, shapes up to ``MAX_ASPECT``:1 so that no working size can
explode, EXIF orientation, 16-bit and transparency handled, RGB) and scaled down for interactive
speed. A bad file raises :class:`autopsy.data.ImageError` with a message fit for the page.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import streamlit as st
from PIL import Image, UnidentifiedImageError

from autopsy.assets import cached_path
from autopsy.data import (FAIRFACE_CONTEXT, FAIRFACE_CROPS, MAX_ASPECT, MIN_SIDE, PERCEIVED_LABELS_NOTE, ImageError,
                          image_format, load_image)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # also server.maxUploadSize in app/.streamlit/config.toml
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "MPO"}  # MPO: JPEGs from phone cameras
MAX_PIXELS = 40_000_000  # decompression-bomb guard for uploads
MAX_SIDE = 1024  # longest side analysed; larger photos are scaled down
PUBLIC_SETS = (FAIRFACE_CONTEXT, FAIRFACE_CROPS)


@dataclass(frozen=True)
class Photo:
    name: str
    digest: str  # SHA-256 of the file's bytes: the cache key of everything computed from it
    image: Image.Image  # RGB, EXIF orientation applied, longest side <= MAX_SIDE
    original_size: tuple[int, int]
    labels: str = ""  # perceived labels of a public-set photo, for display


def check_upload(name: str, data: bytes) -> Image.Image:
    """Size, type and decompression-bomb checks, then decode; raises ImageError naming the problem."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB limit "
                         "for uploads; use a smaller photo.")
    if not data:
        raise ImageError(f"{name}: the file is empty.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format
    except Image.DecompressionBombError:
        kind = image_format(io.BytesIO(data))  # too many pixels to open: load_image says so below
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        kind = None
    if kind not in ACCEPTED_FORMATS:
        found = f"a {kind} image" if kind else "not an image this viewer can read"
        raise ImageError(f"{name}: this file is {found}; upload a JPEG, PNG or WebP photo.")
    buffer = io.BytesIO(data)
    buffer.name = name  # load_image names the file in its messages
    return load_image(buffer, max_pixels=MAX_PIXELS, min_side=MIN_SIDE, max_aspect=MAX_ASPECT)


@st.cache_data(max_entries=16, ttl=900, show_spinner=False)
def _decode(name: str, digest: str, _data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    image = check_upload(name, _data)
    size = image.size
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image, size


def photo_from_bytes(name: str, data: bytes, labels: str = "") -> Photo:
    digest = hashlib.sha256(data).hexdigest()
    image, size = _decode(name, digest, data)
    return Photo(name=name, digest=digest, image=image, original_size=size, labels=labels)


def cached_public_photos() -> dict[str, tuple]:
    """{display name: (path, perceived labels)} of public-set photos already in the user's cache."""
    found = {}
    for image_set in PUBLIC_SETS:
        for row in image_set.rows:
            path = cached_path(image_set.asset(row))
            if path.is_file():
                labels = f"perceived: {row['race']}, {row['gender']}, {row['age']}"
                found[f"{image_set.name}/{row['file']} ({labels})"] = (path, labels)
    return found


@st.cache_data(ttl=60, show_spinner=False)
def _cached_public_photos() -> dict[str, tuple]:
    return cached_public_photos()


def choose_photo(label: str, key: str, *, default_index: int = 0) -> Photo | None:
    """An upload-or-pick widget; returns the photo, or None (with a message in the page if it was bad)."""
    source = st.radio(f"{label}: source", ["Upload a photo", "From your cache of the public sets"],
                      key=f"{key}-source", horizontal=True)
    if source == "Upload a photo":
        uploaded = st.file_uploader(f"{label}: upload (JPEG, PNG or WebP, at most 10 MB)", type=UPLOAD_TYPES,
                                    key=f"{key}-upload", help="Processed in memory and not kept.")
        if uploaded is None:
            return None
        try:
            return photo_from_bytes(uploaded.name, uploaded.getvalue())
        except ImageError as err:
            st.error(str(err), icon=":material/broken_image:")
            return None
    options = _cached_public_photos()
    if not options:
        st.info("No public-set photos in your cache yet. `autopsy fetch twitter_crop` copies them from the "
                "mirror (or downloads them, checking each file's SHA-256); then pick one here.")
        return None
    names = sorted(options)
    choice = st.selectbox(f"{label}: photo", names, index=min(default_index, len(names) - 1), key=f"{key}-pick")
    st.caption(PERCEIVED_LABELS_NOTE)
    path, labels = options[choice]
    return photo_from_bytes(path.name, path.read_bytes(), labels=labels)
