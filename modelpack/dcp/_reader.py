"""``MpkStorageReader``: DCP's storage reader over a checkpoint folder or a single .mpk file.

The folder's metadata pack and every shard's structure are checked in
``read_metadata`` (names, bounds, coverage, each chunk's dtype and shape),
before any tensor byte is read. Tensors are copied from memory-mapped shards
straight into the destination; non-tensor values come out of the tree format.
A single .mpk (one ``modelpack.save`` of a state dict, or ``convert``'s output)
reads as one chunk per tensor, so any world size can load it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch.futures import Future
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader

from .. import api, tree
from ..errors import FormatError
from . import _layout
from ._meta import Location, from_doc

__all__ = ["MpkStorageReader"]


class MpkStorageReader(StorageReader):
    """Read a distributed checkpoint folder, or a single .mpk, from any world size.

    ``dcp.load(state, storage_reader=MpkStorageReader(path))``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._locations: dict[MetadataIndex, Any] = {}
        self._flat: dict[str, Any] | None = None  # single-file mode: fqn -> value

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self._locations, self._flat = {}, None

    def read_metadata(self, *args: Any, **unused: Any) -> Metadata:
        """DCP's metadata, after every check that needs no tensor byte.

        (Not named ``**kwargs``: DCP then skips its retry with per-rank metadata files, which we never write.)
        """
        if self.path.is_file():
            return self._single_file_metadata()
        pack, doc = _layout.read_metadata_pack(self.path)
        pack.close()
        for p in _layout.check_shards(self.path, doc).values():
            p.close()
        md, self._locations = from_doc(doc)
        return md

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self.path.is_file():
            if self._flat is None:
                self._single_file_metadata()
        elif not self._locations:
            self._locations = dict(metadata.storage_data or {})

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        if self._flat is not None:
            for req in plan.items:
                _deliver(req, planner, self._flat[req.storage_index.fqn])
        else:
            self._read_folder(plan, planner)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike)) and "://" not in os.fspath(checkpoint_id)

    # -- a folder
    def _read_folder(self, plan: LoadPlan, planner: LoadPlanner) -> None:
        by_shard: dict[str, list[tuple[ReadItem, Location]]] = {}
        for req in plan.items:
            loc = self._locations.get(req.storage_index)  # MetadataIndex equality ignores .index
            if not isinstance(loc, Location):
                raise FormatError(f"the metadata has no stored data for {req.storage_index.fqn!r}",
                                  source=str(self.path))
            by_shard.setdefault(loc.shard, []).append((req, loc))
        for shard, reqs in by_shard.items():
            with api.Pack(_layout.shard_path(self.path, shard)) as pack:
                for req, loc in reqs:
                    _deliver(req, planner, _shard_value(pack, loc))

    # -- one file
    def _single_file_metadata(self) -> Metadata:
        with api.Pack(self.path) as pack:
            state = pack.load(mmap=True)
        if not isinstance(state, dict):
            raise FormatError(f"holds a {type(state).__name__}, not a state dict (a dict at the top)",
                              source=str(self.path))
        self._flat, mapping = flatten_state_dict(state)
        items: dict[str, Any] = {}
        for fqn, value in self._flat.items():
            if isinstance(value, torch.Tensor):
                chunk = ChunkStorageMetadata(torch.Size([0] * value.dim()), value.shape)
                items[fqn] = TensorStorageMetadata(TensorProperties(dtype=value.dtype), value.shape, [chunk])
            else:
                items[fqn] = BytesStorageMetadata()
        return Metadata(items, planner_data=mapping, storage_data={},
                        storage_meta=StorageMeta(checkpoint_id=str(self.path)))


def _shard_value(pack: api.Pack, loc: Location) -> Any:
    node = pack.manifest["tree"][loc.section][loc.index]
    return tree.decode(node, pack.tensor)


def _deliver(req: ReadItem, planner: LoadPlanner, value: Any) -> None:
    """Hand one stored value to the planner: a narrowed tensor copy, or a value to load_bytes."""
    if req.type == LoadItemType.BYTE_IO:
        # DCP's planners take non-tensor values as a torch.save stream. We make that stream here,
        # from a value the tree format decoded; the checkpoint never supplies pickle bytes.
        buf = io.BytesIO()
        torch.save(value, buf)
        buf.seek(0)
        planner.load_bytes(req, buf)
        return
    src = value
    for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths)):
        src = src.narrow(dim, start, length)
    dest = planner.resolve_tensor(req).detach()
    if dest.shape != src.shape:
        raise FormatError(f"stored chunk gives {list(src.shape)}, the destination wants {list(dest.shape)}",
                          where=req.storage_index.fqn)
    dest.copy_(src)
    planner.commit_tensor(req, dest)
