"""Big per-item passes in shards: each finished shard lands in a Parquet file as it finishes.

A stage that scores thousands of photos hands them to :func:`map_shards` instead of ``ctx.map``::

    def scores(ctx, photos):
        items = photos.to_dict("records")                     # paths and labels, no pixels
        done = map_shards(ctx, "scores", score_photo, items, setup=build_model)
        return done.table                                     # one row per photo, in item order

    def score_photo(model, item):                             # runs in the worker
        image = load_image(item["path"])                      # the photo is read here, not before
        return {"file": item["file"], "score": float(model(image))}

Items go to the run's engine (:mod:`autopsy.engines`: this process or Ray) ``shard_size`` at a
time; every shard's rows are written to ``<run folder>/shards/<name>-<k>.parquet`` the moment the
shard is done. A run interrupted midway and started again with ``--resume`` reads the finished
shards instead of recomputing them (a shard is reused only if it holds exactly the same items,
checked by a fingerprint in its metadata), and a finished run's rows can be re-analysed later
with :func:`read_shards` on ``outputs/<slug>/shards``.

An item that raises is named by its path. With ``on_error="stop"`` (the default; the command
line's ``--on-error``) the pass ends there, keeping the shards already written; with ``"skip"``
the item is left out and listed, with its error, in the returned :class:`~autopsy.data.Exclusions`.

Parquet: Apache Arrow's columnar file format (https://parquet.apache.org/docs/file-format/).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autopsy.data import Exclusion, Exclusions
from autopsy.engines import Failed, check_on_error, describe

META_KEY = b"autopsy.shard"


@dataclass(frozen=True)
class Sharded:
    """What a sharded pass produced: its rows, the items it left out, where its files are."""

    table: pd.DataFrame  # the rows of every item that succeeded, in item order; column "item" = its index
    exclusions: Exclusions  # items left out (on_error="skip"), each with its path and error
    folder: Path  # the shard files
    n_shards: int
    reused: int  # shards read back from an interrupted run instead of computed


def map_shards(ctx, name: str, func: Callable, items: Sequence, *, setup: Callable | None = None,
               shard_size: int = 256, desc: str | None = None, on_error: str | None = None) -> Sharded:
    """``func(state, item)`` for every item on ``ctx.engine``, in shards saved to Parquet as they finish.

    ``func`` returns one row (a dict of column: value; values are scalars, strings or 1-D arrays)
    or a list of rows for its item; ``setup()`` builds ``state`` once per worker. ``on_error``
    defaults to the engine's (``--on-error``).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a shard name is a plain word (letters, digits, - and _), got {name!r}")
    engine = ctx.engine
    on_error = check_on_error(on_error or getattr(engine, "on_error", "stop"))
    desc = desc or name
    items = list(items)
    folder = Path(ctx.out) / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(items), shard_size)
    keys = {k: _fingerprint(name, func, items[s:s + shard_size]) for k, s in enumerate(starts)}
    todo = [(k, items[s:s + shard_size], s) for k, s in enumerate(starts)
            if _stored_key(_path(folder, name, k)) != keys[k]]
    for stale in _shard_paths(folder, name):  # left by a pass over more items
        if int(stale.stem[-5:]) >= len(keys):
            stale.unlink()
    n_reused = len(keys) - len(todo)
    left = sum(len(part) for _, part, _ in todo)
    base = (len(items) - left) / len(items) if items else 1.0

    def progress(fraction: float, message: str) -> None:
        ctx.progress(base + (1 - base) * fraction, message + (f", {n_reused} shard(s) reused" if n_reused else ""))

    if n_reused:
        ctx.progress(base, f"{desc}: {n_reused} of {len(keys)} shard(s) already done, reading them")
    for k, results in engine.stream(func, todo, setup=setup, progress=progress, desc=desc, on_error=on_error):
        _write(_path(folder, name, k), k * shard_size, items[k * shard_size:(k + 1) * shard_size], results,
               keys[k], desc)
    table, exclusions = read_shards(folder, name, n_shards=len(keys))
    if exclusions.items:
        pd.DataFrame([{"file": e.file, "reason": e.reason} for e in exclusions.items]).to_csv(
            folder / f"{name}-exclusions.csv", index=False)
    return Sharded(table, Exclusions(len(items), exclusions.items), folder, len(keys), n_reused)


