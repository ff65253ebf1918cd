"""Split packs: save/export with max_shard_size, and every reader treating index + shards as one pack."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

import modelpack
from modelpack import api, inspect, split
from modelpack.diff import diff_report
from modelpack.errors import UnsupportedObjectError

from conftest import bits_equal


def _tensors(n: int = 10, size: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.standard_normal(size).astype(np.float32) for i in range(n)}


def test_split_round_trip_bit_exact(tmp_path):
    obj = {"w": _tensors(), "step": 7, "note": "x"}
    path = tmp_path / "model.mpk"
    api.save(obj, path, max_shard_size=9000, metadata={"a": "b"})
    names = sorted(os.listdir(tmp_path))
    assert names == ["model-00001-of-00005.mpk", "model-00002-of-00005.mpk", "model-00003-of-00005.mpk",
                     "model-00004-of-00005.mpk", "model-00005-of-00005.mpk", "model.mpk"]
    out = api.load(path)
    assert out["step"] == 7 and out["note"] == "x" and set(out["w"]) == set(obj["w"])
    assert all(bits_equal(out["w"][k], v) for k, v in obj["w"].items())
    assert all(bits_equal(v, obj["w"][k]) for k, v in api.load(path, mmap=False)["w"].items())
    with api.open(path) as pack:
        assert pack.keys() == [f"w.{k}" for k in obj["w"]]
        assert pack.metadata == {"a": "b"}
        assert pack.file_bytes == sum(os.path.getsize(tmp_path / n) for n in names)
    api.verify(path)
    modelpack.verify(path)


def test_each_shard_is_a_pack_of_its_own(tmp_path):
    obj = _tensors()
    api.save(obj, tmp_path / "m.mpk", max_shard_size=9000)
    seen = {}
    for name in sorted(os.listdir(tmp_path)):
        if name != "m.mpk":
            seen.update(api.load(tmp_path / name))
    assert set(seen) == set(obj) and all(bits_equal(seen[k], obj[k]) for k in obj)


def test_the_index_lists_each_shards_tensors_in_order(tmp_path):
    obj = _tensors()
    api.save(obj, tmp_path / "m.mpk", max_shard_size=9000)
    with api.open(tmp_path / "m.mpk") as index:
        rows = index.manifest["shards"]
        listed = [name for row in rows for name in row["tensors"]]
        assert listed == list(obj) == index.keys()
        for row in rows:
            with api.open(tmp_path / row["file"]) as shard:
                assert shard.keys() == row["tensors"]


def test_load_of_some_keys_opens_only_their_shards(tmp_path, monkeypatch):
    obj = _tensors()
    api.save(obj, tmp_path / "m.mpk", max_shard_size=9000)
    opened = []
    real = split.open_shard
    monkeypatch.setattr(split, "open_shard", lambda index, row, opener: opened.append(row["file"]) or
                        real(index, row, opener))
    out = api.load(tmp_path / "m.mpk", keys=["layer9.weight", "layer8.weight"])
    assert bits_equal(out["layer9.weight"], obj["layer9.weight"]) and opened == ["m-00005-of-00005.mpk"]
    opened.clear()
    with api.open(tmp_path / "m.mpk") as pack:
        assert len(pack) == 10 and "layer0.weight" in pack and opened == []
        pack.verify()
    assert len(opened) == 5


def test_fits_in_one_shard_writes_one_plain_file(tmp_path):
    api.save(_tensors(2), tmp_path / "m.mpk", max_shard_size="1GB")
    assert os.listdir(tmp_path) == ["m.mpk"]
    with api.open(tmp_path / "m.mpk") as pack:
        assert split.SHARDS_KEY not in pack.manifest


def test_a_tensor_bigger_than_the_cap_gets_its_own_shard():
    assert split.plan_shards([5, 50, 5, 5], 10) == [[0], [1], [2, 3]]


@pytest.mark.parametrize("text, expected", [
    (1000, 1000), ("2GB", 2 * 10**9), ("1GiB", 1 << 30), ("500MB", 5 * 10**8), ("1.5KB", 1500), ("10", 10),
])
def test_parse_size(text, expected):
    assert split.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "2XB", -1, 0, True, 1.5])
def test_parse_size_refuses(bad):
    with pytest.raises(UnsupportedObjectError, match="max_shard_size"):
        split.parse_size(bad)


def test_split_needs_a_path(tmp_path):
    with pytest.raises(UnsupportedObjectError, match="needs a path"):
        api.save(_tensors(), io.BytesIO(), max_shard_size=100)


def test_inspect_and_diff_see_one_pack(tmp_path):
    obj = _tensors()
    api.save(obj, tmp_path / "split.mpk", max_shard_size=9000)
    api.save(obj, tmp_path / "one.mpk")
    info = inspect.describe(tmp_path / "split.mpk")
    assert info["tensor_count"] == 10 and info["tensor_bytes"] == 40_000
    out = io.StringIO()
    assert diff_report(tmp_path / "split.mpk", tmp_path / "one.mpk", atol=0.0, out=out) == 0, out.getvalue()


def test_resave_with_fewer_shards(tmp_path):
    path = tmp_path / "m.mpk"
    api.save(_tensors(), path, max_shard_size=9000)
    api.save(_tensors(4), path, max_shard_size=20_000)
    assert set(api.load(path)) == set(_tensors(4))


def test_exported_model_split_round_trip(tmp_path, torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(3, 16)
    path = tmp_path / "net.mpk"
    modelpack.export(model, path, x, max_shard_size=1000)
    assert len(os.listdir(tmp_path)) >= 3
    loaded = modelpack.load_model(path)
    assert torch.equal(loaded(x), model(x))
    modelpack.verify(path)
    assert inspect.describe(path)["model"]


def test_copies_are_made_one_at_a_time(tmp_path, torch, monkeypatch):
    """Tensors that need a copy (here non-contiguous) are copied right before being written, one in flight."""
    from modelpack import _write, _zipwrite

    events = []
    real_copy, real_add = _write._copied, _zipwrite.ZipWriter.add
    monkeypatch.setattr(_write, "_copied", lambda *a: events.append("copy") or real_copy(*a))
    monkeypatch.setattr(_zipwrite.ZipWriter, "add", lambda self, name, *a, **k: events.append(name) or
                        real_add(self, name, *a, **k))
    obj = {f"t{i}": torch.arange(12.0).reshape(3, 4).T * i for i in range(3)}  # transposed: not contiguous
    api.save(obj, tmp_path / "m.mpk", max_shard_size=100)
    tensor_events = [e for e in events if e != "manifest.json"]
    assert tensor_events == ["copy", "t0.npy", "copy", "t1.npy", "copy", "t2.npy"]
    out = api.load(tmp_path / "m.mpk")
    assert all(torch.equal(out[k], v) for k, v in obj.items())
