"""CRC-32 backends (modelpack._crc): whichever is picked gives zlib's exact values on every buffer kind."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from modelpack import _crc


@pytest.mark.parametrize("size", [0, 1, 63, 4095, 4096, 4097, 65_536 + 5, 1 << 20])
def test_crc32_matches_zlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    raw = data.tobytes()
    expected = zlib.crc32(raw)
    assert _crc.crc32(raw) == expected
    assert _crc.crc32(memoryview(raw)) == expected  # read-only buffer
    assert _crc.crc32(memoryview(data)) == expected  # writable array memory
    assert _crc.crc32(bytearray(raw)) == expected
    assert _crc.crc32(raw[size // 2 :], _crc.crc32(raw[: size // 2])) == expected  # continued


def test_a_backend_that_disagrees_with_zlib_is_not_used() -> None:
    assert not _crc._agrees(lambda data, value=0: 0)
    assert not _crc._agrees(lambda data, value=0: 1 / 0)
    assert _crc._agrees(zlib.crc32)


def test_libdeflate_wrapper_when_present() -> None:
    fn = _crc._libdeflate()
    if fn is None:
        pytest.skip("libdeflate is not installed here")
    big = bytes(range(256)) * 1000
    assert fn(big) == zlib.crc32(big)
    assert fn(memoryview(big)[3:], 5) == zlib.crc32(big[3:], 5)