def read_shards(folder, name: str, *, n_shards: int | None = None) -> tuple[pd.DataFrame, Exclusions]:
    """The rows of pass ``name`` from its shard files in ``folder`` (e.g. ``outputs/<slug>/shards``),
    in item order, and the items it left out; ``n_shards`` checks that none is missing."""
    folder = Path(folder)
    paths = _shard_paths(folder, name)
    if n_shards == 0:
        return pd.DataFrame({"item": pd.Series([], dtype="int64")}), Exclusions(0)
    if n_shards is not None and len(paths) != n_shards:
        raise FileNotFoundError(f"{folder} holds {len(paths)} of the {n_shards} shard(s) of {name!r}; "
                                "run the stage again (with --resume the finished ones are kept)")
    if not paths:
        raise FileNotFoundError(f"no shard of {name!r} in {folder}: has the stage run with map_shards?")
    frames, skipped, n_items = [], [], 0
    for path in paths:
        stored = pq.read_table(path)
        schema_meta = dict(stored.schema.metadata)
        meta = json.loads(schema_meta.pop(META_KEY))
        n_items += meta["n_items"]
        skipped += [Exclusion(s["label"], s["error"]) for s in meta["skipped"]]
        frames.append(stored.replace_schema_metadata(schema_meta).to_pandas())
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True), Exclusions(n_items, tuple(skipped))


def _path(folder: Path, name: str, k: int) -> Path:
    return folder / f"{name}-{k:05d}.parquet"


def _shard_paths(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}-[0-9][0-9][0-9][0-9][0-9].parquet"))


def _fingerprint(name: str, func: Callable, items: list) -> str:
    """Identifies a shard's work: the pass, the function's name and the exact items."""
    digest = hashlib.sha256(f"{name}\n{getattr(func, '__qualname__', type(func).__name__)}\n".encode())
    digest.update(pickle.dumps(items, protocol=4))
    return digest.hexdigest()


def _stored_key(path: Path) -> str | None:
    """The fingerprint in a finished shard's metadata (None if absent or unreadable: recompute it)."""
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])["key"]
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def _write(path: Path, offset: int, items: list, results: list, key: str, desc: str) -> None:
    """One shard's rows (``item`` first) and its skipped items, written atomically."""
    rows, skipped = [], []
    for k, result in enumerate(results):
        if isinstance(result, Failed):
            skipped.append({"item": result.index, "label": result.label, "error": result.error})
            continue
        for row in _rows(result, items[k], desc):
            if "item" in row:
                raise ValueError(f"{desc}: a row may not have a column called 'item' (the lab adds it: the item's "
                                 "index); rename it")
            rows.append({"item": offset + k, **row})
    frame = pd.DataFrame(rows) if rows else pd.DataFrame({"item": pd.Series([], dtype="int64")})
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError) as err:
        raise ValueError(f"{desc}: the rows of items {offset}-{offset + len(items) - 1} cannot be stored in Parquet "
                         f"({err}); return scalars, strings or 1-D arrays (save images and masks as files)") from err
    meta = {"key": key, "n_items": len(items), "skipped": skipped}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    part = path.with_suffix(".parquet.part")
    pq.write_table(table, part)
    os.replace(part, path)


def _rows(result, item, desc: str) -> list[dict]:
    if isinstance(result, dict):
        return [result]
    if isinstance(result, pd.DataFrame):
        return result.to_dict("records")
    if isinstance(result, (list, tuple)) and all(isinstance(r, dict) for r in result):
        return list(result)
    raise TypeError(f"{desc}: the function returned a {type(result).__name__} for {describe(item)}; "
                    "a sharded pass needs a dict (one row) or a list of dicts per item")
