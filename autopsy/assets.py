"""Pinned public artefacts: declared once, fetched once, verified every time.

An :class:`Asset` pins a public file to its URL and SHA-256 and carries its licence and
citation, in the spirit of torchvision's weights enums. :func:`fetch` returns a verified
local path, looking in this order:

1. the cache (``$AUTOPSY_CACHE``, default: the per-user cache directory);
2. a mirror directory (``$AUTOPSY_MIRROR``), laid out like ``../shared/mirror``;
3. the network, through pooch (skipped when ``AUTOPSY_OFFLINE=1``).

A file whose SHA-256 differs from the pin is refused and never enters the cache. Every
write goes to a temporary file in the cache directory and is renamed into place, so no
half-written file is ever visible under its final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "AUTOPSY_CACHE"
MIRROR_ENV = "AUTOPSY_MIRROR"
OFFLINE_ENV = "AUTOPSY_OFFLINE"


class AssetError(RuntimeError):
    """Base class for asset problems; the message always names the asset and the fix."""


class AssetIntegrityError(AssetError):
    """A file's SHA-256 does not match its pin."""


class AssetUnavailableError(AssetError):
    """The file is in neither the cache nor the mirror, and the network cannot supply it."""


@dataclass(frozen=True)
class Asset:
    """A public file pinned by URL and SHA-256, with the terms it comes under.

    ``mirror_path`` is the file's place relative to a mirror root (and in the cache).
    """

    name: str
    url: str
    sha256: str
    size: int | None
    licence: str
    citation: str
    source_page: str
    mirror_path: str

    def __post_init__(self):
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"asset {self.name!r}: sha256 must be 64 lowercase hex digits")
        if not self.url.startswith("https://"):
            raise ValueError(f"asset {self.name!r}: url must be an https URL, got {self.url!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def cache_dir() -> Path:
    """The cache root: ``$AUTOPSY_CACHE`` or the per-user cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import pooch

    return Path(pooch.os_cache("ai-autopsy"))


def mirror_dir() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_path(asset: Asset) -> Path:
    return cache_dir() / asset.mirror_path


def is_available(asset: Asset) -> bool:
    """True if :func:`fetch` would succeed without the network (cache or mirror holds it)."""
    if cached_path(asset).is_file():
        return True
    mirror = mirror_dir()
    return mirror is not None and (mirror / asset.mirror_path).is_file()


def fetch(asset: Asset) -> Path:
    """Return a local path to ``asset`` whose SHA-256 matches its pin.

    Raises :class:`AssetIntegrityError` for a file that does not match, and
    :class:`AssetUnavailableError` when no source can supply the file.
    """
    target = cached_path(asset)
    if target.is_file():
        actual = sha256_of(target)
        if actual == asset.sha256:
            return target
        # A cached file that no longer matches was changed after it was verified; drop it
        # and fetch a clean copy rather than trusting it.
        target.unlink()

    mirror = mirror_dir()
    if mirror is not None and (mirror / asset.mirror_path).is_file():
        source = mirror / asset.mirror_path
        _install(asset, target, lambda tmp: shutil.copyfile(source, tmp), origin=f"mirror file {source}")
        return target

    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise AssetUnavailableError(_unavailable_message(asset, f"{OFFLINE_ENV} is set"))
    _install(asset, target, lambda tmp: _download(asset, tmp), origin=f"download from {asset.url}")
    return target


def _install(asset: Asset, target: Path, write, *, origin: str) -> None:
    """Write through ``write(tmp_path)`` into a temp file, verify it, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        actual = sha256_of(tmp)
        if actual != asset.sha256:
            raise AssetIntegrityError(
                f"asset {asset.name!r} failed its integrity check: expected SHA-256 {asset.sha256}, "
                f"got {actual} ({origin}). The file was refused and not cached. Replace it with the "
                f"original from {asset.url}."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download(asset: Asset, destination: Path) -> None:
    import pooch

    try:
        # pooch checks the hash itself and writes atomically into `destination`'s folder.
        pooch.retrieve(
            asset.url,
            known_hash=f"sha256:{asset.sha256}",
            fname=destination.name,
            path=destination.parent,
            progressbar=True,
        )
    except ValueError as err:  # pooch's hash mismatch
        raise AssetIntegrityError(
            f"asset {asset.name!r} downloaded from {asset.url} does not match its pinned SHA-256 "
            f"{asset.sha256}: {err}. The file was refused and not cached."
        ) from None
    except Exception as err:  # network failures come in many types (requests, socket, OSError)
        raise AssetUnavailableError(_unavailable_message(asset, f"download failed: {err}")) from None


def _unavailable_message(asset: Asset, reason: str) -> str:
    mirror = mirror_dir()
    where = f"{MIRROR_ENV}={mirror} has no {asset.mirror_path}" if mirror else f"{MIRROR_ENV} is not set"
    return (
        f"asset {asset.name!r} is not available offline ({reason}; {where}). "
        f"Download it from {asset.url} (SHA-256 {asset.sha256}) and either place it at "
        f"{cached_path(asset)} (the cache; set {CACHE_ENV} to move it) or point {MIRROR_ENV} at a "
        f"directory that holds it as {asset.mirror_path}."
    )
