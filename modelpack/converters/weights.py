"""Weights-only conversions between .mpk and safetensors: one file, or a Hugging Face sharded folder.

Every direction streams: tensors go from one memory map to the writer as
views, so memory holds no second copy. A safetensors file becomes a flat
dict of torch-kind tensors (``load`` gives torch; ``framework="numpy"`` numpy)
in the file's data order, its ``__metadata__`` becomes the pack's metadata,
and converting back writes the same bytes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import _fs, api
from ..codec import RawArray, dtype_by_name
from ..errors import ConvertError
from .safetensors import read_safetensors, write_safetensors

__all__ = ["safetensors_to_mpk", "sharded_to_mpk", "mpk_to_safetensors", "mpk_to_sharded", "flat_tensors",
           "INDEX_NAME"]

INDEX_NAME = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.safetensors")
_MAX_INDEX_BYTES = 64 << 20


def safetensors_to_mpk(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, sha256: bool = False,
                       progress: bool | None = None) -> None:
    """One safetensors file -> one .mpk of its tensors and metadata."""
    st = read_safetensors(src)
    api.save(dict(st.items()), dst, metadata=st.metadata, sha256=sha256, progress=progress)


def _read_index(folder: Path) -> dict[str, str]:
    """weight_map of model.safetensors.index.json, with every shard a plain file name in the folder."""
    index = folder / INDEX_NAME
    if index.stat().st_size > _MAX_INDEX_BYTES:
        raise ConvertError(f"index is larger than {_MAX_INDEX_BYTES >> 20} MiB", source=str(index))
    try:
        body = json.loads(index.read_text("utf-8"))
    except ValueError as e:
        raise ConvertError(f"not valid JSON ({e.__class__.__name__})", source=str(index)) from e
    wmap = body.get("weight_map") if isinstance(body, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise ConvertError("weight_map must map tensor names to shard file names", source=str(index))
    for shard in set(wmap.values()):
        if not _SHARD_RE.fullmatch(shard) or ".." in shard:
            raise ConvertError(f"shard {shard[:80]!r} is not a plain .safetensors file name in the folder",
                               where="weight_map", source=str(index))
    return wmap


def sharded_to_mpk(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, sha256: bool = False,
                   progress: bool | None = None) -> None:
    """A folder with model.safetensors.index.json -> one .mpk; each shard must hold exactly what the index says."""
    folder = Path(src)
    wmap = _read_index(folder)
    tensors: dict[str, RawArray] = {}
    metadata: dict[str, str] = {}
    for shard in dict.fromkeys(wmap.values()):  # shards in the index's order, each once
        st = read_safetensors(folder / shard)
        _merge_metadata(metadata, st.metadata, shard)
        for name, t in st.items():
            if wmap.get(name) != shard:
                raise ConvertError(f"shard {shard!r} holds it, the index says {wmap.get(name)!r}",
                                   where=f"tensor {name[:80]!r}", source=str(folder))
            tensors[name] = t
    missing = [n for n in wmap if n not in tensors]
    if missing:
        raise ConvertError(f"listed in the index, absent from shard {wmap[missing[0]]!r}",
                           where=f"tensor {missing[0][:80]!r}", source=str(folder))
    api.save(tensors, dst, metadata=metadata, sha256=sha256, progress=progress)


def _merge_metadata(into: dict[str, str], meta: Mapping[str, str], shard: str) -> None:
    for key, value in meta.items():
        if into.setdefault(key, value) != value:
            raise ConvertError(f"shards disagree on __metadata__[{key!r}]: {into[key]!r} vs {value!r}",
                               where=f"shard {shard!r}")


# --------------------------------------------------------------------------- .mpk -> safetensors


def flat_tensors(pack: api.Pack) -> list[tuple[str, RawArray]]:
    """The pack's tree as (key, raw bytes) pairs; only a flat dict of str keys to dense tensors converts."""
    tree_json = pack.manifest["tree"]
    items = tree_json.items() if isinstance(tree_json, dict) and "$dict" not in tree_json else None
    out = []
    for key, node in items or ():
        if not (isinstance(node, dict) and set(node) == {"$tensor"}):
            items = None
            break
        entry = pack.entries[node["$tensor"]]
        row = dtype_by_name(entry["dtype"])
        arr = pack.array(entry["name"])
        out.append((key, RawArray(row, tuple(entry["shape"]), memoryview(arr.reshape(-1).view("u1")))))
    if items is None:
        raise ConvertError("only a flat dict of name -> dense tensor converts to safetensors (a state_dict, "
                           "or what a safetensors file became); this pack holds another structure",
                           source=pack.path)
    return out


def mpk_to_safetensors(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path | None:
    """A .mpk -> one safetensors file; a model's spec goes beside it (``DST`` with ``.yaml``). Returns that path."""
    with api.Pack(src) as pack:
        write_safetensors(dst, flat_tensors(pack), pack.metadata)
        return _spec_beside(pack, Path(dst).with_suffix(".yaml"))


def _spec_beside(pack: api.Pack, path: Path) -> Path | None:
    if pack.spec_text is None:
        return None
    with _fs.atomic_write(path) as fd:
        os.write(fd, pack.spec_text.encode("utf-8"))
    return path


def mpk_to_sharded(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                   max_shard_bytes: int = 5 << 30) -> Path | None:
    """A .mpk -> a folder of ``model-0000i-of-0000n.safetensors`` shards plus model.safetensors.index.json."""
    folder = Path(dst)
    folder.mkdir(parents=True, exist_ok=True)
    with api.Pack(src) as pack:
        groups: list[list[tuple[str, RawArray]]] = [[]]
        size = 0
        for name, t in flat_tensors(pack):
            if groups[-1] and size + t.data.nbytes > max_shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append((name, t))
            size += t.data.nbytes
        wmap: dict[str, str] = {}
        for i, group in enumerate(groups, 1):
            shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            write_safetensors(folder / shard, group, pack.metadata)
            wmap.update({name: shard for name, _ in group})
        total = sum(t.data.nbytes for g in groups for _, t in g)
        index: dict[str, Any] = {"metadata": {"total_size": total}, "weight_map": wmap}
        with _fs.atomic_write(folder / INDEX_NAME) as fd:
            os.write(fd, json.dumps(index, indent=2).encode("utf-8") + b"\n")
        return _spec_beside(pack, folder / "spec.yaml")
