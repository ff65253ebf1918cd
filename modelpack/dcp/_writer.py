"""``MpkStorageWriter``: DCP's storage writer that writes .mpk shards and commits with a metadata pack.

Each rank writes one shard pack atomically (temp file, fsync, rename); the
coordinator then writes ``metadata.mpk`` atomically, which is the commit: the
previous metadata pack (and the shards it names) stay in place until that
rename, so a crash at any moment leaves the previous checkpoint loadable. Only
after the commit does the coordinator remove shards no longer named, and temp
files of dead writers.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch.futures import Future
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult

from .. import _fs, api, tree
from ..errors import ModelPackError, UnsupportedObjectError
from . import _layout
from ._meta import Location, to_doc

__all__ = ["MpkStorageWriter"]


class MpkStorageWriter(StorageWriter):
    """Write a distributed checkpoint into the folder ``path`` (created if missing).

    ``dcp.save(state, storage_writer=MpkStorageWriter(path))``; saving again
    into the same folder replaces the checkpoint only when the new one commits.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.is_coordinator = False
        self.save_id = _new_id()

    # -- DCP's sequence of calls
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.save_id = _new_id()

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        self.path.mkdir(parents=True, exist_ok=True)
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # the coordinator names every rank's shard, so names are unique and tied to this save
        save = _new_id()
        return [_with_storage_data(p, f"shard-{save}-{i}.mpk") for i, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        name = plan.storage_data
        if not isinstance(name, str) or not _layout.SHARD_RE.fullmatch(name):
            raise ValueError(f"the global plan did not name this rank's shard (got {name!r})")
        results = write_shard(self.path / name, name, plan.items, planner)
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        locations = {r.index: r.storage_data for rank in results for r in rank}
        metadata.storage_meta = self.storage_meta()
        doc = to_doc(metadata, locations)
        api.save(doc, self.path / _layout.METADATA_FILE, metadata={_layout.KIND_KEY: "metadata"})
        remove_unlisted(self.path, set(doc["shards"]))

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=str(self.path), save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike)) and "://" not in os.fspath(checkpoint_id)


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _with_storage_data(plan: SavePlan, name: str) -> SavePlan:
    return dataclasses.replace(plan, storage_data=name)


def _fqn_where(fqn: str, inner: str | None) -> str:
    rest = (inner or "obj")[3:] if (inner or "").startswith("obj") else ""
    return f"state_dict[{fqn!r}]{rest}"


def _object(item: WriteItem, planner: SavePlanner) -> Any:
    """The non-tensor value itself, never the pickle DCP's default planner would make of it."""
    lookup = getattr(planner, "lookup_object", None)
    if lookup is None:
        raise UnsupportedObjectError(
            f"the planner {type(planner).__name__} has no lookup_object(); MpkStorageWriter stores non-tensor "
            "values through the tree format and needs the value, not its pickle", where=item.index.fqn)
    obj = lookup(item.index)
    try:
        tree.encode(obj)
    except ModelPackError as e:
        raise UnsupportedObjectError(e.message, where=_fqn_where(item.index.fqn, e.where)) from e
    return obj


def write_shard(path: Path, name: str, items: list[WriteItem], planner: SavePlanner) -> list[WriteResult]:
    """One rank's shard: ``{"chunks": [tensor...], "objects": [value...]}`` in one atomic .mpk."""
    chunks: list[Any] = []
    objects: list[Any] = []
    results = []
    for item in items:
        if item.type == WriteItemType.BYTE_IO:
            value = _object(item, planner)
            results.append(WriteResult(item.index, 0, Location(name, "objects", len(objects))))
            objects.append(value)
            continue
        t = planner.resolve_data(item)
        if not isinstance(t, torch.Tensor):
            raise UnsupportedObjectError(f"the planner resolved a tensor item to {type(t).__name__}",
                                         where=item.index.fqn)
        t = t.detach()
        results.append(WriteResult(item.index, t.numel() * t.element_size(), Location(name, "chunks", len(chunks))))
        chunks.append(t)
    api.save({"chunks": chunks, "objects": objects}, path, metadata={_layout.KIND_KEY: "shard"})
    return results


def remove_unlisted(folder: Path, keep: set[str]) -> None:
    """After a commit: remove shards the metadata no longer names and temp files of dead writers."""
    for p in folder.iterdir():
        if _layout.SHARD_RE.fullmatch(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
    _fs.remove_stale_temps(folder / _layout.METADATA_FILE)
    for p in folder.glob(".shard-*"):  # temps of shards whose writer died before its rename
        _fs.remove_stale_temps(folder / (p.name[1:].split(".mpk", 1)[0] + ".mpk"))
    _fs.fsync_dir(folder)

