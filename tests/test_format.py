"""The file format: alignment, np.load compatibility, determinism, golden bytes, ZIP64."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelpack
from modelpack import api, tree
from modelpack.container import read_members

from conftest import bits_equal

GOLDEN = Path(__file__).parent / "data" / "golden" / "small.mpk"


def golden_object() -> dict:
    """A fixed object: numpy only, so the golden file does not depend on torch."""
    return {
        "x": np.arange(4, dtype=np.int64),
        "y": np.zeros(4, dtype=np.float32),
        "eye": np.eye(2, dtype=np.float64),
        "meta": [1, 2.5, "s", None, True, (1, 2)],
        3: {"nested": np.array(7, dtype=np.int16)},
    }


def test_golden_file_is_byte_identical(tmp_path):
    modelpack.save(golden_object(), tmp_path / "small.mpk", metadata={"purpose": "golden"})
    assert (tmp_path / "small.mpk").read_bytes() == GOLDEN.read_bytes()


def test_golden_file_loads(tmp_path):
    back = modelpack.load(GOLDEN)
    want = golden_object()
    assert list(back) == list(want)
    for key in ("x", "y", "eye"):
        assert bits_equal(back[key], want[key])
    assert back["meta"] == want["meta"] and bits_equal(back[3]["nested"], want[3]["nested"])


def test_same_object_saved_twice_gives_identical_bytes(tmp_path, torch):
    obj = {"w": torch.randn(33, 17), "b": [torch.arange(5), {"k": 1.5}]}
    modelpack.save(obj, tmp_path / "a.mpk")
    modelpack.save(obj, tmp_path / "b.mpk")
    assert (tmp_path / "a.mpk").read_bytes() == (tmp_path / "b.mpk").read_bytes()


def test_tensor_data_is_64_byte_aligned(tmp_path, torch):
    obj = {f"t{i}": torch.randn(i + 1, 3) for i in range(20)}
    obj["odd-name.with.dots"] = torch.ones(7, dtype=torch.uint8)
    modelpack.save(obj, tmp_path / "al.mpk")
    with modelpack.open(tmp_path / "al.mpk") as pack:
        for entry in pack.manifest["tensors"]:
            assert entry["offset"] % 64 == 0, entry


def test_np_load_reads_float32_and_int64_tensors(tmp_path, torch):
    sd = {"hidden.weight": torch.randn(4, 3), "steps": torch.arange(5), "half": torch.ones(2, dtype=torch.bfloat16)}
    modelpack.save(sd, tmp_path / "np.mpk")
    with np.load(tmp_path / "np.mpk") as npz:
        assert {"hidden.weight", "steps", "half"} <= set(npz.files)
        assert np.array_equal(npz["hidden.weight"], sd["hidden.weight"].numpy())
        assert np.array_equal(npz["steps"], np.arange(5))
        assert npz["half"].dtype == np.uint16  # raw bits; the manifest says bfloat16
        assert np.array_equal(npz["half"], sd["half"].view(torch.int16).numpy().view(np.uint16))


def test_zipfile_accepts_the_archive_and_crcs(tmp_path, torch):
    modelpack.save({"a": torch.randn(300, 300), "b": 1}, tmp_path / "z.mpk")
    with zipfile.ZipFile(tmp_path / "z.mpk") as zf:
        assert zf.testzip() is None
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED] * 2
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "modelpack" and manifest["version"] == 1
    (entry,) = manifest["tensors"]
    assert set(entry) == {"name", "member", "dtype", "shape", "kind", "offset", "nbytes", "crc32"}
    assert entry["nbytes"] == 300 * 300 * 4 and entry["member"] == "a.npy"


def test_forced_zip64_round_trips_and_zipfile_reads_it(tmp_path):
    obj = {"a": np.arange(10.0), "b": [np.ones(3, np.int8)]}
    tree_json, leaves = tree.encode(obj)
    api.write_pack(tmp_path / "z64.mpk", tree_json, leaves, force_zip64=True)
    back = modelpack.load(tmp_path / "z64.mpk")
    assert bits_equal(back["a"], obj["a"]) and bits_equal(back["b"][0], obj["b"][0])
    modelpack.verify(tmp_path / "z64.mpk")
    with zipfile.ZipFile(tmp_path / "z64.mpk") as zf:
        assert zf.testzip() is None


def test_members_tile_the_file(tmp_path):
    modelpack.save({"a": np.arange(3), "b": np.arange(5.0)}, tmp_path / "t.mpk")
    import os

    fd = os.open(tmp_path / "t.mpk", os.O_RDONLY)
    try:
        members = read_members(fd)
    finally:
        os.close(fd)
    assert [m.name for m in members] == ["a.npy", "b.npy", "manifest.json"]
    assert members[0].header_offset == 0
    for prev, nxt in zip(members, members[1:]):
        assert prev.data_offset + prev.size == nxt.header_offset


def test_names_that_cannot_be_member_names_get_safe_ones(tmp_path):
    obj = {"../evil": np.zeros(1), "a/b": np.ones(1), "ok": np.full(1, 2.0), "OK": np.full(1, 3.0)}
    modelpack.save(obj, tmp_path / "n.mpk")
    with zipfile.ZipFile(tmp_path / "n.mpk") as zf:
        names = zf.namelist()
    assert all("/" not in n and ".." not in n for n in names)
    back = modelpack.load(tmp_path / "n.mpk")
    assert {k: float(v[0]) for k, v in back.items()} == {"../evil": 0.0, "a/b": 1.0, "ok": 2.0, "OK": 3.0}


def test_golden_fixture_exists():
    assert GOLDEN.stat().st_size > 0, "regenerate with: python tests/test_format.py --regenerate"


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if "--regenerate" in sys.argv:
        modelpack.save(golden_object(), GOLDEN, metadata={"purpose": "golden"})
        print(f"wrote {GOLDEN}")
