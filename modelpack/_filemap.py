"""Copy-on-write memory maps of a file that hold no file descriptor.

CPython's ``mmap.mmap`` duplicates the descriptor it is given and keeps the copy
until the map is closed, which a map still viewed by tensors never is: one
descriptor per loaded file, and ``EMFILE`` once a process has loaded as many
files as its descriptor limit (1024, or 64 on some machines). The kernel needs
no descriptor once a mapping exists, so on POSIX we call ``mmap(2)`` through
libc and tie ``munmap`` to the lifetime of the object numpy keeps as the base of
every view. Elsewhere (Windows) ``mmap.mmap`` remains, with ``trackfd=False``
where Python has it.
"""

from __future__ import annotations

import ctypes
import mmap as _mmap
import os
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["map_copy_on_write"]


def _libc_mmap() -> tuple[Any, Any] | None:
    """libc's mmap and munmap with their C signatures, or None where they cannot be reached."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, munmap_fn = libc.mmap, libc.munmap
    except (OSError, AttributeError):  # pragma: no cover - a POSIX libc without mmap
        return None
    mmap_fn.restype = ctypes.c_void_p
    mmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    munmap_fn.restype = ctypes.c_int
    munmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return mmap_fn, munmap_fn


_LIBC = _libc_mmap()
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Region:
    """One private mapping; numpy arrays over it keep it alive through their ``base``.

    ``munmap`` runs when the last view is gone, never at interpreter exit while
    views may still be reachable (``atexit = False``).
    """

    def __init__(self, address: int, size: int, munmap: Callable[[int, int], int]) -> None:
        self.__array_interface__ = {"data": (address, False), "shape": (size,), "typestr": "|u1", "version": 3}
        weakref.finalize(self, munmap, address, size).atexit = False


def map_copy_on_write(fd: int, size: int) -> np.ndarray:
    """The first ``size`` bytes of ``fd`` as a writable uint8 array; writes never reach the file.

    The caller may close ``fd`` at once: the mapping does not need it.
    """
    if _LIBC is None:  # pragma: no cover - exercised on Windows only
        keep_fd = {"trackfd": False} if sys.version_info >= (3, 13) and os.name == "posix" else {}
        return np.frombuffer(_mmap.mmap(fd, size, access=_mmap.ACCESS_COPY, **keep_fd), np.uint8)
    mmap_fn, munmap_fn = _LIBC
    address = mmap_fn(None, size, _mmap.PROT_READ | _mmap.PROT_WRITE, _mmap.MAP_PRIVATE, fd, 0)
    if address in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap failed: {os.strerror(err)}")
    return np.asarray(_Region(address, size, munmap_fn))
