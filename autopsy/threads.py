"""How many threads the lab's numeric libraries use: the cores that are free, decided once per run.

torch (OpenMP, oneDNN), LiteRT (XNNPACK) and ONNX Runtime each size a pool of worker threads to
the machine's cores. Where other work is running, those workers fight it for the busy cores:
every parallel region waits for its slowest thread, and waiting workers spin on cores the other
process needs. A quick profile beside one CPU-bound process on 2 cores ran 3.2x slower than on
a quiet machine, where a fair share of the machine would make it 2x. So a run sizes the pools
once, when it starts (:func:`configure`, called by :func:`autopsy.runner.run`):

- ``AUTOPSY_THREADS=N`` fixes the number (benchmarks, batch queues, a machine you know);
- otherwise the cores this process may use (CPU affinity and the cgroup's CPU quota), less the
  cores other processes kept busy during a short sample of ``/proc/stat`` (at least one).

The engines that run reference runtimes (:mod:`autopsy.models.tflite`'s LiteRT engine, ONNX
Runtime) read :func:`current` when they build their interpreters, so every runtime in a run uses
the same number.

:func:`configure` also keeps large tensors' memory in the heap (:func:`tune_allocator`): glibc
gives every allocation above 32 MB fresh pages from the kernel and returns them on free, so a
layer that writes a 46 MB activation first waits for the kernel to zero 11,000 pages; reusing the
heap made a 512x512 FastGaze pass 24% faster. (The field's usual fix is the same: jemalloc or
tcmalloc preloaded for CPU inference.)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

ENV = "AUTOPSY_THREADS"
#: Seconds of /proc/stat sampled to see how busy the other processes keep the cores.
SAMPLE_SECONDS = 0.3

_configured: int | None = None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_quota() -> float | None:
    """CPUs the cgroup may use (cpu.max in v2, cfs_quota_us / cfs_period_us in v1); None: no quota."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def _cpu_times() -> dict[int, tuple[int, int]] | None:
    """(busy, total) jiffies per CPU from /proc/stat; None where there is no /proc (macOS, Windows)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of this process's cores other processes keep busy, sampled over ``seconds``.

    The caller sleeps while sampling; CPU time this process's other threads spend meanwhile is
    taken off, so the busy time is the others'. Without /proc, the 1-minute load average stands in.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    before = _cpu_times()
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    own = time.process_time()
    time.sleep(seconds)
    after = _cpu_times() or {}
    own = (time.process_time() - own) * os.sysconf("SC_CLK_TCK")  # jiffies, as /proc/stat counts
    busy = total = 0
    for cpu, (b0, t0) in before.items():
        if (allowed is None or cpu in allowed) and cpu in after:
            busy += after[cpu][0] - b0
            total += after[cpu][1] - t0
    cores = len(allowed) if allowed else len(before)
    return cores * max(0.0, busy - own) / total if total > 0 else 0.0


#: A core counts as taken when others keep it this busy: a CPU-bound competitor shows ~1.0; a
#: short command that happens to run during the sample (a shell, git) shows a fraction.
TAKEN = 0.75


def free_cores() -> int:
    """Usable cores less those other processes keep busy (a core counts from :data:`TAKEN`), at least 1."""
    return max(1, usable_cores() - math.floor(busy_cores() + 1 - TAKEN))


def decide(threads: int | None = None) -> tuple[int, str]:
    """(threads, why): ``threads`` if given, else ``$AUTOPSY_THREADS``, else :func:`free_cores`."""
    if threads is not None:
        return _positive(threads, "threads"), "given"
    setting = os.environ.get(ENV, "").strip()
    if setting:
        return _positive(setting, f"${ENV}"), f"${ENV}"
    return free_cores(), f"free cores of {usable_cores()}"


def _positive(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be a whole number of threads >= 1, got {value!r}; "
                         f"unset {ENV} to follow the free cores")
    return number


#: Allocations up to this size come from the heap and go back to it (glibc's default: 32 MB) ...
MMAP_THRESHOLD = 256 * 2**20
#: ... and up to this much free memory stays at the heap's top between passes (default: 128 kB).
TRIM_THRESHOLD = 256 * 2**20


def tune_allocator() -> bool:
    """Let large tensors reuse heap memory (glibc ``mallopt``); False where there is no glibc, or
    where ``$AUTOPSY_MALLOC=default`` keeps glibc's defaults."""
    import ctypes
    import ctypes.util

    if os.environ.get("AUTOPSY_MALLOC", "").strip() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD)) and bool(libc.mallopt(-1, TRIM_THRESHOLD))  # M_MMAP_, M_TRIM_
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Large frees stay in the heap (see :func:`tune_allocator`), and a few small live pieces can pin
    freed pages: resident memory grows with every photo pass unless it is trimmed now and then,
    and after a stage's outputs are dropped.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def configure(threads: int | None = None) -> int:
    """Size torch's thread pool (and every engine built afterwards) for this run; returns the number.

    Call once when a run starts; later calls re-decide (a new run on a machine whose load changed).
    Also :func:`tune_allocator`.
    """
    global _configured
    import torch

    tune_allocator()
    number, _ = decide(threads)
    torch.set_num_threads(number)
    try:
        torch.set_num_interop_threads(1)  # stages run one thing at a time; only settable before first use
    except RuntimeError:
        pass
    _configured = number
    return number


def current() -> int:
    """The number of threads the run was configured with (torch's own setting if none was)."""
    if _configured is not None:
        return _configured
    import torch

    return torch.get_num_threads()
