"""A time limit on one torch.export capture, checked each time the model calls a submodule.

torch.export cannot be stopped from outside without risking the global state it
patches while it traces, so the limit is cooperative: global forward hooks raise
:class:`CaptureTimeout` at the first module call (or return) past the deadline,
in the thread that set the limit, and it unwinds through torch.export like any
error the model itself raises. A capture may overrun by the length of one
module call, and what torch.export does after tracing is not interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

from torch.nn.modules import module as _module

__all__ = ["CaptureTimeout", "Deadline", "time_limit"]


class CaptureTimeout(Exception):
    """The capture ran past its time limit (raised inside the model's forward)."""


@dataclasses.dataclass
class Deadline:
    """What the limit was, and whether the capture ran past it."""

    seconds: float | None
    expired: bool = False


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[Deadline]:
    """Within the block, a module call in this thread after ``seconds`` raises CaptureTimeout (None: no limit)."""
    deadline = Deadline(seconds)
    if seconds is None:
        yield deadline
        return
    end = time.monotonic() + seconds
    thread = threading.get_ident()

    def check(*_: Any) -> None:
        if threading.get_ident() == thread and time.monotonic() > end:
            deadline.expired = True
            raise CaptureTimeout(f"capture took more than {seconds:g} s")

    handles = [_module.register_module_forward_pre_hook(check), _module.register_module_forward_hook(check)]
    try:
        yield deadline
    finally:
        for handle in handles:
            handle.remove()
