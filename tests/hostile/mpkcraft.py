"""Build .mpk bytes field by field, so that each hostile file is one line of a test.

``mpk()`` lays out a valid pack (the same bytes ``modelpack.save`` writes for the
same arrays, checked by a test) as a :class:`Zip` whose every raw field can be
overridden before ``.bytes()`` serialises it::

    z = mpk(); z.e[0].lfh["crc"] = 0; z.bytes()      # local header CRC disagrees
    mpk(manifest=lambda m: m["tensors"][0].update(shape=[-1]))

The writer here is independent of modelpack's (own struct layouts, own .npy
header code), so a bug shared by both would show up as a byte difference.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

LFH = struct.Struct("<IHHHHHIIIHH")
CDH = struct.Struct("<IHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<IHHHHIIH")
Z64_EOCD = struct.Struct("<IQHHIIQQQQ")
Z64_LOC = struct.Struct("<IIQI")
U16, U32 = 0xFFFF, 0xFFFFFFFF
Z64_ID, PAD_ID = 0x0001, 0x706D
DATE = 0x21  # 1980-01-01

_LFH_FIELDS = ("sig", "version", "flags", "method", "time", "date", "crc", "csize", "usize", "nlen", "elen")
_CD_FIELDS = ("sig", "made", "version", "flags", "method", "time", "date", "crc", "csize", "usize",
              "nlen", "elen", "clen", "disk", "iattr", "eattr", "offset")
_EOCD_FIELDS = ("sig", "disk", "cd_disk", "n_disk", "n_total", "cd_size", "cd_offset", "clen")
_Z64_FIELDS = ("sig", "size", "made", "version", "disk", "cd_disk", "n_disk", "n_total", "cd_size", "cd_offset")
_LOC_FIELDS = ("sig", "disk", "offset", "disks")

# manifest dtype name -> .npy descr (own copy of docs/FORMAT.md section 3)
DESCR = {
    "bool": "|b1", "uint8": "|u1", "int8": "|i1", "int16": "<i2", "uint16": "<u2", "int32": "<i4",
    "uint32": "<u4", "int64": "<i8", "uint64": "<u8", "float16": "<f2", "float32": "<f4",
    "float64": "<f8", "complex64": "<c8", "complex128": "<c16",
}


def npy_header(descr: str, shape: tuple[int, ...] | list[int]) -> bytes:
    """The canonical header of docs/FORMAT.md section 2 (data 64-byte aligned)."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}"
    pad = (-(10 + len(text) + 1)) % 64
    return b"\x93NUMPY\x01\x00" + (len(text) + 1 + pad).to_bytes(2, "little") + text.encode() + b" " * pad + b"\n"


@dataclasses.dataclass
class Entry:
    """One member: its bytes plus any raw field that should lie."""

    name: bytes
    data: bytes
    align: bool = False  # pad the local header so the data after a .npy header is 64-byte aligned
    z64: bool = False  # ZIP64 sizes and offset
    lfh: dict[str, int] = dataclasses.field(default_factory=dict)  # overrides, keys in _LFH_FIELDS
    cd: dict[str, int] = dataclasses.field(default_factory=dict)  # overrides, keys in _CD_FIELDS
    lfh_name: bytes | None = None  # a different name in the local header
    lfh_extra: bytes | None = None  # replaces the computed local extra field
    cd_extra: bytes | None = None  # replaces the computed central-directory extra field
    comment: bytes = b""  # per-entry comment in the central directory
    after: bytes = b""  # bytes between this member's data and the next local header (a gap)

    def local_extra(self, offset: int) -> bytes:
        if self.lfh_extra is not None:
            return self.lfh_extra
        extra = struct.pack("<HHQQ", Z64_ID, 16, len(self.data), len(self.data)) if self.z64 else b""
        if self.align:
            start = offset + LFH.size + len(self.lfh_name or self.name) + len(extra) + 4
            pad = (-start) % 64
            extra += struct.pack("<HH", PAD_ID, pad) + b"\0" * pad
        return extra


