"""CRC-32 arithmetic: the checksum of joined bytes from the checksums of the parts, with no byte read.

CRC-32 is linear over GF(2): appending ``n`` bytes multiplies the running
value by x^(8n) modulo the polynomial, then adds the tail's own CRC. So the
CRC of ``A + B`` follows from ``crc(A)``, ``crc(B)`` and ``len(B)``, and
``crc(B)`` from ``crc(A + B)``, ``crc(A)`` and ``len(B)``. Bits are kept in
zlib's reflected order (bit 31 is x^0).
"""

from __future__ import annotations

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


def _shift(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending ``n`` bytes does to a CRC."""
    out, base = _ONE, _X8
    while n:
        if n & 1:
            out = _mulmod(out, base)
        base = _mulmod(base, base)
        n >>= 1
    return out


def crc32_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC-32 of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's crc32_combine)."""
    return _mulmod(_shift(len_b), crc_a) ^ crc_b


def crc32_tail(crc_ab: int, crc_a: int, len_b: int) -> int:
    """CRC-32 of ``B`` from ``crc(A + B)``, ``crc(A)`` and ``len(B)``: the combine solved for the tail."""
    return _mulmod(_shift(len_b), crc_a) ^ crc_ab
