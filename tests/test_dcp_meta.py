"""DCP's Metadata <-> the metadata document: an explicit conversion, refusing what would need pickle."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

from torch.distributed.checkpoint.metadata import (  # noqa: E402
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import SavePlanner  # noqa: E402

from modelpack import tree  # noqa: E402
from modelpack.dcp import _layout  # noqa: E402
from modelpack.dcp._meta import Location, from_doc, to_doc  # noqa: E402
from modelpack.dcp._writer import write_shard  # noqa: E402
from modelpack.errors import UnsupportedObjectError  # noqa: E402

from conftest import run_python  # noqa: E402


def _metadata(planner_data):
    w = TensorStorageMetadata(
        TensorProperties(dtype=torch.bfloat16, requires_grad=True, memory_format=torch.channels_last),
        torch.Size([4, 2]),
        [ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([2, 2])),
         ChunkStorageMetadata(torch.Size([2, 0]), torch.Size([2, 2]))])
    md = Metadata({"m.w": w, "step": BytesStorageMetadata()}, planner_data=planner_data,
                  storage_meta=StorageMeta(checkpoint_id="/x", save_id="abc", modules=["m"]), version="2.x")
    where = {MetadataIndex("m.w", torch.Size([0, 0])): Location("shard-a-0.mpk", "chunks", 0),
             MetadataIndex("m.w", torch.Size([2, 0])): Location("shard-a-1.mpk", "chunks", 0),
             MetadataIndex("step"): Location("shard-a-0.mpk", "objects", 0)}
    return md, where


def test_metadata_round_trips_through_the_tree():
    md, where = _metadata({"m.w": ("m", "w"), "step": ("step",)})
    doc = to_doc(md, where)
    tree_json, leaves = tree.encode(doc)
    assert leaves == []
    back, locations = from_doc(_layout.read_doc(tree.decode(tree_json, lambda n: None)))
    assert back.state_dict_metadata == md.state_dict_metadata
    assert back.state_dict_metadata["m.w"].properties.memory_format == torch.channels_last
    assert back.planner_data == md.planner_data and back.version == "2.x"
    assert back.storage_meta.save_id == "abc" and back.storage_meta.modules == ["m"]
    assert locations == where


class Odd:
    pass


def test_planner_data_needing_pickle_is_refused_with_its_path():
    md, where = _metadata({"m.w": ("m", "w"), "step": Odd()})
    with pytest.raises(UnsupportedObjectError, match=r"metadata\.planner_data\['step'\].*Odd"):
        to_doc(md, where)


def test_planner_data_holding_tensors_is_refused():
    md, where = _metadata({"m.w": torch.zeros(1)})
    with pytest.raises(UnsupportedObjectError, match="planner_data holds tensors"):
        to_doc(md, where)


def test_a_planner_without_lookup_object_is_refused(tmp_path):
    from torch.distributed.checkpoint.planner import WriteItem, WriteItemType

    class Bare(SavePlanner):  # the abstract interface only: resolve_data would hand us a pickle
        set_up_planner = create_local_plan = create_global_plan = finish_plan = resolve_data = None

    item = WriteItem(MetadataIndex("step"), WriteItemType.BYTE_IO)
    with pytest.raises(UnsupportedObjectError, match="has no lookup_object"):
        write_shard(tmp_path / "shard-a-0.mpk", "shard-a-0.mpk", [item], Bare())
    assert not (tmp_path / "shard-a-0.mpk").exists()


def test_verify_folder_needs_no_torch(tmp_path):
    import warnings

    import torch.distributed.checkpoint as dcp

    from modelpack.dcp import MpkStorageWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"w": torch.ones(3), "n": 1}, storage_writer=MpkStorageWriter(tmp_path / "c"))
    code = ("import sys, modelpack.cli as c; rc = c.main(['verify', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    r = run_python(code, str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(": OK")