@dataclasses.dataclass
class Zip:
    """A whole archive; ``bytes()`` applies every override, ``marks`` names each structure's offset."""

    e: list[Entry]
    prefix: bytes = b""  # bytes before the first local header
    shift: bool = False  # with a prefix: add its length to the recorded offsets (an SFX-style polyglot)
    zip64: bool = False  # ZIP64 end record + locator
    eocd: dict[str, int] = dataclasses.field(default_factory=dict)
    z64rec: dict[str, int] = dataclasses.field(default_factory=dict)
    z64loc: dict[str, int] = dataclasses.field(default_factory=dict)
    comment: bytes = b""  # archive comment after the end record
    trailer: bytes = b""  # bytes after everything
    cd_order: list[int] | None = None  # central-directory entries by index (repeats/omissions allowed)
    cd_tail: bytes = b""  # junk after the last central-directory entry
    marks: dict[str, int] = dataclasses.field(default_factory=dict)

    def bytes(self) -> bytes:
        out = bytearray(self.prefix)
        base = len(self.prefix) if self.shift else 0
        offsets: list[int] = []
        for i, m in enumerate(self.e):
            offsets.append(len(out) - len(self.prefix) + base)
            self.marks[f"lfh{i}"] = len(out)
            name = m.lfh_name if m.lfh_name is not None else m.name
            extra = m.local_extra(len(out))
            size = U32 if m.z64 else len(m.data)
            f = dict(sig=0x04034B50, version=45 if m.z64 else 20, flags=0, method=0, time=0, date=DATE,
                     crc=zlib.crc32(m.data), csize=size, usize=size, nlen=len(name), elen=len(extra))
            f.update(m.lfh)
            out += LFH.pack(*(f[k] for k in _LFH_FIELDS))
            self.marks[f"name{i}"] = len(out)
            out += name
            self.marks[f"extra{i}"] = len(out)
            out += extra
            self.marks[f"data{i}"] = len(out)
            out += m.data
            self.marks[f"end{i}"] = len(out)
            out += m.after
        cd_offset = len(out) - len(self.prefix) + base
        self.marks["cd"] = len(out)
        order = range(len(self.e)) if self.cd_order is None else self.cd_order
        for j, i in enumerate(order):
            self.marks[f"cd{j}"] = len(out)
            out += self._cd_entry(self.e[i], offsets[i])
        out += self.cd_tail
        cd_size = len(out) - len(self.prefix) + base - cd_offset
        count = len(order)
        if self.zip64:
            self.marks["z64rec"] = len(out)
            rec_offset = len(out) - len(self.prefix) + base
            r = dict(sig=0x06064B50, size=44, made=45, version=45, disk=0, cd_disk=0, n_disk=count,
                     n_total=count, cd_size=cd_size, cd_offset=cd_offset)
            r.update(self.z64rec)
            out += Z64_EOCD.pack(*(r[k] for k in _Z64_FIELDS))
            self.marks["z64loc"] = len(out)
            loc = dict(sig=0x07064B50, disk=0, offset=rec_offset, disks=1)
            loc.update(self.z64loc)
            out += Z64_LOC.pack(*(loc[k] for k in _LOC_FIELDS))
            end = dict(sig=0x06054B50, disk=0, cd_disk=0, n_disk=U16, n_total=U16, cd_size=U32,
                       cd_offset=U32, clen=len(self.comment))
        else:
            end = dict(sig=0x06054B50, disk=0, cd_disk=0, n_disk=count, n_total=count, cd_size=cd_size,
                       cd_offset=cd_offset, clen=len(self.comment))
        end.update(self.eocd)
        self.marks["eocd"] = len(out)
        out += EOCD.pack(*(end[k] for k in _EOCD_FIELDS)) + self.comment
        self.marks["eof"] = len(out)
        return bytes(out + self.trailer)

    def _cd_entry(self, m: Entry, offset: int) -> bytes:
        if m.cd_extra is not None:
            extra = m.cd_extra
        elif m.z64:
            extra = struct.pack("<HHQQQ", Z64_ID, 24, len(m.data), len(m.data), offset)
        else:
            extra = b""
        size = U32 if m.z64 else len(m.data)
        version = 45 if m.z64 else 20
        f = dict(sig=0x02014B50, made=version, version=version, flags=0, method=0, time=0, date=DATE,
                 crc=zlib.crc32(m.data), csize=size, usize=size, nlen=len(m.name), elen=len(extra),
                 clen=len(m.comment), disk=0, iattr=0, eattr=0, offset=U32 if m.z64 else offset)
        f.update(m.cd)
        return CDH.pack(*(f[k] for k in _CD_FIELDS)) + m.name + extra + m.comment

    def find(self, name: str) -> Entry:
        return next(m for m in self.e if m.name == name.encode())


def default_tensors() -> dict[str, np.ndarray]:
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3], dtype=np.int64)}


def mpk(
    tensors: dict[str, np.ndarray] | None = None,
    *,
    tree: Any = None,
    metadata: dict[str, str] | None = None,
    spec: bytes | None = None,
    manifest: Callable[[dict[str, Any]], Any] | None = None,
    raw_manifest: bytes | None = None,
    zip64: bool = False,
) -> Zip:
    """A valid pack of numpy arrays (tree: ``{name: array}``), then ``manifest(m)`` may mutate the manifest."""
    tensors = default_tensors() if tensors is None else tensors
    entries: list[Entry] = []
    if spec is not None:
        entries.append(Entry(b"spec.yaml", spec, z64=zip64))
    rows = []
    for name, arr in tensors.items():
        dtype = arr.dtype.name
        head = npy_header(DESCR[dtype], arr.shape)
        entries.append(Entry(f"{name}.npy".encode(), head + arr.astype(arr.dtype.newbyteorder("<")).tobytes(),
                             align=True, z64=zip64))
        rows.append((name, dtype, list(arr.shape), len(head), arr.nbytes))
    probe = Zip(entries + [Entry(b"manifest.json", b"", z64=zip64)], zip64=zip64)
    probe.bytes()
    first = 1 if spec is not None else 0
    body: dict[str, Any] = {
        "format": "modelpack",
        "version": 1,
        "metadata": dict(metadata or {}),
        "tensors": [
            {"name": n, "member": f"{n}.npy", "dtype": dt, "shape": shape, "kind": "numpy",
             "offset": probe.marks[f"data{first + i}"] + hl, "nbytes": nb,
             "crc32": f"{zlib.crc32(entries[first + i].data):08x}"}
            for i, (n, dt, shape, hl, nb) in enumerate(rows)
        ],
        "tree": {n: {"$tensor": n} for n in tensors} if tree is None else tree,
    }
    if manifest is not None:
        manifest(body)
    data = raw_manifest if raw_manifest is not None else json.dumps(body, separators=(",", ":")).encode()
    return Zip(entries + [Entry(b"manifest.json", data, z64=zip64)], zip64=zip64)


def manifest_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
