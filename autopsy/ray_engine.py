"""The Ray engine: a stage's per-item work on a pool of Ray actors, on this machine or a cluster.

Moritz et al. (2018), "Ray: A Distributed Framework for Emerging AI Applications", OSDI.

Each actor runs ``setup()`` once per pass (it loads the model) and then computes batches of items
with ``func(state, item)`` on ``threads`` torch threads; the driver keeps two batches in flight
per actor and puts results back in item order, so the numbers are those of
:class:`~autopsy.engines.LocalEngine` (same threads per item) to the last digit. The actors
(processes with torch imported) serve every pass of a run and stop with :meth:`RayEngine.close`. A pool of actors
rather than Ray Data's ``map_batches`` with a callable class: the items are arbitrary Python
objects (photos, paths, tuples of ids) and the results are rows or arrays of any shape, which
actors pass through untouched, whereas Ray Data would turn both into Arrow blocks; the pool also
lets a shard be written the moment its last batch returns (:meth:`RayEngine.stream`).

A worker that dies (killed, out of memory, its machine gone) is restarted, running ``setup()``
again, and its batches are retried, ``max_retries`` times (Ray's ``max_restarts`` and
``max_task_retries``). An item that raises is not retried: it is a property of the item.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Callable, Iterator, Sequence

import ray
from ray.exceptions import RayActorError

from autopsy.engines import Engine, Failed, Progress, apply, as_shards, check_on_error, describe, item_error

#: The object store a local instance gets: the lab passes photos and small results, not tensors.
LOCAL_OBJECT_STORE = 1024**3
IN_FLIGHT = 2  # batches queued per actor, so an actor never waits for the driver


class _Worker:
    """One Ray actor: per pass, ``setup()`` once (on the pass's first batch), then batches of items.

    ``func`` and ``setup`` come as object-store refs inside each call (a list, so Ray does not
    resolve them): a restarted actor fetches them again with its first retried batch. The actor
    process (its imports) outlives a pass; the pass's state is released when it ends.
    """

    def __init__(self, threads: int):
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        self.release()

    def run(self, token: int, refs: list, items: list, offset: int) -> list:
        if self.token != token:
            self.release()
            self.token, (self.func, setup) = token, ray.get(refs)
            try:
                self.state = setup() if setup is not None else None
            except Exception as err:  # noqa: BLE001 - raised again in the driver (a missing asset, ...)
                self.error = err
        if self.error is not None:
            raise self.error
        return apply(self.func, self.state, items, offset)

    def release(self) -> None:
        self.token = self.func = self.state = self.error = None


class RayEngine(Engine):
    """Per-item work on Ray actors. Without ``address``, a local Ray instance sized to this machine.

    ``num_cpus`` sizes a local instance (default: every core); ``num_workers`` actors (default:
    the cluster's CPUs divided by ``threads``), each holding ``threads`` CPUs and computing
    with as many torch threads (as :class:`~autopsy.engines.LocalEngine` does, so the numbers
    agree to the last digit), serve every pass of the run; items go to them in batches of ``batch_size``
    (default: about four batches per worker, at most 64 items). ``close()`` shuts down the
    instance it started, or disconnects from a cluster it joined.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, num_workers: int | None = None,
                 threads: int = 1, batch_size: int | None = None, max_retries: int = 3,
                 object_store_memory: int | None = LOCAL_OBJECT_STORE, on_error: str = "stop", **init_options):
        self.on_error = check_on_error(on_error)
        if threads < 1:
            raise ValueError(f"threads must be at least 1 per worker, got {threads}")
        self.threads, self.batch_size, self.max_retries = threads, batch_size, max_retries
        self.address = address
        self._connected, self._actors, self._passes = False, [], 0
        if not ray.is_initialized():
            ray.init(**self._init_options(address, num_cpus, object_store_memory, init_options))
            self._connected = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.num_workers = num_workers or max(1, cpus // threads)

    @staticmethod
    def _init_options(address, num_cpus, object_store_memory, extra) -> dict:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            return {"address": address, **quiet, **extra}
        # Local workers import the stages' modules as this process does (a checkout, tests/...).
        path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p and os.path.isdir(p))
        return {"num_cpus": num_cpus or len(os.sched_getaffinity(0)), "object_store_memory": object_store_memory,
                "include_dashboard": False, "_node_ip_address": "127.0.0.1",
                "runtime_env": {"env_vars": {"PYTHONPATH": path}}, **quiet, **extra}

    def stream(self, func: Callable, shards: Sequence[tuple], *, setup: Callable | None = None,
               progress: Callable[[float, str], None] | None = None, desc: str = "items",
               on_error: str | None = None, skippable: bool = True) -> Iterator[tuple[object, list]]:
        """``(key, results)`` for each ``(key, items[, offset])`` shard as its last batch returns.

        With ``on_error="skip"`` a failed item's place holds a :class:`~autopsy.engines.Failed` record.
        """
        on_error = check_on_error(on_error or self.on_error)
        shards = as_shards(shards)
        tracker = Progress(sum(len(items) for _, items, _ in shards), progress, desc)
        size = self.batch_size or min(64, max(1, math.ceil(tracker.total / (4 * self.num_workers))))
        batches = [(s, start, items[start:start + size]) for s, (_, items, _) in enumerate(shards)
                   for start in range(0, len(items), size)]
        results = [[None] * len(items) for _, items, _ in shards]
        left = [len(items) for _, items, _ in shards]
        yield from ((key, []) for key, items, _ in shards if not items)
        if not batches:
            return
        self._passes += 1
        token, refs = self._passes, [ray.put(func), ray.put(setup)]  # serialised once, whatever func holds
        actors = self._pool(min(self.num_workers, len(batches)))
        queue, pending, finished = iter(range(len(batches))), {}, False

        def submit(actor) -> None:
            j = next(queue, None)
            if j is not None:
                s, start, items = batches[j]
                pending[actor.run.remote(token, refs, items, shards[s][2] + start)] = (actor, j)

        try:
            for actor in actors * IN_FLIGHT:
                submit(actor)
            while pending:
                ray.wait(list(pending), num_returns=1)
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in sorted(ready, key=lambda r: pending[r][1]):  # in item order when several are back
                    actor, j = pending.pop(ref)
                    s, start, items = batches[j]
                    for k, result in enumerate(self._get(ref, items, shards[s][2] + start, desc)):
                        if isinstance(result, Failed) and on_error == "stop":
                            raise item_error(result, desc, skippable=skippable) from result.exception
                        results[s][start + k] = result
                    left[s] -= len(items)
                    tracker.advance(len(items))
                    submit(actor)
                    if left[s] == 0:
                        yield shards[s][0], results[s]
                        results[s] = None
            finished = True
        finally:
            if finished:
                for actor in actors:
                    actor.release.remote()
            else:  # stopped early (an item failed, a worker died, the caller stopped): drop the pool
                for ref in pending:
                    ray.cancel(ref)
                self._drop_pool()

    def _pool(self, n: int) -> list:
        """``n`` live actors, started once and reused by later passes."""
        if len(self._actors) < n:
            worker = ray.remote(_Worker).options(num_cpus=self.threads, max_restarts=self.max_retries,
                                                  max_task_retries=self.max_retries)
            self._actors += [worker.remote(self.threads) for _ in range(n - len(self._actors))]
        return self._actors[:n]

    def _drop_pool(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def _get(self, ref, items: list, start: int, desc: str) -> list:
        try:
            return ray.get(ref)
        except RayActorError as err:
            raise RuntimeError(
                f"a Ray worker died {self.max_retries + 1} times computing {desc} {start}-{start + len(items) - 1} "
                f"(first: {describe(items[0])}); look for memory pressure or a crash in its log "
                f"(ray logs, or /tmp/ray/session_latest/logs on its node): {err}") from err
        except ray.exceptions.RayTaskError as err:  # setup() failed in the actor: raise what it raised
            if isinstance(getattr(err, "cause", None), Exception):
                raise err.cause from None
            raise

    def close(self) -> None:
        """Shut down the local instance this engine started (or leave the cluster it joined)."""
        if ray.is_initialized():
            self._drop_pool()
        if self._connected and ray.is_initialized():
            ray.shutdown()
        self._connected = False
