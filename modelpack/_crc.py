"""CRC-32 (the zip checksum): the fastest implementation at hand that gives zlib's exact values.

In order of preference: ISA-L (``pip install 'modelpack[fast]'``), libdeflate called
through ctypes where the system has it (both use carry-less multiplication, 10+ GB/s),
and zlib (about 1 GB/s with zlib 1.2). A library is used only after it reproduces
zlib's CRC-32 on check vectors; otherwise the next one is tried. All of them release
the GIL on big buffers, so the writer can overlap a CRC with a write. Setting
``MODELPACK_NO_LIBDEFLATE=1`` skips libdeflate (to compare backends, or to rule one out).

The arithmetic half gives the checksum of joined bytes from the checksums of the parts, with no
byte read (DCP consolidation copies chunks file to file). CRC-32 is linear over GF(2): appending ``n`` bytes multiplies the running
value by x^(8n) modulo the polynomial, then adds the tail's own CRC. So the
CRC of ``A + B`` follows from ``crc(A)``, ``crc(B)`` and ``len(B)``, and
``crc(B)`` from ``crc(A + B)``, ``crc(A)`` and ``len(B)``. Bits are kept in
zlib's reflected order (bit 31 is x^0).
"""

from __future__ import annotations

import ctypes
import functools
import os
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["crc32", "BACKEND", "crc32_combine", "crc32_tail"]

_SMALL = 4096  # below this zlib's own call is cheaper than a ctypes call
_LIBDEFLATE_NAMES = ("libdeflate.so.0", "libdeflate.so", "libdeflate.0.dylib", "libdeflate.dylib")
_CHECKS = (b"", b"123456789", bytes(range(256)) * 41 + b"\x01\x02\x03")  # crosses _SMALL, odd length

Crc32 = Callable[..., int]


def _isal() -> Crc32 | None:
    try:
        from isal.isal_zlib import crc32
    except ImportError:
        return None
    return crc32  # type: ignore[no-any-return]


def _libdeflate() -> Crc32 | None:
    if os.environ.get("MODELPACK_NO_LIBDEFLATE"):
        return None
    for name in _LIBDEFLATE_NAMES:
        try:
            fn = ctypes.CDLL(name).libdeflate_crc32
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]  # a CDLL call releases the GIL
    return _via_address(fn)


def _via_address(fn: Any) -> Crc32:
    """``crc32(data, value=0)`` over any contiguous buffer, small ones through zlib."""
    small, address_of, char_at = zlib.crc32, ctypes.addressof, ctypes.c_char.from_buffer

    def crc32(data: Any, value: int = 0) -> int:
        kind = type(data)
        if kind is bytes:
            if len(data) < _SMALL:
                return small(data, value)
            return fn(value, data, len(data))  # type: ignore[no-any-return]
        n = data.nbytes if kind is memoryview else len(data) if kind is bytearray else memoryview(data).nbytes
        if n < _SMALL:
            return small(data, value)
        try:  # the export is held (``pinned``) until the call returns: the memory cannot move meanwhile
            pinned: Any = char_at(data)  # writable memory (tensors, arrays): the cheapest way to its address
            address = address_of(pinned)
        except TypeError:  # read-only: numpy finds the address of any buffer, no copy
            pinned = np.frombuffer(data, np.uint8)
            address = pinned.__array_interface__["data"][0]
        return fn(value, address, n)  # type: ignore[no-any-return]

    return crc32


def _agrees(fn: Crc32) -> bool:
    try:
        return all(fn(memoryview(c)) == zlib.crc32(c) and fn(c, 7) == zlib.crc32(c, 7) for c in _CHECKS)
    except Exception:  # noqa: BLE001 - a broken library is skipped, never trusted
        return False


def _pick() -> tuple[str, Crc32]:
    for name, make in (("isal", _isal), ("libdeflate", _libdeflate)):
        fn = make()
        if fn is not None and _agrees(fn):
            return name, fn
    return "zlib", zlib.crc32


BACKEND, crc32 = _pick()


# ----------------------------------------------------------------------------- arithmetic

_POLY = 0xEDB88320  # x^32 + x^26 + ... + 1, reflected
_ONE = 1 << 31  # x^0
_X8 = 1 << 23  # x^8: one byte


def _mulmod(a: int, b: int) -> int:
    """a * b modulo the polynomial (both reflected)."""
    out = 0
    bit = _ONE
    while a:
        if a & bit:
            out ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return out


@functools.cache
def _powers() -> tuple[int, ...]:
    """x^(8 * 2^k) modulo the polynomial for k = 0..63: one factor per set bit of a byte count."""
    out = [_X8]
    for _ in range(63):
        out.append(_mulmod(out[-1], out[-1]))
    return tuple(out)


@functools.lru_cache(maxsize=4096)  # tensors repeat a few sizes: most shifts are looked up
def _shift(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending ``n`` bytes does to a CRC."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"byte count {n} is outside 0..2**64")
    out = _ONE
    for k, power in enumerate(_powers()):
        if n >> k == 0:
            break
        if n >> k & 1:
            out = _mulmod(out, power)
    return out


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC-32 of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's crc32_combine)."""
    return _mulmod(_shift(len_b), crc_a) ^ crc_b


def crc32_tail(crc_ab: int, crc_a: int, len_b: int) -> int:
    """CRC-32 of ``B`` from ``crc(A + B)``, ``crc(A)`` and ``len(B)``: the combine solved for the tail."""
    return _mulmod(_shift(len_b), crc_a) ^ crc_ab
