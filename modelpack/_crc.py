"""CRC-32 arithmetic: the checksum of joined bytes from the checksums of the parts, with no byte read.

CRC-32 is linear over GF(2): appending ``n`` bytes multiplies the running
value by x^(8n) modulo the polynomial, then adds the tail's own CRC. So the
CRC of ``A + B`` follows from ``crc(A)``, ``crc(B)`` and ``len(B)``, and
``crc(B)`` from ``crc(A + B)``, ``crc(A)`` and ``len(B)``. Bits are kept in
zlib's reflected order (bit 31 is x^0).
"""

from __future__ import annotations

import functools

__all__ = ["crc32_combine", "crc32_tail"]

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
