"""Split packs: ``model.mpk`` (the index) plus ``model-00001-of-0000N.mpk`` shards, read as one pack.

Each shard is a complete .mpk of its own holding some of the tensors (its tree maps each
tensor's name to itself). The index is a .mpk with no tensors whose manifest carries the
whole tree, the metadata and spec, and an extra ``shards`` list binding every shard by plain
file name, byte size and the SHA-256 of the shard's manifest bytes (which in turn hold every
tensor's CRC-32): a missing, truncated, swapped or foreign shard is refused by name. Shard
names are plain file names in the index's folder; symbolic links are refused. Writing puts
each shard atomically in place and the index last, one tensor in flight at a time.

Each row also lists its shard's tensor names (``tensors``), so a reader knows
every name and where it lives from the index alone: a shard is opened, and
checked against its row, when one of its tensors is first asked for. An index
without the lists (written before them) has every shard opened up front.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import limits, tree
from ._source import SHARD_NAME_RE
from .errors import FormatError, IntegrityError, UnsupportedObjectError

Pack = Any  # modelpack.api.Pack, which imports this module
__all__ = ["parse_size", "plan_shards", "shard_names", "check_shards", "tensor_shards", "open_shard", "SHARDS_KEY",
           "manifest_digest"]

SHARDS_KEY = "shards"
_SHARD_KEYS = ("file", "size", "sha256")
_NAMES_KEY = "tensors"  # optional in a row (every row or none): the shard's tensor names, in its order
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
        if not isinstance(row, dict) or set(row) - {_NAMES_KEY} != set(_SHARD_KEYS):
            raise FormatError(f"each shard must have exactly the keys {list(_SHARD_KEYS)}, and optionally "
                              f"{_NAMES_KEY!r}", where=where)
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
        if (_NAMES_KEY in row) != (_NAMES_KEY in value[0]):
            raise FormatError(f"either every shard lists its {_NAMES_KEY!r} or none does", where=where)
    return value


def tensor_shards(rows: list[dict[str, Any]]) -> dict[str, int] | None:
    """Tensor name -> index of its shard's row, in file order, from checked rows; None if they list no names.

    Every name is checked, a row at a time in C (an index lists every tensor of the pack);
    the slow walk runs only to name what is wrong.
    """
    if _NAMES_KEY not in rows[0]:
        return None
    where_is: dict[str, int] = {}
    for i, row in enumerate(rows):
        names = row[_NAMES_KEY]
        where = f"{_WHERE}[{i}].{_NAMES_KEY}"
        if not isinstance(names, list):
            raise FormatError("a shard's tensors must be a list of names", where=where)
        limits.check("max_tensors", len(where_is) + len(names), where=_WHERE, what="number of tensors")
        if not tree.all_valid_names(names):
            name = next(n for n in names if not (isinstance(n, str) and tree.valid_name(n)))
            raise FormatError(f"{str(name)[:80]!r} is not a valid tensor name", where=where)
        before = len(where_is)
        where_is.update(dict.fromkeys(names, i))
        if len(where_is) != before + len(names):
            raise FormatError(f"tensor {_repeated(rows[: i + 1])!r} is in two shards", where=where)
    return where_is


def _repeated(rows: list[dict[str, Any]]) -> str:
    """The first name listed twice across ``rows`` (there is one)."""
    seen: set[str] = set()
    return next(n for row in rows for n in row[_NAMES_KEY] if n in seen or seen.add(n))  # type: ignore[func-returns-value]


def open_shard(index: Pack, row: dict[str, Any], opener: Callable[[Any], Pack]) -> Pack:
    """Open one shard of ``index`` and check it against its row: size, manifest digest, tensor names."""
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
    if _NAMES_KEY in row and row[_NAMES_KEY] != shard.keys():
        shard.close()
        raise FormatError(f"shard {name!r} does not hold the tensors the index lists for it", where=where)
    return shard
