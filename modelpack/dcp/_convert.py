"""Consolidate a distributed checkpoint folder into one .mpk (or a split pack) without a process group.

The folder is checked first (metadata, coverage, every shard's structure).
A tensor whose chunks are each one contiguous run of it (sharded along its
first dimension, as FSDP and row-wise tensor parallelism do) is written by
copying the chunks' bytes file to file in the kernel, in order, with its CRC-32
joined from the chunks' recorded ones: no byte passes through memory, and a
chunk damaged on disk stays damaged-and-detectable in the output (``verify``),
never re-checksummed as good. Any other tensor is assembled in memory from its
chunks, written, and dropped before the next: peak memory is about the
largest such tensor. The nesting the state dict had (DCP's planner data:
key -> path) comes back, so ``modelpack.load(out)`` gives the state dict that
was saved.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import api, tree
from .._crc import crc32_tail
from ..codec import CopiedArray, FileRange, dtype_by_name, nbytes_of, npy_header
from ..container import crc32
from ..errors import FormatError
from ..torch.tensors import torch_dtype
from . import _layout

__all__ = ["consolidate"]


class _Slot:
    """Where a tensor goes in the nested structure, until it is assembled."""

    def __init__(self, fqn: str) -> None:
        self.fqn = fqn


def consolidate(src: str | os.PathLike[str], out: str | os.PathLike[str], *, progress: bool | None = None,
                max_shard_size: int | str | None = None) -> None:
    """Write the checkpoint folder ``src`` as one .mpk at ``out`` (atomically); needs no process group.

    With ``max_shard_size`` (``"2GB"``, bytes) a bigger result is a split pack:
    ``out`` is the index, its shards sit beside it (see ``modelpack.save``).
    """
    folder = Path(src)
    pack, doc = _layout.read_metadata_pack(folder)
    pack.close()
    packs = _layout.check_shards(folder, doc)
    try:
        values: dict[str, Any] = {fqn: _Slot(fqn) for fqn in doc.tensors}
        for fqn, (shard, index) in doc.objects.items():
            node = packs[shard].manifest["tree"]["objects"][index]
            values[fqn] = tree.decode(node, packs[shard].tensor)
        nested = _nest(values, doc.planner_data)
        tree_json, leaves = _encode(nested)
        planned = [(leaf.name, _shape(leaf, doc)) for leaf in leaves]
        api.stream_pack(out, tree_json, planned, _assembled(leaves, doc, packs), progress=progress,
                        metadata={"modelpack.dcp.source": folder.name}, max_shard_size=max_shard_size,
                        sizes=[_nbytes(leaf, doc) for leaf in leaves])
    finally:
        for p in packs.values():
            p.close()


def _nest(values: dict[str, Any], mapping: Any) -> Any:
    """Rebuild the saved nesting from DCP's key -> path mapping; flat when the mapping is absent or odd."""
    if not isinstance(mapping, dict) or set(mapping) != set(values):
        return dict(values)
    root: dict[str, Any] = {}
    for fqn, value in values.items():  # paths were checked by _layout.read_doc: keys and small indices
        _set(root, list(mapping[fqn]), value, fqn)
    return root


def _set(node: Any, path: list[Any], value: Any, fqn: str) -> None:
    for key, nxt in zip(path, path[1:]):
        node = _child(node, key, [] if isinstance(nxt, int) else {}, fqn)
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int):
        node.extend([None] * (last + 1 - len(node)))
        node[last] = value
    elif isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    else:
        raise FormatError(f"planner_data paths of {fqn!r} and another key disagree on a container",
                          where=f"{_layout.METADATA_FILE}: planner_data")


def _child(node: Any, key: Any, empty: Any, fqn: str) -> Any:
    if isinstance(node, dict) and isinstance(key, str):
        return node.setdefault(key, empty)
    if isinstance(node, list) and isinstance(key, int):
        node.extend([None] * (key + 1 - len(node)))
        if node[key] is None:
            node[key] = empty
        return node[key]
    raise FormatError(f"planner_data paths of {fqn!r} and another key disagree on a container",
                      where=f"{_layout.METADATA_FILE}: planner_data")


