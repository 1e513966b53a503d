"""Models the lab trains itself, with the provenance a pinned download has.

A pinned asset is identified by its URL and SHA-256; a trained artefact by what made it: the
hashes of its training data, its configuration and seed, the training code, the library
versions, and the SHA-256 of the resulting weights. :func:`train_or_load` trains once, writes
the weights and a :class:`Provenance` record atomically into the cache (``$AUTOPSY_CACHE/trained``),
and on later calls with the same inputs loads them and re-verifies the weights against the record,
exactly as :func:`autopsy.assets.fetch` re-verifies a download::

    weights, record = train_or_load("hiring-scorer", fit, data={"features": table_sha}, config=cfg, seed=42)

``fit()`` returns a dict of numpy arrays (the parameters). The weights' SHA-256 is taken over the
arrays themselves (names, dtypes, shapes and bytes, in name order), so it does not depend on
the file format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from autopsy.assets import cache_dir

LIBRARIES = ("numpy", "scikit-learn", "torch", "fairlearn", "scipy")


class TrainedArtefactError(RuntimeError):
    """A cached trained artefact does not match its provenance record; the message says how to retrain."""


@dataclass(frozen=True)
class Provenance:
    """What made a trained artefact, and the SHA-256 of what came out."""

    name: str
    key: str  # SHA-256 of everything that determines the weights
    data: Mapping[str, str]  # training data -> SHA-256
    config: Mapping
    seed: int
    code_sha256: str  # of the training function's source
    code_commit: str | None
    libraries: Mapping[str, str]
    weights_sha256: str
    created: str

    def to_dict(self) -> dict:
        return asdict(self)


def weights_sha256(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def data_sha256(table) -> str:
    """SHA-256 of a training table (a DataFrame, an array or bytes), for :func:`train_or_load`'s ``data``."""
    if hasattr(table, "to_csv"):
        return hashlib.sha256(table.to_csv(index=True).encode()).hexdigest()
    if isinstance(table, (bytes, bytearray)):
        return hashlib.sha256(table).hexdigest()
    return weights_sha256({"data": np.asarray(table)})


def _code_sha256(fit: Callable) -> str:
    try:
        source = inspect.getsource(fit)
    except (OSError, TypeError):
        source = getattr(fit, "__qualname__", repr(fit))
    return hashlib.sha256(source.encode()).hexdigest()


def _libraries() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def train_or_load(name: str, fit: Callable[[], Mapping[str, np.ndarray]], *, data: Mapping[str, str],
                  config: Mapping, seed: int, folder: Path | None = None) -> tuple[dict, Provenance]:
    """The weights ``fit()`` returns and their :class:`Provenance`, trained once per distinct inputs."""
    from autopsy.runs import git_commit

    code = _code_sha256(fit)
    libraries = _libraries()
    key_payload = json.dumps({"name": name, "data": dict(data), "config": dict(config), "seed": seed, "code": code,
                              "libraries": libraries}, sort_keys=True, default=str)
    key = hashlib.sha256(key_payload.encode()).hexdigest()
    where = (folder or cache_dir() / "trained") / f"{name}-{key[:16]}"
    if (where / "provenance.json").is_file():
        return _load(where, name)
    weights = {k: np.asarray(v) for k, v in fit().items()}
    record = Provenance(name, key, dict(data), dict(config), seed, code, git_commit(), libraries,
                        weights_sha256(weights), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    _save(where, weights, record)
    return weights, record


def _save(where: Path, weights: dict, record: Provenance) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{where.name}-", dir=where.parent))
    np.savez(staging / "weights.npz", **weights)
    (staging / "provenance.json").write_text(json.dumps(record.to_dict(), indent=2, default=str))
    try:
        os.replace(staging, where)  # atomic: another process may have finished first, which is fine
    except OSError:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


def _load(where: Path, name: str) -> tuple[dict, Provenance]:
    try:
        record = Provenance(**json.loads((where / "provenance.json").read_text()))
        with np.load(where / "weights.npz", allow_pickle=False) as archive:
            weights = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, TypeError) as err:
        raise TrainedArtefactError(f"the cached trained artefact {name!r} in {where} cannot be read ({err}); "
                                   f"delete that folder to retrain it") from err
    actual = weights_sha256(weights)
    if actual != record.weights_sha256:
        raise TrainedArtefactError(
            f"the cached weights of {name!r} in {where} do not match their provenance record "
            f"(SHA-256 {actual[:12]}... instead of {record.weights_sha256[:12]}...): they were changed after "
            f"training. Delete that folder to retrain from the recorded data and seed.")
    return weights, record
