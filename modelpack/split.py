"""Split packs: ``model.mpk`` (the index) plus ``model-00001-of-0000N.mpk`` shards, read as one pack.

Each shard is a complete .mpk of its own holding some of the tensors (its tree maps each
tensor's name to itself). The index is a .mpk with no tensors whose manifest carries the
whole tree, the metadata and spec, and an extra ``shards`` list binding every shard by plain
file name, byte size and the SHA-256 of the shard's manifest bytes (which in turn hold every
tensor's CRC-32): a missing, truncated, swapped or foreign shard is refused by name. Shard
names are plain file names in the index's folder; symbolic links are refused. Writing puts
each shard atomically in place and the index last, one tensor in flight at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import limits
from ._source import SHARD_NAME_RE
from .errors import FormatError, IntegrityError, UnsupportedObjectError

Pack = Any  # modelpack.api.Pack, which imports this module
__all__ = ["parse_size", "plan_shards", "shard_names", "check_shards", "SHARDS_KEY", "manifest_digest"]

SHARDS_KEY = "shards"
_SHARD_KEYS = ("file", "size", "sha256")
_WHERE = f"manifest.json.{SHARDS_KEY}"
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def manifest_digest(blob: bytes) -> str:
    """What the index binds a shard by: the SHA-256 of its manifest bytes."""
    return hashlib.sha256(blob).hexdigest()


def parse_size(size: int | str) -> int:
    """``2_000_000_000``, ``"2GB"`` (10**9, as the Hugging Face Hub counts) or ``"2GiB"`` -> bytes."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise UnsupportedObjectError(f"max_shard_size must be an int or a string like '2GB'; got {size!r}")
    if isinstance(size, str):
        m = _SIZE_RE.fullmatch(size)
        if m is None:
            raise UnsupportedObjectError(f"max_shard_size {size!r} is not a size such as '500MB', '2GB' or '1GiB'")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])
    if size <= 0:
        raise UnsupportedObjectError(f"max_shard_size must be positive; got {size}")
    return size


def plan_shards(sizes: Sequence[int], max_size: int) -> list[list[int]]:
    """Indices of tensors per shard, in order; a shard closes before it would pass ``max_size``.

    A tensor bigger than ``max_size`` gets a shard of its own (it cannot be split).
    """
    shards: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(sizes):
        if shards[-1] and used + n > max_size:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += n
    return shards


def shard_names(index_path: str, count: int) -> list[str]:
    """``model.mpk`` -> ``model-00001-of-00003.mpk`` ...: plain names for the index's folder."""
    base = os.path.basename(index_path)
    stem = base[:-4] if base.endswith(".mpk") else base
    names = [f"{stem}-{i:05d}-of-{count:05d}.mpk" for i in range(1, count + 1)]
    if not SHARD_NAME_RE.fullmatch(names[0]) or ".." in names[0]:
        raise UnsupportedObjectError(
            f"cannot name shards after {base!r}: the file name must use letters, digits, '_', '.', '-' "
            "and not start with '.' or '-'"
        )
    return names


# --------------------------------------------------------------------------- reading


def check_shards(value: Any) -> list[dict[str, Any]]:
    """The index's ``shards`` list, strictly: exact keys, plain distinct names, sizes, digests."""
    if not isinstance(value, list) or not value:
        raise FormatError("shards must be a non-empty list", where=_WHERE)
    limits.check("max_members", len(value), where=_WHERE, what="number of shards")
    seen: set[str] = set()
    for i, row in enumerate(value):
        where = f"{_WHERE}[{i}]"
        if not isinstance(row, dict) or set(row) != set(_SHARD_KEYS):
            raise FormatError(f"each shard must have exactly the keys {list(_SHARD_KEYS)}", where=where)
        name = row["file"]
        if not isinstance(name, str) or not SHARD_NAME_RE.fullmatch(name) or ".." in name:
            raise FormatError(f"shard file {str(name)[:80]!r} is not a plain .mpk file name in the index's "
                              "folder", where=where)
        if name.casefold() in seen:
            raise FormatError(f"shard {name!r} is listed twice", where=where)
        seen.add(name.casefold())
        if type(row["size"]) is not int or row["size"] < 0:
            raise FormatError(f"shard size {str(row['size'])[:40]!r} is not a non-negative integer", where=where)
        if not isinstance(row["sha256"], str) or not _SHA_RE.fullmatch(row["sha256"]):
            raise FormatError("shard sha256 must be 64 lowercase hex digits", where=where)
    return value


def open_shards(index: Pack, opener: Callable[[Any], Pack]) -> list[Pack]:
    """Open and bind every shard of ``index``; tensors then resolve through the index."""
    rows = check_shards(index.manifest[SHARDS_KEY])
    if index.manifest["tensors"]:
        raise FormatError("the index of a split pack holds no tensors of its own", where="manifest.json.tensors")
    shards: list[Pack] = []
    try:
        for row in rows:
            shards.append(_open_one(index, row, opener))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    return shards


def _open_one(index: Pack, row: dict[str, Any], opener: Callable[[Any], Pack]) -> Pack:
    name = row["file"]
    where = f"shard {name!r}"
    try:
        source = index.source.sibling(name)
    except FileNotFoundError as e:
        raise FormatError(f"shard {name!r} is missing: the index lists it, but there is no such file next to "
                          "the index", where=where) from e
    if source.size != row["size"]:
        source.close()
        raise IntegrityError(f"shard {name!r} is {source.size:,} bytes, the index says {row['size']:,}: "
                             "truncated, extended or replaced", where=where)
    shard = opener(source)
    if shard.manifest_sha256 != row["sha256"]:
        shard.close()
        raise IntegrityError(f"shard {name!r} is not the one the index binds (its manifest's SHA-256 differs): "
                             "swapped with another shard or replaced", where=where)
    if SHARDS_KEY in shard.manifest:
        shard.close()
        raise FormatError(f"shard {name!r} is itself a split index; shards hold tensors only", where=where)
    return shard
