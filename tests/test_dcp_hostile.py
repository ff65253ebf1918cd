"""Hostile or damaged distributed-checkpoint metadata is refused before any tensor byte is read.

Each case rewrites a good checkpoint's metadata pack with one lie (chunks that
overlap, leave a hole, lie outside the tensor or the shard, a shard named
outside the folder...) and expects a FormatError naming where.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import modelpack  # noqa: E402
from modelpack import api, tree  # noqa: E402
from modelpack.dcp import MpkStorageReader, MpkStorageWriter  # noqa: E402
from modelpack.dcp import verify as verify_folder  # noqa: E402
from modelpack.errors import FormatError, UnsupportedObjectError  # noqa: E402


def _single(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _state():
    return {"w": torch.arange(12, dtype=torch.float32).reshape(4, 3), "b": torch.ones(5), "step": 3}


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "ckpt"
    _single(dcp.save, _state(), storage_writer=MpkStorageWriter(path))
    return path


def _doc(folder):
    with api.Pack(folder / "metadata.mpk") as pack:
        return tree.decode(pack.manifest["tree"], lambda name: None)


def _rewrite(folder, doc):
    api.save(doc, folder / "metadata.mpk", metadata={"modelpack.dcp": "metadata"})


def _split_w(doc):
    """Describe ``w`` as two row chunks that both point at the stored whole (for coverage lies)."""
    whole = doc["tensors"]["w"]["chunks"][0]
    doc["tensors"]["w"]["chunks"] = [dict(whole, offsets=[0, 0], sizes=[2, 3]), dict(whole, offsets=[2, 0], sizes=[2, 3])]
    return doc["tensors"]["w"]["chunks"]


def _overlap(doc):
    a, b = _split_w(doc)
    b["offsets"] = [1, 0]


def _hole(doc):
    a, b = _split_w(doc)
    b["sizes"] = [1, 3]


def _outside_tensor(doc):
    doc["tensors"]["w"]["chunks"][0]["offsets"] = [1, 0]


def _outside_shard(doc):
    doc["tensors"]["w"]["chunks"][0]["index"] = 50


def _wrong_shape_in_shard(doc):
    doc["tensors"]["w"]["size"] = [3, 4]
    doc["tensors"]["w"]["chunks"][0]["sizes"] = [3, 4]


def _wrong_dtype(doc):
    doc["tensors"]["w"]["dtype"] = "float64"


def _shard_out_of_range(doc):
    doc["tensors"]["b"]["chunks"][0]["shard"] = 5


def _object_outside_shard(doc):
    doc["objects"]["step"]["index"] = 9


def _parent_name(doc):
    doc["shards"] = ["../" + doc["shards"][0]]


def _absolute_name(doc):
    doc["shards"] = ["/etc/passwd"]


def _missing_field(doc):
    del doc["tensors"]["w"]["chunks"][0]["sizes"]


def _negative(doc):
    doc["tensors"]["w"]["chunks"][0]["offsets"] = [-1, 0]


def _bool_as_int(doc):
    doc["tensors"]["w"]["chunks"][0]["shard"] = True


def _unknown_dtype(doc):
    doc["tensors"]["w"]["dtype"] = "complex1024"


def _huge_list_index(doc):
    doc["planner_data"] = {"w": ("w", 10**12), "b": ("b",), "step": ("step",)}


def _planner_not_a_map(doc):
    doc["planner_data"] = [1, 2]


CASES = {
    _huge_list_index: "list indices below 3",
    _planner_not_a_map: "must map keys to paths",
    _overlap: "chunks overlap",
    _hole: "chunks leave a hole",
    _outside_tensor: "outside the tensor",
    _outside_shard: "points outside its shard",
    _wrong_shape_in_shard: "the shard holds float32",
    _wrong_dtype: "the shard holds float32",
    _shard_out_of_range: "out of range",
    _object_outside_shard: "points outside its shard",
    _parent_name: "not a file in the checkpoint folder",
    _absolute_name: "not a file in the checkpoint folder",
    _missing_field: "missing field 'sizes'",
    _negative: "non-negative",
    _bool_as_int: "must be int",
    _unknown_dtype: "dtype",
}


@pytest.fixture
def no_tensor_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read before the metadata was checked")

    monkeypatch.setattr(api.Pack, "tensor", refuse)
    monkeypatch.setattr(api.Pack, "array", refuse)


@pytest.mark.parametrize("lie", list(CASES), ids=lambda f: f.__name__.strip("_"))
def test_hostile_metadata_is_refused_before_any_read(folder, lie, no_tensor_reads):
    doc = _doc(folder)
    lie(doc)
    _rewrite(folder, doc)
    with pytest.raises(FormatError, match=CASES[lie]):
        MpkStorageReader(folder).read_metadata()
    with pytest.raises(FormatError, match=CASES[lie]):
        verify_folder(folder)


def _rank0_error(excinfo):
    """DCP wraps each rank's exception in a CheckpointException; ours is inside, with its class."""
    return excinfo.value.failures[0][0]


