"""Cyclic garbage collection paused while a pack is parsed, decoded or written.

Those steps allocate tens of thousands of small acyclic objects (JSON dicts, manifest
entries, tensor objects), each batch of which would trigger a collection that walks every
live object of the program; reference counting alone frees everything they drop. The
collector is switched back on when the step ends (if it was on), whatever happens.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    if not gc.isenabled():  # paused already (a nested step, or the caller's choice): leave it as it is
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
