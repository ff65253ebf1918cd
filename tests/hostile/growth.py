"""Growth checks: run a reader on an input of size n and of size 8n, and fail when the work grows
faster than about linearly (8x; quadratic would be 64x).

Work is measured three ways, each inside the one test, so machine speed cancels out:

* ``"memory"``: tracemalloc's peak over the call (allocations, deterministic);
* ``"time"``: CPU time of the call, the best of three (for work that allocates nothing);
* a ``count`` callable: anything the call lets us count (nodes created, comparisons made).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# Linear work gives a ratio near 8 (n log n a little more); quadratic gives 64. Generous, so a
# busy machine or a cache effect never fails a linear path, and still far from 64.
BOUND = 24.0


def _run(fn: Callable[[Any], Any], arg: Any, expect: tuple[type[BaseException], ...]) -> None:
    try:
        fn(arg)
    except expect:
        pass


def measure(fn: Callable[[Any], Any], arg: Any, how: str | Callable[[], int],
            expect: tuple[type[BaseException], ...] = ()) -> float:
    """The work of one call ``fn(arg)`` (an expected exception counts as a normal end)."""
    if callable(how):
        before = how()
        _run(fn, arg, expect)
        return float(how() - before)
    if how == "memory":
        tracemalloc.start()
        try:
            _run(fn, arg, expect)
            return float(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        _run(fn, arg, expect)
        best = min(best, time.process_time() - start)
    return max(best, 1e-4)


def assert_linear(fn: Callable[[Any], Any], make_input: Callable[[int], Any], n: int, *,
                  how: str | Callable[[], int] = "memory", expect: tuple[type[BaseException], ...] = (),
                  bound: float = BOUND) -> tuple[float, float]:
    """Fail if ``fn(make_input(8 * n))`` costs more than ``bound`` times ``fn(make_input(n))``.

    Inputs are built before measuring. Returns the two measures, for a test that wants more.
    """
    small, large = make_input(n), make_input(8 * n)
    measure(fn, small, how, expect)  # warm caches and lazy imports outside the measure
    a = measure(fn, small, how, expect)
    b = measure(fn, large, how, expect)
    assert b <= bound * a, f"work grew {b / a:.1f}x for 8x the input ({how}: {a:.4g} -> {b:.4g}); bound {bound}x"
    return a, b
