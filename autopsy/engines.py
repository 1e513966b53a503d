"""Where a stage's per-item work runs: in this process (the default) or on Ray.

A stage hands its unit of work to the engine as ``ctx.map(func, items, setup=...)``: ``setup()``
builds what every item needs (a model) once per worker, ``func(state, item)`` computes one item.
Engines return results in the order of ``items``. The local engine computes items with the run's
threads (:mod:`autopsy.threads`: the free cores); Ray workers with one thread each, side by side.
torch's parallel reductions may add in an order that depends on the thread count, so bitwise
equality between engines needs ``LocalEngine(threads=1)``; in practice the incidents' metrics
come out identical either way (the Twitter quick profile: 0 differences between 1 and 2 threads),
as long as ``func`` draws no random numbers of its own (pass a seed in the item instead).

Big per-image passes go through :func:`autopsy.shards.map_shards`, which uses :meth:`stream`:
shards of items come back one by one as they finish, each saved before the next is awaited.

An item that raises is reported with its path (or a short description); ``on_error="stop"``
(the default) ends the run there, ``"skip"`` leaves the item out of a sharded pass and records
it in the run's exclusions. A plain ``map`` always stops: its caller expects one result per item.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

ON_ERROR = ("stop", "skip")


class ItemError(ValueError):
    """One item of a per-item pass failed; the message names the item (its path) and what to do."""


@dataclass(frozen=True)
class Failed:
    """The place of an item that raised, in a result list: which item, what it was, what went wrong."""

    index: int  # position in the items handed to the engine
    label: str  # the item's path, or a short description
    error: str  # "ExceptionType: message"
    trace: str = ""
    exception: BaseException | None = None  # the original, when it survives pickling (Ray)


def describe(item) -> str:
    """A short name for ``item`` in messages and exclusions: its path when it has one."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, dict):
        for key in ("path", "file"):
            if key in item:
                return str(item[key])
    filename = getattr(item, "filename", None)  # a PIL image opened from a file
    if isinstance(filename, str) and filename:
        return filename
    text = repr(item).replace("\n", " ")
    return text if len(text) <= 80 else f"{type(item).__name__} {text[:60]}..."


def apply(func: Callable, state, items: Sequence, offset: int = 0) -> list:
    """``[func(state, item) ...]`` with a :class:`Failed` record in the place of each item that raised."""
    out = []
    for k, item in enumerate(items):
        try:
            out.append(func(state, item))
        except Exception as err:  # noqa: BLE001 - reported with the item's name; the caller stops or skips
            out.append(_failed(offset + k, item, err))
    return out


def _failed(index: int, item, err: Exception) -> Failed:
    try:
        pickle.dumps(err)
        kept = err
    except Exception:  # noqa: BLE001 - some exceptions cannot travel between processes; the text does
        kept = None
    return Failed(index, describe(item), f"{type(err).__name__}: {err}", traceback.format_exc(), kept)


def item_error(failed: Failed, desc: str, *, skippable: bool) -> ItemError:
    """The error that stops a run at ``failed``, naming the item and the ways forward."""
    how = ("fix or remove it, or run with --on-error skip to leave such items out "
           "(they are listed in the run's exclusions)" if skippable else
           "fix or remove it (this stage needs a result for every item, so it cannot skip one)")
    err = ItemError(f"{desc} item {failed.index} ({failed.label}) failed: {failed.error}; {how}")
    if failed.exception is None and failed.trace:
        err.add_note(f"in the worker:\n{failed.trace}")
    return err


def as_shards(shards) -> list[tuple[object, list, int]]:
    """``(key, items)`` or ``(key, items, offset)`` pairs as ``(key, items, offset)``; ``offset``
    (default 0) is the index of the shard's first item among all items, for messages."""
    out = []
    for shard in shards:
        key, items, offset = shard if len(shard) == 3 else (*shard, 0)
        out.append((key, list(items), offset))
    return out


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    return on_error


