"""The on-disk layout of a distributed checkpoint and its checks, torch-free.

A checkpoint is a folder of per-rank shard packs (``shard-<save>-<rank>.mpk``)
and one metadata pack (``metadata.mpk``) whose tree is the document checked
here. The metadata pack is written last, by the coordinator: its rename is the
commit point, so a folder without one (or with an older one) never shows a
half-written save. Everything a hostile document could claim (names, chunk
bounds, coverage, where each chunk lives) is checked before any tensor byte is
read; ``verify_folder`` adds every checksum.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import api, limits, tree
from ..codec import dtype_by_name
from ..errors import FormatError, ModelPackError, NotAModelPackError

__all__ = [
    "METADATA_FILE",
    "FORMAT",
    "VERSION",
    "SHARD_RE",
    "Chunk",
    "Doc",
    "is_dcp_folder",
    "read_doc",
    "check_shards",
    "verify_folder",
    "verify",
    "describe_folder",
]

METADATA_FILE = "metadata.mpk"
FORMAT = "modelpack.dcp"
VERSION = 1
KIND_KEY = "modelpack.dcp"  # pack metadata key: "metadata" or "shard"
SHARD_RE = re.compile(r"shard-[A-Za-z0-9]{1,64}-[0-9]{1,9}\.mpk")
MEMORY_FORMATS = ("contiguous", "channels_last", "preserve")


@dataclass(frozen=True)
class Chunk:
    """One saved piece of a tensor: where it sits in the whole, and where it is stored."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    shard: int
    index: int  # position in the shard's ``chunks`` list


@dataclass(frozen=True)
class TensorDoc:
    dtype: str
    size: tuple[int, ...]
    chunks: tuple[Chunk, ...]
    requires_grad: bool
    memory_format: str


@dataclass(frozen=True)
class Doc:
    """A checked metadata document: shard names, tensors, non-tensor objects and DCP's extras."""

    shards: tuple[str, ...]
    tensors: dict[str, TensorDoc]
    objects: dict[str, tuple[int, int]]  # fqn -> (shard, position in the shard's ``objects`` list)
    planner_data: Any
    storage_meta: dict[str, Any] | None
    dcp_version: str | None


def is_dcp_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding a committed metadata pack."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE))


# --------------------------------------------------------------------------- the document


def _bad(msg: str, where: str) -> FormatError:
    return FormatError(msg, where=where)  # the caller adds the metadata pack's path as source


