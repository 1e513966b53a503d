"""Pinned public artefacts: declared once, fetched once, verified every time.

An :class:`Asset` pins a public file to its URL and SHA-256 and carries its licence and
citation, in the spirit of torchvision's weights enums. :func:`fetch` returns a verified
local path, looking in this order:

1. the cache (``$AUTOPSY_CACHE``, default: the per-user cache directory);
2. a mirror directory (``$AUTOPSY_MIRROR``), laid out like ``../shared/mirror``;
3. the network, through pooch (skipped when ``AUTOPSY_OFFLINE=1``).

A file whose SHA-256 differs from the pin is refused and never enters the cache. Every
write goes to a temporary file in the cache directory and is renamed into place, so no
half-written file is ever visible under its final name. A cache that cannot be written
(read-only, full, or a path that is a file) is an :class:`AssetCacheError` naming the path and
the fix; when the mirror holds the file, its verified copy is used in place instead, with a
warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import warnings
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


class AssetCacheError(AssetError):
    """The cache cannot hold the file: read-only, full, or its path is not a folder."""


#: Write errors that are about the cache's file system, not about the file or the network.
_CACHE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST, errno.EISDIR}
_warned_caches: set[Path] = set()


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

    Raises :class:`AssetIntegrityError` for a file that does not match,
    :class:`AssetUnavailableError` when no source can supply the file and
    :class:`AssetCacheError` when the cache cannot be written and no mirror holds the file.
    """
    target = cached_path(asset)
    try:
        if target.is_file():
            if sha256_of(target) == asset.sha256:
                return target
            # A cached file that no longer matches was changed after it was verified; drop it
            # and fetch a clean copy rather than trusting it.
            target.unlink()
    except OSError:
        pass  # an unreadable or read-only cache: the copy below says what is wrong, or the mirror serves

    mirror = mirror_dir()
    if mirror is not None and (mirror / asset.mirror_path).is_file():
        source = mirror / asset.mirror_path
        try:
            _install(asset, target, lambda tmp: shutil.copyfile(source, tmp), origin=f"mirror file {source}")
        except AssetCacheError as err:
            return _verified_in_place(asset, source, err)
        return target

    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise AssetUnavailableError(_unavailable_message(asset, f"{OFFLINE_ENV} is set"))
    _install(asset, target, lambda tmp: _download(asset, tmp), origin=f"download from {asset.url}")
    return target


def _verified_in_place(asset: Asset, source: Path, cache_error: AssetCacheError) -> Path:
    """The mirror file itself, after checking its SHA-256, for a cache that cannot be written."""
    try:
        actual = sha256_of(source)
    except OSError as err:  # the copy failed on reading the mirror, not on writing the cache
        raise AssetUnavailableError(
            f"asset {asset.name!r}: the mirror file {source} cannot be read ({err.strerror}); make it readable "
            f"or point {MIRROR_ENV} at another copy of the mirror."
        ) from None
    if actual != asset.sha256:
        raise AssetIntegrityError(
            f"asset {asset.name!r} failed its integrity check: expected SHA-256 {asset.sha256}, got {actual} "
            f"(mirror file {source}). The file was refused. Replace it with the original from {asset.url}."
        )
    root = cache_dir()
    if root not in _warned_caches:
        _warned_caches.add(root)
        warnings.warn(f"{cache_error} Meanwhile the verified mirror files are used in place.", stacklevel=3)
    return source


def _install(asset: Asset, target: Path, write, *, origin: str) -> None:
    """Write through ``write(tmp_path)`` into a temp file, verify it, then rename into place."""
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        actual = sha256_of(tmp)
        if actual != asset.sha256:
            raise AssetIntegrityError(
                f"asset {asset.name!r} failed its integrity check: expected SHA-256 {asset.sha256}, "
                f"got {actual} ({origin}). The file was refused and not cached. Replace it with the "
                f"original from {asset.url}."
            )
        os.replace(tmp, target)
    except OSError as err:
        if err.errno not in _CACHE_ERRNOS:
            raise
        raise AssetCacheError(_cache_message(asset, target, err)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _cache_message(asset: Asset, target: Path, err: OSError) -> str:
    """What is wrong with the cache, named by path, and how to fix it."""
    fix = f"or set {CACHE_ENV} to a folder that can hold it"
    blocker = next((p for p in (target.parent, *target.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None or err.errno in (errno.ENOTDIR, errno.EEXIST):
        where = blocker or target.parent
        return (f"cannot cache asset {asset.name!r}: the cache path {where} is a file, not a folder. "
                f"Move or delete that file {fix}.")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f" (the file needs {asset.size:,} bytes)" if asset.size else ""
        return (f"cannot cache asset {asset.name!r}: no space left on the disk of the cache {cache_dir()}{need}. "
                f"Free some space {fix}.")
    return (f"cannot cache asset {asset.name!r}: the cache {target.parent} is not writable ({err.strerror}). "
            f"Make it writable {fix}.")


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
    except OSError as err:
        if err.errno in _CACHE_ERRNOS:
            raise  # a cache problem, reported as one by _install
        raise AssetUnavailableError(_unavailable_message(asset, f"download failed: {err}")) from None
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