class Progress:
    """Turns items done into ``progress(fraction, "desc: done/total (rate/s, ETA)")`` calls."""

    def __init__(self, total: int, callback: Callable[[float, str], None] | None, desc: str, *, steps: int = 50):
        self.total, self.callback, self.desc = total, callback, desc
        self.done, self.started, self.step = 0, time.perf_counter(), max(1, total // steps)

    def advance(self, n: int) -> None:
        """``n`` more items are done; report when a step of about 2% is crossed, and at the end."""
        before, self.done = self.done, self.done + n
        if self.callback is None or self.total == 0:
            return
        if self.done // self.step == before // self.step and self.done < self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        self.callback(self.done / self.total,
                      f"{self.desc}: {self.done}/{self.total} ({rate:.1f}/s, ETA {_clock(eta)})")


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (``None``: leave torch's setting alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Engine:
    """What every engine offers stages: ``map`` (all items, in order) on top of its ``stream`` (shards)."""

    def map(self, func: Callable, items: Sequence, *, setup: Callable | None = None,
            progress: Callable[[float, str], None] | None = None, desc: str = "items") -> list:
        """``[func(state, item) for item in items]`` with ``state = setup()`` once per worker; an item that
        raises stops it."""
        [(_, results)] = self.stream(func, [(0, items)], setup=setup, progress=progress, desc=desc,
                                     on_error="stop", skippable=False)
        return results


class LocalEngine(Engine):
    """Everything in this process, one item after another, each with ``threads`` torch threads.

    ``threads=None`` (the default) keeps the run's setting (:func:`autopsy.threads.configure`: the
    free cores), so a two-core machine uses both in the heaviest stages (the Twitter trials ran
    1.45x faster than with one thread); ``threads=1`` matches a Ray worker bit for bit.
    """

    name = "local"

    def __init__(self, *, threads: int | None = None, on_error: str = "stop"):
        self.threads, self.on_error = threads, check_on_error(on_error)


    def stream(self, func: Callable, shards: Sequence[tuple], *, setup: Callable | None = None,
               progress: Callable[[float, str], None] | None = None, desc: str = "items",
               on_error: str | None = None, skippable: bool = True) -> Iterator[tuple[object, list]]:
        """``(key, results)`` for each ``(key, items[, offset])`` shard as it finishes; ``setup()`` runs once.

        With ``on_error="skip"`` a failed item's place holds a :class:`Failed` record.
        """
        on_error = check_on_error(on_error or self.on_error)
        shards = as_shards(shards)
        tracker = Progress(sum(len(items) for _, items, _ in shards), progress, desc)
        with torch_threads(self.threads):
            state = setup() if setup is not None and tracker.total else None
            for key, items, offset in shards:
                results = []
                for k, item in enumerate(items):
                    [result] = apply(func, state, [item], offset=offset + k)
                    if isinstance(result, Failed) and on_error == "stop":
                        raise item_error(result, desc, skippable=skippable) from result.exception
                    results.append(result)
                    tracker.advance(1)
                yield key, results

    def close(self) -> None:
        pass


def get_engine(name: str | None = None, **options):
    """The engine called ``name`` (``local`` or ``ray``); ``options`` go to its constructor."""
    if name in (None, "local"):
        if options.pop("address", None):
            raise ValueError("--address names a Ray cluster to join; add --engine ray")
        return LocalEngine(**options)
    if name == "ray":
        try:
            from autopsy.ray_engine import RayEngine
        except ImportError as err:
            raise ValueError(f"the Ray engine needs `pip install 'ray[default]'` "
                             f"(or `pip install -e '.[scale]'`): {err}") from err
        return RayEngine(**options)
    raise ValueError(f"unknown engine {name!r}; choose local or ray")


def chunks(items: Iterable, size: int) -> list[list]:
    """``items`` in consecutive lists of at most ``size``."""
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]
