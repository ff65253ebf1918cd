"""A time limit on one torch.export capture, checked at each torch call made while capturing.

torch.export cannot be stopped from outside without risking the global state it
patches while it traces, so the limit is cooperative: a torch function mode
(the mechanism ``with torch.device(...)`` uses) raises :class:`CaptureTimeout`
at the first torch call past the deadline -- in the model's forward, or in the
decompositions run after torch.export returns -- and it unwinds like any error
a torch call raises. A capture may overrun by the length of one call (one
``view`` whose symbolic sizes take seconds to simplify).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["CaptureTimeout", "Deadline", "time_limit"]


class CaptureTimeout(Exception):
    """The capture ran past its time limit (raised inside the model's forward)."""


@dataclasses.dataclass
class Deadline:
    """What the limit was, and whether the capture ran past it."""

    seconds: float | None
    expired: bool = False


class _Check(TorchFunctionMode):
    """Passes every torch call through unchanged, until the deadline; then raises CaptureTimeout."""

    def __init__(self, deadline: Deadline, end: float) -> None:
        super().__init__()
        self.deadline, self.end = deadline, end

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if time.monotonic() > self.end:
            self.deadline.expired = True
            raise CaptureTimeout(f"capture took more than {self.deadline.seconds:g} s")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[Deadline]:
    """Within the block, a torch call (in this thread) after ``seconds`` raises CaptureTimeout; None: no limit."""
    deadline = Deadline(seconds)
    if seconds is None:
        yield deadline
        return
    with _Check(deadline, time.monotonic() + seconds):
        yield deadline
