"""Best-of timing for the bench scripts: the least of several runs filters out other jobs' bursts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def seconds(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Best wall time of `repeat` runs of `fn`."""
    return _best(fn, repeat, time.perf_counter)


def cpu_seconds(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Best CPU time of this process over `repeat` runs of `fn`. For a step that runs in one thread it is
    the wall time on an idle core; on a shared machine it leaves out the time other jobs hold the core."""
    return _best(fn, repeat, time.process_time)


def _best(fn: Callable[[], Any], repeat: int, clock: Callable[[], float]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return max(best, 1e-9)
