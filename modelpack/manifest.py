"""The JSON manifest: what a .mpk holds, and the strict check of a manifest against its zip.

The manifest is the last member. It names the format and version, the saved
object's structure (``tree``, see modelpack.tree), free-form string metadata,
and one entry per tensor: name, member, dtype, shape, kind, offset, nbytes and
the member's CRC-32. ``check`` proves every entry agrees with the zip structure
and every member is accounted for, before any tensor byte is touched.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import limits, tree
from .codec import DTYPES, DType, dtype_by_name, nbytes_of, npy_header
from .container import ALIGN, NPY_SUFFIX, Member, check_member_count, check_member_name_length
from .errors import FormatError, UnsupportedObjectError

__all__ = [
    "FORMAT", "VERSION", "MANIFEST", "SPEC", "dumps", "parse", "check", "check_plan", "check_member_size",
    "check_containers", "TensorEntry", "check_tree", "SHA256",
]

FORMAT = "modelpack"
VERSION = 1
MANIFEST = "manifest.json"
SPEC = "spec.yaml"
KINDS = ("torch", "numpy", "numpy-scalar")
_TOP_KEYS = {"format", "version", "metadata", "tensors", "tree"}
_OPTIONAL_KEYS = {"shards"}  # a split pack's index (modelpack.split checks the list)
_MAX_DIM = 1 << 63  # numpy and torch sizes are int64
_ENTRY_KEYS = ("name", "member", "dtype", "shape", "kind", "offset", "nbytes", "crc32")
SHA256 = "sha256"  # optional entry key: hex SHA-256 of the tensor's bytes (save(..., sha256=True))
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_SIZE_CAPS = {MANIFEST: ("max_manifest_bytes", "manifest size"), SPEC: ("max_spec_bytes", "spec size")}

TensorEntry = dict  # one element of manifest["tensors"], with the keys in _ENTRY_KEYS


def dumps(manifest: Mapping[str, Any]) -> bytes:
    """Canonical bytes: compact, ASCII, key order as built (so output is deterministic)."""
    try:
        text = json.dumps(manifest, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError as e:  # an int past sys.get_int_max_str_digits(): no reader could parse it back
        raise UnsupportedObjectError(f"cannot save the tree: {e}") from e
    return text.encode("ascii")


_PLAIN_JSON = re.compile(r"[A-Za-z0-9_.\-]*")  # strings JSON writes as they are, between quotes


def entry_text(name: str, member: str, dtype: str, shape: Sequence[int], kind: str, offset: int, nbytes: int,
               crc: int, sha256: str | None = None) -> str:
    """One tensor entry exactly as :func:`dumps` writes it, formatted directly (the writer's per-tensor cost).

    Anything but plain names and int dims goes through ``json.dumps`` itself.
    """
    dims = [str(d) for d in shape if type(d) is int]
    if len(dims) != len(shape) or not _PLAIN_JSON.fullmatch(name + member + dtype + kind):
        entry = {"name": name, "member": member, "dtype": dtype, "shape": list(shape), "kind": kind,
                 "offset": offset, "nbytes": nbytes, "crc32": f"{crc:08x}"}
        if sha256 is not None:
            entry[SHA256] = sha256
        return dumps(entry).decode("ascii")
    sha = "" if sha256 is None else f',"{SHA256}":"{sha256}"'
    return (f'{{"name":"{name}","member":"{member}","dtype":"{dtype}","shape":[{",".join(dims)}],'
            f'"kind":"{kind}","offset":{offset},"nbytes":{nbytes},"crc32":"{crc:08x}"{sha}}}')


def dumps_pack(metadata: Mapping[str, str], entries: Sequence[str], tree_json: Any,
               shards: list[dict[str, Any]] | None = None) -> bytes:
    """:func:`dumps` of a whole manifest whose tensor entries are already text (:func:`entry_text`)."""
    head = dumps({"format": FORMAT, "version": VERSION, "metadata": metadata})
    tail: dict[str, Any] = {"tree": tree_json}
    if shards is not None:
        tail["shards"] = shards
    return b"".join((head[:-1], b',"tensors":[', ",".join(entries).encode("ascii"), b"],", dumps(tail)[1:]))


def check_member_size(member: str, size: int) -> None:
    """The cap on manifest.json or spec.yaml bytes: the reader checks it before reading, the writer before writing."""
    cap, what = _SIZE_CAPS[member]
    limits.check(cap, size, where=member, what=what)


def check_containers(data: bytes) -> None:
    """The cap on the manifest's JSON objects and arrays, counted in its bytes (reader and writer alike)."""
    limits.check("max_manifest_containers", data.count(b"{") + data.count(b"["), where=MANIFEST,
                 what="JSON objects and arrays (counted before parsing)")


def check_plan(tree_json: Any, tensors: Sequence[tuple[str, Sequence[int]]], *, spec_size: int | None) -> None:
    """Writer side: refuse, before any byte is written, what the reader's checks would refuse.

    The same functions run on both sides (member and tensor counts, names,
    dimensions, spec size, and the tree decoded exactly as ``check`` decodes
    it), so a file that ``save`` writes is a file ``load`` opens under the
    same limits. The manifest's own size is checked once it is built.
    """
    check_member_count(len(tensors) + 1 + (spec_size is not None))
    _check_tensor_count(len(tensors))
    if spec_size is not None:
        check_member_size(SPEC, spec_size)
    lim = limits.current()
    max_name, max_dims, name_ok = min(lim.max_name_length, 0xFFFF - 4), lim.max_dims, tree.NAME_RE.fullmatch
    for name, shape in tensors:
        # the checks below, decided without a call for the common case; a failure goes through them for its message
        if (type(name) is str and len(name) <= max_name and name_ok(name) and ".." not in name
                and not name.endswith(".") and len(shape) <= max_dims and _dims_ok(shape)):
            continue
        where = f"tensor {name!r}"
        _check_name(name, where)
        _check_shape(list(shape), where)
    check_tree(tree_json, {name for name, _ in tensors})


def _dims_ok(shape: Sequence[int]) -> bool:
    """What :func:`_check_shape` proves, for a shape whose dims are all ints."""
    span = 1
    for d in shape:
        if type(d) is not int or not 0 <= d < _MAX_DIM:
            return False
        span *= d or 1
    return span < _MAX_DIM


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; a repeated key shows as fewer entries than pairs
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise FormatError(f"key {key!r} appears twice in a JSON object", where=MANIFEST)
    return out


def _no_constants(name: str) -> Any:
    raise FormatError(f"{name} is not valid JSON", where=MANIFEST)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # 1e999: writers store non-finite floats as {"$float": ...}
        raise FormatError(f"number {text[:40]} is out of range", where=MANIFEST)
    return value


def parse(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes strictly (no duplicate keys, no NaN) and check the top level.

    Objects and arrays are counted first (braces inside strings too: an over-count only), since
    they cost ~25 times their size once parsed; the parse runs only under that cap.
    """
    check_containers(data)
    try:
        obj = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as e:
        raise FormatError(f"not valid JSON ({e.__class__.__name__}: {str(e)[:200]})", where=MANIFEST) from e
    if not isinstance(obj, dict):
        raise FormatError("the manifest must be a JSON object", where=MANIFEST)
    if obj.get("format") != FORMAT:
        raise FormatError(f"format is {obj.get('format')!r}, expected {FORMAT!r}", where=MANIFEST)
    version = obj.get("version")
    if type(version) is not int or version < 1:
        raise FormatError(f"version {version!r} is not a positive integer", where=MANIFEST)
    if version > VERSION:
        raise FormatError(
            f"written by a newer modelpack (format version {version}); this reader supports version {VERSION}",
            where=MANIFEST,
        )
    unknown = set(obj) - _TOP_KEYS - _OPTIONAL_KEYS
    if unknown or not _TOP_KEYS <= set(obj):
        raise FormatError(f"top-level keys must be {sorted(_TOP_KEYS)}, got {sorted(obj)[:10]}", where=MANIFEST)
    _check_metadata(obj["metadata"])
    return obj


def _check_metadata(meta: Any) -> None:
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError("metadata must map strings to strings", where=f"{MANIFEST}.metadata")


def check(manifest: dict[str, Any], members: Sequence[Member]) -> dict[str, Member]:
    """Cross-check the manifest's tensors against the zip; return name -> member."""
    if not members or members[-1].name != MANIFEST:
        raise FormatError(f"{MANIFEST!r} must be the last member", where="archive")
    by_name = {m.name: m for m in members}
    entries = manifest["tensors"]
    if not isinstance(entries, list):
        raise FormatError("tensors must be a list", where=f"{MANIFEST}.tensors")
    _check_tensor_count(len(entries))
    result: dict[str, Member] = {}
    fast = _FastCheck(by_name)
    for i, entry in enumerate(entries):
        member = fast(entry)
        name, member = (entry["name"], member) if member is not None else _check_entry(entry, i, by_name)
        if name in result:
            raise FormatError(f"tensor {name!r} is listed twice", where=f"{MANIFEST}.tensors[{i}]")
        result[name] = member
    _check_coverage(members, result)
    if "shards" not in manifest:  # an index's tree refers to its shards' tensors: checked once they are open
        check_tree(manifest["tree"], result)
    return result


class _FastCheck:
    """The per-entry checks of :func:`_check_entry` with the caps read once: the member when an entry
    passes them all, else None (and ``_check_entry`` then names what is wrong)."""

    def __init__(self, by_name: Mapping[str, Member]) -> None:
        lim = limits.current()
        self.by_name, self.max_name, self.max_dims = by_name, min(lim.max_name_length, 0xFFFF - 4), lim.max_dims
        self.keys = frozenset(_ENTRY_KEYS)
        self.name_ok = tree.NAME_RE.fullmatch

    def __call__(self, entry: Any) -> Member | None:
        if type(entry) is not dict or entry.keys() != self.keys:
            return None
        name, shape, dtype = entry["name"], entry["shape"], entry["dtype"]
        dt = DTYPES.get(dtype) if type(dtype) is str else None
        if (type(name) is not str or len(name) > self.max_name or not self.name_ok(name) or ".." in name
                or name.endswith(".") or dt is None or type(shape) is not list or len(shape) > self.max_dims):
            return None
        nbytes = span = dt.itemsize
        for d in shape:
            if type(d) is not int or not 0 <= d < _MAX_DIM:
                return None
            nbytes *= d
            span *= d or 1  # as _check_shape: a zero-size shape whose other dims overflow is refused there
        if span >= _MAX_DIM:
            return None
        kind = entry["kind"]
        if kind not in KINDS or (kind == "numpy-scalar" and shape) or entry["member"] != name + NPY_SUFFIX:
            return None
        member = self.by_name.get(entry["member"])
        offset = entry["offset"]
        if member is None or type(offset) is not int or type(entry["nbytes"]) is not int:
            return None
        header_len = len(npy_header(dt.descr, shape))
        if (entry["nbytes"] != nbytes or member.size != header_len + nbytes or offset % ALIGN
                or offset != member.data_offset + header_len or entry["crc32"] != f"{member.crc:08x}"):
            return None
        return member


def _check_tensor_count(n: int) -> None:
    limits.check("max_tensors", n, where=f"{MANIFEST}.tensors", what="number of tensors")


def _check_name(name: Any, where: str) -> str:
    """A tensor name within max_name_length (LimitError) that follows the name rule (FormatError)."""
    if isinstance(name, str):
        check_member_name_length(len(name) + len(NPY_SUFFIX), where)
    if not isinstance(name, str) or not tree.valid_name(name):
        raise FormatError(f"tensor name {str(name)[:80]!r} is not allowed", where=where)
    return name


def entry_dtype(entry: TensorEntry) -> DType:
    return dtype_by_name(entry["dtype"])


def _check_entry(entry: Any, i: int, by_name: Mapping[str, Member]) -> tuple[str, Member]:
    where = f"{MANIFEST}.tensors[{i}]"
    if not isinstance(entry, dict) or set(entry) - {SHA256} != set(_ENTRY_KEYS):
        raise FormatError(
            f"each tensor entry must have exactly the keys {list(_ENTRY_KEYS)}, and optionally {SHA256!r}", where=where
        )
    name = _check_name(entry["name"], where)
    where = f"tensor {name!r}"
    dt = dtype_by_name(entry["dtype"], where=where)
    shape = _check_shape(entry["shape"], where, dt.itemsize)
    if entry["kind"] not in KINDS:
        raise FormatError(f"kind {str(entry['kind'])[:40]!r} is not one of {list(KINDS)}", where=where)
    if entry["kind"] == "numpy-scalar" and shape:
        raise FormatError("a numpy scalar must have shape []", where=where)
    member = by_name.get(entry["member"]) if entry["member"] == f"{name}.npy" else None
    if member is None:
        raise FormatError(f"member {str(entry['member'])[:80]!r} is missing or misnamed", where=where)
    for key in ("offset", "nbytes"):
        if type(entry[key]) is not int:  # not 64.0, not true: they index memory later
            raise FormatError(f"{key} {str(entry[key])[:40]!r} is not an integer", where=where)
    nbytes = nbytes_of(shape, dt.itemsize)
    header_len = len(npy_header(dt.descr, shape))
    if entry["nbytes"] != nbytes or member.size != header_len + nbytes:
        raise FormatError(
            f"byte length disagrees with shape {shape} x {dt.name}: expected {nbytes} bytes, "
            f"manifest says {entry['nbytes']!r}, member holds {member.size - header_len}",
            where=where,
        )
    if entry["offset"] != member.data_offset + header_len or entry["offset"] % ALIGN:
        raise FormatError(f"offset {entry['offset']!r} is not the member's 64-byte aligned data", where=where)
    if entry["crc32"] != f"{member.crc:08x}":
        raise FormatError("crc32 disagrees with the zip directory", where=where)
    if SHA256 in entry and not (isinstance(entry[SHA256], str) and _SHA_RE.fullmatch(entry[SHA256])):
        raise FormatError(f"{SHA256} {str(entry[SHA256])[:80]!r} is not 64 lowercase hex digits", where=where)
    return name, member


def _check_shape(shape: Any, where: str, itemsize: int = 1) -> list[int]:
    """Dims are ints in [0, 2**63), and the span numpy and torch compute must fit int64 too.

    That span counts a zero dim as 1 (``[0, 2**62]`` float32 holds no byte, yet numpy refuses
    to describe it), so a file it would break is refused here, with the other shape lies.
    """
    if not isinstance(shape, list):
        raise FormatError("shape must be a list of integers", where=where)
    limits.check("max_dims", len(shape), where=where, what="number of dimensions")
    for d in shape:
        if type(d) is not int or not 0 <= d < _MAX_DIM:  # bounded: messages, headers and products stay small
            raise FormatError(
                f"shape has a dimension ({str(d)[:24]}) that is not a non-negative integer below 2**63",
                where=where,
            )
    if nbytes_of([d or 1 for d in shape], itemsize) >= _MAX_DIM:
        raise FormatError(f"shape {shape} spans 2**63 bytes or more (counting zero dims as 1): numpy and torch "
                          "cannot describe it, even empty", where=where)
    return shape


def _check_coverage(members: Sequence[Member], tensors: Mapping[str, Member]) -> None:
    used = {m.name for m in tensors.values()}
    for m in members:
        if m.name not in used and m.name not in (MANIFEST, SPEC):
            raise FormatError("member is not listed in the manifest", where=f"member {m.name!r}")


def check_tree(tree_json: Any, tensors: Mapping[str, Any] | set[str]) -> None:
    """Decode the whole tree now (tensors as None), so open/inspect/verify refuse what load would.

    The names are gathered first (``list.append``: no Python call per tensor) and then
    compared as sets; only an error walks them again, to name the first unknown one.
    """
    refs: list[str] = []
    tree.decode(tree_json, refs.append)
    known = tensors.keys() if isinstance(tensors, Mapping) else tensors
    used = set(refs)
    if not used <= known:
        name = next(n for n in refs if n not in known)
        raise FormatError(f"refers to unknown tensor {name[:80]!r}", where=f"{MANIFEST}.tree")
    if len(used) != len(known):
        unused = set(known) - used
        raise FormatError(f"tensor {sorted(unused)[0]!r} is not used by the tree", where=f"{MANIFEST}.tree")
