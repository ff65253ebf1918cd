"""DCP's ``Metadata`` <-> the metadata document, field by field (no pickle, no fallback).

What DCP keeps in ``Metadata`` and how each part is stored:

* ``state_dict_metadata``: tensors as dtype/size/chunks (``TensorStorageMetadata``);
  ``BytesStorageMetadata`` as a location in a shard's ``objects`` list;
* ``storage_data``: not stored as such; every chunk and object carries its location;
* ``planner_data``: through the tree format (the default planner's fqn -> path
  tuples fit); anything the tree cannot hold is refused with its path;
* ``storage_meta``: checkpoint id, save id and module names as strings;
* ``version``: as a string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from .. import tree
from ..errors import ModelPackError, UnsupportedObjectError
from ..torch.tensors import dtype_row, torch_dtype
from ..codec import dtype_by_name
from . import _layout

__all__ = ["Location", "to_doc", "from_doc"]

_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last,
            "preserve": torch.preserve_format}


@dataclass(frozen=True)
class Location:
    """Where one write item went: a shard file and a position in its ``chunks`` or ``objects`` list."""

    shard: str
    section: str  # "chunks" or "objects"
    index: int


def _memory_format(props: TensorProperties) -> str:
    for name, fmt in _FORMATS.items():
        if props.memory_format == fmt:
            return name
    return "contiguous"


def to_doc(md: Metadata, locations: dict[MetadataIndex, Location]) -> dict[str, Any]:
    """The metadata document of a save: every part of ``md`` converted explicitly."""
    shards = sorted({loc.shard for loc in locations.values()})
    number = {s: i for i, s in enumerate(shards)}
    tensors: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for fqn, item in md.state_dict_metadata.items():
        if isinstance(item, BytesStorageMetadata):
            loc = locations[MetadataIndex(fqn)]
            objects[fqn] = {"shard": number[loc.shard], "index": loc.index}
            continue
        chunks = []
        for c in item.chunks:
            loc = locations[MetadataIndex(fqn, c.offsets)]
            chunks.append({"offsets": list(c.offsets), "sizes": list(c.sizes),
                           "shard": number[loc.shard], "index": loc.index})
        tensors[fqn] = {"dtype": dtype_row(item.properties.dtype, where=fqn).name, "size": list(item.size),
                        "requires_grad": bool(item.properties.requires_grad),
                        "memory_format": _memory_format(item.properties), "chunks": chunks}
    return {"format": _layout.FORMAT, "version": _layout.VERSION, "shards": shards, "tensors": tensors,
            "objects": objects, "planner_data": _planner_data(md.planner_data),
            "storage_meta": _storage_meta(md.storage_meta), "dcp_version": md.version}


def _planner_data(data: Any) -> Any:
    try:
        _, leaves = tree.encode(data)
    except ModelPackError as e:
        raise UnsupportedObjectError(
            f"DCP's planner_data cannot be stored without pickle: {e.message}",
            where=(e.where or "").replace("obj", "metadata.planner_data", 1) or "metadata.planner_data",
        ) from e
    if leaves:
        raise UnsupportedObjectError("DCP's planner_data holds tensors; a planner must keep tensors in the state dict",
                                     where="metadata.planner_data")
    return data


def _storage_meta(meta: StorageMeta | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    cid = meta.checkpoint_id
    return {"checkpoint_id": None if cid is None else str(cid), "save_id": meta.save_id,
            "modules": [str(m) for m in meta.modules]}


def from_doc(doc: _layout.Doc) -> tuple[Metadata, dict[MetadataIndex, Location]]:
    """DCP's ``Metadata`` for a checked document, and where each chunk and object lives."""
    items: dict[str, Any] = {}
    locations: dict[MetadataIndex, Location] = {}
    for fqn, t in doc.tensors.items():
        props = TensorProperties(dtype=torch_dtype(dtype_by_name(t.dtype)), requires_grad=t.requires_grad,
                                 memory_format=_FORMATS[t.memory_format])
        chunks = [ChunkStorageMetadata(torch.Size(c.offsets), torch.Size(c.sizes)) for c in t.chunks]
        items[fqn] = TensorStorageMetadata(props, torch.Size(t.size), chunks)
        for c in t.chunks:
            locations[MetadataIndex(fqn, torch.Size(c.offsets))] = Location(doc.shards[c.shard], "chunks", c.index)
    for fqn, (shard, index) in doc.objects.items():
        items[fqn] = BytesStorageMetadata()
        locations[MetadataIndex(fqn)] = Location(doc.shards[shard], "objects", index)
    meta = doc.storage_meta or {}
    storage_meta = StorageMeta(checkpoint_id=meta.get("checkpoint_id"), save_id=meta.get("save_id"),
                               modules=list(meta.get("modules") or []))
    md = Metadata(items, planner_data=doc.planner_data, storage_data=locations,
                  storage_meta=storage_meta, version=doc.dcp_version)
    return md, locations

