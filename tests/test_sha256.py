"""Opt-in per-tensor SHA-256: recorded in the CRC-32's pass, checked by verify."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import modelpack
from modelpack.errors import FormatError, IntegrityError


def _obj():
    return {"small": np.arange(10.0), "big": np.arange(3 << 18, dtype=np.float32), "empty": np.zeros((0, 3))}


def test_sha256_is_recorded_only_when_asked(tmp_path):
    modelpack.save(_obj(), tmp_path / "off.mpk")
    modelpack.save(_obj(), tmp_path / "on.mpk", sha256=True)
    with modelpack.open(tmp_path / "off.mpk") as pack:
        assert all("sha256" not in e for e in pack.entries.values())
    with modelpack.open(tmp_path / "on.mpk") as pack:
        for name, arr in _obj().items():  # big is past the threaded-CRC threshold: same pass, same result
            assert pack.entries[name]["sha256"] == hashlib.sha256(arr.tobytes()).hexdigest()
    modelpack.verify(tmp_path / "on.mpk")


def test_verify_names_the_tensor_whose_sha256_disagrees(tmp_path):
    modelpack.save(_obj(), tmp_path / "on.mpk", sha256=True)
    with modelpack.open(tmp_path / "on.mpk") as pack:
        pack.entries["big"]["sha256"] = "0" * 64  # as if the bytes and every CRC-32 had been rewritten
        with pytest.raises(IntegrityError, match="tensor 'big': SHA-256 mismatch"):
            pack.verify()


def test_a_malformed_sha256_entry_is_a_format_error(tmp_path):
    from modelpack import manifest

    modelpack.save({"a": np.ones(3)}, tmp_path / "a.mpk", sha256=True)
    with modelpack.open(tmp_path / "a.mpk") as pack:
        body = dict(pack.manifest)
        members = list(pack.members.values())
    body["tensors"] = [dict(body["tensors"][0], sha256="XYZ")]
    with pytest.raises(FormatError, match="sha256 'XYZ' is not 64 lowercase hex digits"):
        manifest.check(body, members)
    body["tensors"] = [dict(body["tensors"][0], sha512="0")]
    with pytest.raises(FormatError, match="optionally 'sha256'"):
        manifest.check(body, members)