def _encode(nested: Any) -> tuple[Any, list[tree.Leaf]]:
    """The tree with each slot as a tensor leaf: encode with a tiny distinct stand-in, then swap it back."""
    stand_ins: dict[int, _Slot] = {}

    def swap(node: Any) -> Any:
        if isinstance(node, _Slot):
            t = torch.zeros(1)
            stand_ins[id(t)] = node
            keep.append(t)
            return t
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    keep: list[Any] = []
    tree_json, leaves = tree.encode(swap(nested))
    for leaf in leaves:
        slot = stand_ins.get(id(leaf.value))
        if slot is not None:
            leaf.value = slot
    return tree_json, leaves


def _shape(leaf: tree.Leaf, doc: _layout.Doc) -> tuple[int, ...]:
    if isinstance(leaf.value, _Slot):
        return doc.tensors[leaf.value.fqn].size
    return tuple(leaf.value.shape)


def _nbytes(leaf: tree.Leaf, doc: _layout.Doc) -> int:
    if isinstance(leaf.value, _Slot):
        t = doc.tensors[leaf.value.fqn]
        return nbytes_of(t.size, dtype_by_name(t.dtype).itemsize)
    return int(leaf.value.nbytes)


def _assembled(leaves: list[tree.Leaf], doc: _layout.Doc, packs: dict[int, api.Pack]) -> Iterator[tree.Leaf]:
    for leaf in leaves:
        if not isinstance(leaf.value, _Slot):
            yield leaf
            continue
        fqn = leaf.value.fqn
        t = doc.tensors[fqn]
        out = tree.Leaf(leaf.name, "torch", _copied(t, packs) or _assemble(t, packs), where=fqn)
        yield out
        del out  # the writer has written it: free it before the next one


def _copied(t: _layout.TensorDoc, packs: dict[int, api.Pack]) -> CopiedArray | None:
    """The tensor as its chunks' byte ranges in order, when each chunk is one contiguous run of it; else None."""
    runs = []
    for c in t.chunks:
        if not all(c.sizes):
            continue
        start = _run_start(c, t.size)
        if start is None:
            return None
        runs.append((start, c))
    runs.sort(key=lambda run: run[0])  # chunks tile the tensor (checked): in start order they are its bytes
    ranges = tuple(_file_range(packs[c.shard], _layout.chunk_tensor_name(packs[c.shard], c.index)) for _, c in runs)
    return CopiedArray(dtype_by_name(t.dtype), t.size, ranges)


def _run_start(c: _layout.Chunk, size: tuple[int, ...]) -> int | None:
    """The chunk's first element in the whole tensor, C order, when the chunk is one contiguous run; else None.

    Contiguous: size 1 in every dimension before some dimension ``d``, and whole in every one after it.
    """
    d = next((i for i, s in enumerate(c.sizes) if s != 1), len(size))
    if any(o != 0 or s != full for o, s, full in zip(c.offsets[d + 1:], c.sizes[d + 1:], size[d + 1:])):
        return None
    start = 0
    for o, full in zip(c.offsets, size):
        start = start * full + o
    return start


def _file_range(pack: api.Pack, name: str) -> FileRange:
    """A stored tensor's bytes in its shard, with their CRC-32 taken from the member's (header and bytes)."""
    entry = pack.entries[name]
    head_crc = _header_crc(entry["dtype"], tuple(entry["shape"]))
    body_crc = crc32_tail(int(entry["crc32"], 16), head_crc, entry["nbytes"])
    return FileRange(pack.fd, entry["offset"], entry["nbytes"], body_crc, pack.path)


@functools.lru_cache(maxsize=1024)  # chunks repeat a few dtypes and shapes
def _header_crc(dtype: str, shape: tuple[int, ...]) -> int:
    """CRC-32 of the stored .npy header (the reader checked it is the one regenerated here)."""
    return crc32(npy_header(dtype_by_name(dtype).descr, shape))


def _assemble(t: _layout.TensorDoc, packs: dict[int, api.Pack]) -> torch.Tensor:
    """The whole tensor; a chunk that is one contiguous run of it (row sharding) is read straight in."""
    whole = torch.empty(t.size, dtype=torch_dtype(dtype_by_name(t.dtype)))
    for c in t.chunks:
        if not all(c.sizes):
            continue
        pack = packs[c.shard]
        name = _layout.chunk_tensor_name(pack, c.index)
        dest = whole[tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes))]
        if dest.is_contiguous():
            pack.read_into(name, memoryview(dest.reshape(-1).view(torch.uint8).numpy()))
        else:
            dest.copy_(pack.tensor(name, mmap=False))
    return whole