def _get(node: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(node, Mapping) or key not in node:
        raise _bad(f"missing field {key!r}", where)
    value = node[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"field {key!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}", where)
    return value


def _ints(value: Any, n: int | None, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(v) is int and v >= 0 for v in value):
        raise _bad("must be a list of non-negative integers", where)
    if n is not None and len(value) != n:
        raise _bad(f"has {len(value)} dimensions, the tensor has {n}", where)
    if len(value) > limits.current().max_dims:
        limits.check("max_dims", len(value), where=where, what="dimensions")
    return tuple(value)


def read_doc(tree_json: Any) -> Doc:
    """Check the metadata tree's structure, names, chunk bounds and coverage; no file is touched."""
    if not isinstance(tree_json, Mapping) or tree_json.get("format") != FORMAT:
        raise _bad(f"not a distributed checkpoint document (format must be {FORMAT!r})", "tree")
    if tree_json.get("version") != VERSION:
        raise _bad(f"unsupported version {tree_json.get('version')!r}; this modelpack reads {VERSION}", "tree")
    shards = tuple(_shard_name(s, f"shards[{i}]") for i, s in enumerate(_get(tree_json, "shards", list, "tree")))
    if len(set(shards)) != len(shards):
        raise _bad("a shard is listed twice", "shards")
    tensors = {fqn: _tensor(t, len(shards), f"tensors[{fqn!r}]")
               for fqn, t in _get(tree_json, "tensors", dict, "tree").items()}
    objects = {fqn: _location(o, len(shards), f"objects[{fqn!r}]")
               for fqn, o in _get(tree_json, "objects", dict, "tree").items()}
    both = tensors.keys() & objects.keys()
    if both:
        raise _bad("a key is both a tensor and an object", f"objects[{sorted(both)[0]!r}]")
    meta = tree_json.get("storage_meta")
    version = tree_json.get("dcp_version")
    planner = _planner_data(tree_json.get("planner_data"), len(tensors) + len(objects))
    return Doc(shards, tensors, objects, planner,
               meta if isinstance(meta, dict) else None, version if isinstance(version, str) else None)


def _planner_data(data: Any, n_keys: int) -> Any:
    """DCP's key -> path map (the nesting of the saved state dict); a path indexes lists, so indices stay small."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _bad(f"must map keys to paths, got {type(data).__name__}", "planner_data")
    for key, path in data.items():
        ok = isinstance(path, (list, tuple)) and 0 < len(path) <= limits.current().max_depth and all(
            isinstance(p, str) or (type(p) is int and 0 <= p < n_keys) for p in path)
        if not ok:
            raise _bad(f"path {path!r} must be keys and list indices below {n_keys}", f"planner_data[{key!r}]")
    return data


def _shard_name(name: Any, where: str) -> str:
    # a name, never a path: no separator, no "..", nothing but the pattern the writer uses
    if not isinstance(name, str) or not SHARD_RE.fullmatch(name):
        raise _bad(f"shard name {name!r} is not a file in the checkpoint folder (expected {SHARD_RE.pattern})", where)
    return name


def _tensor(node: Any, n_shards: int, where: str) -> TensorDoc:
    dtype = _get(node, "dtype", str, where)
    dtype_by_name(dtype, where=f"{METADATA_FILE}: {where}.dtype")
    size = _ints(_get(node, "size", list, where), None, f"{where}.size")
    fmt = node.get("memory_format", "contiguous")
    if fmt not in MEMORY_FORMATS:
        raise _bad(f"memory_format {fmt!r} is not one of {', '.join(MEMORY_FORMATS)}", where)
    raw = _get(node, "chunks", list, where)
    chunks = tuple(_chunk(c, size, n_shards, f"{where}.chunks[{i}]") for i, c in enumerate(raw))
    check_coverage(size, chunks, where)
    return TensorDoc(dtype, size, chunks, bool(node.get("requires_grad", False)), fmt)


def _chunk(node: Any, size: tuple[int, ...], n_shards: int, where: str) -> Chunk:
    offsets = _ints(_get(node, "offsets", list, where), len(size), f"{where}.offsets")
    sizes = _ints(_get(node, "sizes", list, where), len(size), f"{where}.sizes")
    for d, (o, s, full) in enumerate(zip(offsets, sizes, size)):
        if o + s > full:
            raise _bad(f"chunk lies outside the tensor: dim {d} spans {o}..{o + s}, the tensor has {full}", where)
    shard, index = _location(node, n_shards, where)
    return Chunk(offsets, sizes, shard, index)


def _location(node: Any, n_shards: int, where: str) -> tuple[int, int]:
    shard = _get(node, "shard", int, where)
    index = _get(node, "index", int, where)
    if not 0 <= shard < n_shards:
        raise _bad(f"shard {shard} is out of range (the checkpoint lists {n_shards})", where)
    if index < 0:
        raise _bad(f"index {index} is negative", where)
    return shard, index


def _volume(sizes: tuple[int, ...]) -> int:
    n = 1
    for s in sizes:
        n *= s
    return n


def _overlap(a: Chunk, b: Chunk) -> bool:
    return all(oa < ob + sb and ob < oa + sa for oa, sa, ob, sb in zip(a.offsets, a.sizes, b.offsets, b.sizes))


def check_coverage(size: tuple[int, ...], chunks: tuple[Chunk, ...], where: str) -> None:
    """Chunks tile the tensor: none overlap and, together, they cover every element."""
    pieces = sorted((c for c in chunks if _volume(c.sizes)), key=lambda c: c.offsets)
    active: list[Chunk] = []
    for c in pieces:  # sweep along dim 0: compare only with chunks still open there
        start = c.offsets[0] if c.offsets else 0
        active = [a for a in active if not a.offsets or a.offsets[0] + a.sizes[0] > start]
        for a in active:
            if _overlap(a, c):
                raise _bad(f"chunks overlap: at offsets {list(a.offsets)} and {list(c.offsets)}", where)
        active.append(c)
    covered, total = sum(_volume(c.sizes) for c in pieces), _volume(size)
    if covered != total:
        raise _bad(f"chunks leave a hole: they cover {covered} of {total} elements", where)


# --------------------------------------------------------------------------- the folder


def shard_path(folder: Path, name: str) -> Path:
    """The shard's path, refused when a link would lead it out of the folder."""
    path = folder / name
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.dirname(real) != root:
        raise FormatError(f"shard {name!r} resolves outside the checkpoint folder (a link?)", where=METADATA_FILE,
                          source=str(folder))
    return path


def read_metadata_pack(folder: Path) -> tuple[api.Pack, Doc]:
    """Open and check the metadata pack; the caller closes the pack."""
    path = folder / METADATA_FILE
    if not path.is_file():
        raise NotAModelPackError(f"no {METADATA_FILE}: not a committed distributed checkpoint", source=str(folder))
    pack = api.Pack(path)
    try:
        if pack.metadata.get(KIND_KEY) != "metadata":
            raise FormatError(f"not a distributed checkpoint's metadata pack (no {KIND_KEY}=metadata)")
        return pack, read_doc(tree.decode(pack.manifest["tree"], _no_tensors))
    except ModelPackError as e:
        pack.close()
        raise e.with_context(source=str(path))


def _no_tensors(name: str) -> Any:
    raise FormatError(f"a metadata pack holds no tensors, but its tree names {name!r}", where="tree")


def _shard_node(pack: api.Pack, section: str, index: int, where: str) -> Any:
    items = pack.manifest["tree"].get(section) if isinstance(pack.manifest["tree"], dict) else None
    if not isinstance(items, list) or index >= len(items):
        raise FormatError(f"points outside its shard: the shard has no {section}[{index}]", where=where)
    return items[index]


def check_shards(folder: Path, doc: Doc) -> dict[int, api.Pack]:
    """Open every shard (structure only) and check each chunk's dtype and shape there; caller closes them."""
    packs: dict[int, api.Pack] = {}
    try:
        for i, name in enumerate(doc.shards):
            packs[i] = api.Pack(shard_path(folder, name))
            if packs[i].metadata.get(KIND_KEY) != "shard":
                raise FormatError(f"{name} is not a shard of a distributed checkpoint", source=str(folder / name))
        for fqn, t in doc.tensors.items():
            for j, c in enumerate(t.chunks):
                _check_chunk(packs[c.shard], t, c, f"{METADATA_FILE}: tensors[{fqn!r}].chunks[{j}]")
        for fqn, (shard, index) in doc.objects.items():
            _shard_node(packs[shard], "objects", index, f"{METADATA_FILE}: objects[{fqn!r}]")
    except BaseException:
        for p in packs.values():
            p.close()
        raise
    return packs


def _check_chunk(pack: api.Pack, t: TensorDoc, c: Chunk, where: str) -> None:
    node = _shard_node(pack, "chunks", c.index, where)
    name = node.get("$tensor") if isinstance(node, dict) else None
    entry = pack.entries.get(name) if isinstance(name, str) else None
    if entry is None:
        raise FormatError(f"points outside its shard: chunks[{c.index}] of {pack.path} is not a tensor", where=where)
    if entry["dtype"] != t.dtype or tuple(entry["shape"]) != c.sizes:
        raise FormatError(
            f"the shard holds {entry['dtype']}{entry['shape']} at chunks[{c.index}], "
            f"the metadata expects {t.dtype}{list(c.sizes)}", where=where)


def chunk_tensor_name(pack: api.Pack, index: int) -> str:
    """The shard's tensor name of chunk ``index`` (checked by ``check_shards``)."""
    return pack.manifest["tree"]["chunks"][index]["$tensor"]


def verify_folder(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Check a whole checkpoint: metadata, coverage, every shard's checksums; yield what was checked."""
    root = Path(folder)
    pack, doc = read_metadata_pack(root)
    with pack:
        pack.verify()
    yield f"{METADATA_FILE}: {len(doc.tensors)} tensors, {len(doc.objects)} objects, chunks tile every tensor"
    packs = check_shards(root, doc)
    try:
        for i, p in packs.items():
            p.verify()
            yield f"{doc.shards[i]}: {len(p.entries)} tensors, checksums OK"
    finally:
        for p in packs.values():
            p.close()


def verify(folder: str | os.PathLike[str]) -> list[str]:
    """Check a whole distributed checkpoint (metadata, chunk coverage, every shard's checksums); raise on damage.

    Returns one line per file checked. Needs no torch.
    """
    return list(verify_folder(folder))


def describe_folder(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able summary of a checkpoint folder from its metadata and shard headers; no tensor byte is read."""
    root = Path(folder)
    pack, doc = read_metadata_pack(root)
    pack.close()
    packs = check_shards(root, doc)
    try:
        shards = [{"file": name, "file_bytes": packs[i].file_bytes, "chunks": len(packs[i].entries)}
                  for i, name in enumerate(doc.shards)]
    finally:
        for p in packs.values():
            p.close()
    tensors = []
    for fqn, t in doc.tensors.items():
        stored = [c for c in t.chunks if _volume(c.sizes)]
        tensors.append({"name": fqn, "dtype": t.dtype, "shape": list(t.size), "chunks": len(stored),
                        "shards": len({c.shard for c in stored}), "numel": _volume(t.size),
                        "nbytes": _volume(t.size) * dtype_by_name(t.dtype).itemsize})
    return {
        "folder": str(root),
        "dcp_version": doc.dcp_version,
        "file_bytes": sum(s["file_bytes"] for s in shards) + os.path.getsize(root / METADATA_FILE),
        "shards": shards,
        "objects": sorted(doc.objects),
        "tensor_count": len(tensors),
        "tensor_bytes": sum(t["nbytes"] for t in tensors),
        "tensors": tensors,
    }
