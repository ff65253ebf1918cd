"""A per-input budget (time and memory) for fuzz harnesses and replays, each overrun a finding.

Two ways to hold one input to it:

* :func:`run_forked`: the input runs in a forked child under ``setrlimit(RLIMIT_DATA)`` and
  ``alarm``; the parent reports how it ended. Nothing the input does (a hang inside C code, a
  runaway allocation) can touch the caller. Used for replays and by the test of the harness.
* :func:`limit_memory` and :func:`cpu_budget`: for the coverage-guided run itself (a forked
  child's coverage would be lost to libFuzzer). A data limit set once (the size at start plus
  the budget) turns a runaway allocation into a MemoryError; a CPU-time timer (``ITIMER_PROF``:
  libFuzzer owns SIGALRM) raises :class:`OverBudget` between bytecodes. CPU time, not wall
  time, so a fuzzer running under ``nice`` on a busy machine reports no false hangs; libFuzzer's
  ``-timeout`` (wall time, C code) backs it up for a hang inside one C call.

Memory is counted as ``RLIMIT_DATA`` counts it (private writable mappings: the heap and anonymous
mmaps, where numpy and torch put tensors), above what the process holds before the input.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SECONDS = 2.0
MEMORY = 1 << 30

_EXIT_OK, _EXIT_RAISED, _EXIT_MEMORY = 0, 3, 4


class OverBudget(BaseException):
    """An input ran past its CPU budget (a BaseException: no ``except Exception`` swallows it)."""


def data_size() -> int:
    """This process's data segment now (bytes), as RLIMIT_DATA counts it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one input ended: ok, raised (a non-ModelPackError: the traceback is in ``detail``),
    memory (MemoryError), timeout (killed by the alarm) or signal (another signal)."""

    status: str
    seconds: float
    detail: str = ""

    @property
    def finding(self) -> bool:
        return self.status != "ok"


def _child(fn: Callable[[bytes], None], data: bytes, seconds: float, memory: int) -> None:
    limit = data_size() + memory
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action kills, even inside C code
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fn(data)
    except MemoryError:
        os._exit(_EXIT_MEMORY)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(_EXIT_RAISED)
    os._exit(_EXIT_OK)


def run_forked(fn: Callable[[bytes], None], data: bytes, *, seconds: float = SECONDS,
               memory: int = MEMORY) -> Outcome:
    """Run ``fn(data)`` in a forked child held to ``seconds`` of wall time and ``memory`` bytes."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        _child(fn, data, seconds, memory)
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - start
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGALRM:
            return Outcome("timeout", took, f"over {seconds:g} s")
        return Outcome("signal", took, signal.Signals(sig).name)
    code = os.WEXITSTATUS(status)
    if code == _EXIT_MEMORY:
        return Outcome("memory", took, f"over {memory >> 20} MiB")
    if code != _EXIT_OK:
        return Outcome("raised", took, f"exit {code} (traceback on stderr)")
    return Outcome("ok", took)


def limit_memory(memory: int = MEMORY) -> int:
    """Cap this process's data segment at its size now plus ``memory``; return the cap."""
    limit = data_size() + memory
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return limit


def _expired(signum: int, frame: Any) -> None:
    raise OverBudget("the input ran past its CPU-time budget")


@contextmanager
def cpu_budget(seconds: float = SECONDS) -> Iterator[None]:
    """Raise OverBudget if the enclosed block uses more than ``seconds`` of CPU (all threads)."""
    previous = signal.signal(signal.SIGPROF, _expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
