"""Cases shared among worker processes, their rows handed back in case order.

An evaluation is one independent computation per case, made of small matrix products that one thread already
runs near its peak: processes, one per core, scale almost linearly where threads inside each product do not
(docs/benchmarks.md, "Cost"). Workers are spawned, not forked (a forked child inherits the parent's OpenMP
state and can hang in its first parallel region), build their runner once from a picklable factory (the
saliency evaluation's loads the model again from its files), and run one torch thread each unless there are
cores to spare.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = ["CASES_PER_WORKER", "auto_workers", "case_rows"]

# A spawned worker costs a few seconds (imports, the model unpickled); a case costs 0.3–3 s. Below this many
# cases per worker the start-up is not repaid.
CASES_PER_WORKER = 20

_runner: Callable | None = None  # the worker's own runner, built by _start


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_workers(cases: int) -> int:
    """One worker per available core, as long as each gets ``CASES_PER_WORKER`` cases; at least 1."""
    return max(1, min(available_cores(), cases // CASES_PER_WORKER))


@contextmanager
def case_rows(make_runner: Callable[[], Callable], todo: Sequence[tuple], workers: int) -> Iterator[Iterator]:
    """``with case_rows(factory, items, n) as rows:`` iterate ``runner(*item)`` for each item, in order.

    ``workers`` ≤ 1 runs in this process. Otherwise ``make_runner`` (picklable: a module-level class or a
    ``functools.partial`` of one) is sent to each worker; leaving the block early (an error, Ctrl-C) terminates
    the workers, and rows already yielded are the caller's to keep.
    """
    if workers < 1:
        raise ValueError(f"expected at least 1 worker; received {workers}")
    workers = min(workers, max(1, len(todo)))
    if workers == 1:
        runner = make_runner()
        yield (runner(*item) for item in todo)
        return
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start, initargs=(make_runner, threads)) as pool:
        yield pool.imap(_run, todo, chunksize=1)


def _start(make_runner: Callable[[], Callable], threads: int) -> None:
    global _runner
    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker must not print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _keep_freed_memory()
    _runner = make_runner()


def _keep_freed_memory() -> None:
    """glibc returns large blocks to the kernel on free and maps them again on the next batch: about a tenth of
    a case's time went to page faults. A worker is ours, so it keeps freed memory mapped (glibc only)."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
    mallopt(mmap_threshold, 32 << 20)  # glibc's ceiling on 64-bit; a chunk's tensors are a few MiB
    mallopt(trim_threshold, 2**31 - 1)


def _run(item: tuple):
    return _runner(*item)