def test_dcp_load_surfaces_the_refusal(folder):
    doc = _doc(folder)
    _overlap(doc)
    _rewrite(folder, doc)
    with pytest.raises(dcp.api.CheckpointException, match="chunks overlap") as excinfo:
        _single(dcp.load, _state(), storage_reader=MpkStorageReader(folder))
    # DCP reports a failed metadata read as "metadata is None; global metadata read failed: <our message>"
    assert "tensors['w']: chunks overlap" in str(_rank0_error(excinfo))


def test_shard_link_out_of_the_folder_is_refused(folder, tmp_path, no_tensor_reads):
    name = _doc(folder)["shards"][0]
    outside = tmp_path / "elsewhere.mpk"
    os.replace(folder / name, outside)
    os.symlink(outside, folder / name)
    with pytest.raises(FormatError, match="outside the checkpoint folder"):
        MpkStorageReader(folder).read_metadata()


def test_missing_shard_and_missing_metadata(folder):
    name = _doc(folder)["shards"][0]
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError):
        MpkStorageReader(folder).read_metadata()
    (folder / "metadata.mpk").unlink()
    with pytest.raises(FormatError, match="not a committed distributed checkpoint"):
        MpkStorageReader(folder).read_metadata()


def test_a_plain_pack_is_not_metadata(folder):
    modelpack.save({"format": "modelpack.dcp"}, folder / "metadata.mpk")
    with pytest.raises(FormatError, match="not a distributed checkpoint's metadata pack"):
        MpkStorageReader(folder).read_metadata()


def test_flipped_shard_byte_fails_verify_only(folder):
    name = _doc(folder)["shards"][0]
    data = bytearray((folder / name).read_bytes())
    i = data.index(bytes(torch.arange(12, dtype=torch.float32).numpy().tobytes()[:8]))
    data[i] ^= 1
    (folder / name).write_bytes(bytes(data))
    MpkStorageReader(folder).read_metadata()  # structure is intact
    with pytest.raises(modelpack.IntegrityError, match="checksum"):
        verify_folder(folder)


class Opaque:
    pass


def test_value_needing_pickle_is_refused_with_its_path(tmp_path):
    state = _state()
    state["extra"] = {"cfg": {"thing": Opaque()}}
    with pytest.raises(dcp.api.CheckpointException) as excinfo:
        _single(dcp.save, state, storage_writer=MpkStorageWriter(tmp_path / "c"))
    error = _rank0_error(excinfo)
    assert isinstance(error, UnsupportedObjectError)
    assert "state_dict['extra.cfg.thing']" in str(error) and "Opaque" in str(error)
    assert not (tmp_path / "c" / "metadata.mpk").exists()


def test_values_round_trip_through_the_tree(tmp_path):
    state = _state()
    state["extra"] = {"rng": (1, 2, [3.5, float("nan")]), "name": "x", "none": None, "flag": True}
    _single(dcp.save, state, storage_writer=MpkStorageWriter(tmp_path / "c"))
    back = {"w": torch.zeros(4, 3), "b": torch.zeros(5), "step": 0,
            "extra": {"rng": None, "name": None, "none": 1, "flag": False}}
    _single(dcp.load, back, storage_reader=MpkStorageReader(tmp_path / "c"))
    assert back["step"] == 3 and back["extra"]["name"] == "x" and back["extra"]["none"] is None
    assert back["extra"]["rng"][:2] == (1, 2) and back["extra"]["rng"][2][0] == 3.5
    assert torch.equal(back["w"], state["w"])
    assert copy.deepcopy(back["extra"]["flag"]) is True
