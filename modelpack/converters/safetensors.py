"""safetensors files <-> .mpk: our own strict header parser, and a streaming writer (no safetensors import).

The header is untrusted: its length is bounded before it is read, the JSON
may not repeat keys, every dtype comes from a closed table, every size is
dtype x shape in exact integers, and the data offsets must tile the data
region with no gap, overlap or trailing byte (the rules of safetensors'
own ``Metadata::validate``). Tensor bytes are then handed on as views of one
memory map: a conversion never holds a second copy.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from .. import _fs, limits
from ..codec import DTYPES, DType, RawArray, nbytes_of
from ..errors import ConvertError

__all__ = ["SafetensorsFile", "read_safetensors", "write_safetensors", "ST_DTYPES", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 100 << 20  # safetensors' own cap on the JSON header
_META = "__metadata__"
_ALIGN = 8  # writers pad the header with spaces so the data starts 8-byte aligned
# safetensors dtype name -> modelpack row (F4/F6 pack sub-byte elements whose shape counts values: refused)
ST_DTYPES: Mapping[str, DType] = MappingProxyType({
    "BOOL": DTYPES["bool"], "U8": DTYPES["uint8"], "I8": DTYPES["int8"], "I16": DTYPES["int16"],
    "U16": DTYPES["uint16"], "F16": DTYPES["float16"], "BF16": DTYPES["bfloat16"], "I32": DTYPES["int32"],
    "U32": DTYPES["uint32"], "F32": DTYPES["float32"], "F64": DTYPES["float64"], "I64": DTYPES["int64"],
    "U64": DTYPES["uint64"], "C64": DTYPES["complex64"], "F8_E4M3": DTYPES["float8_e4m3fn"],
    "F8_E5M2": DTYPES["float8_e5m2"], "F8_E8M0": DTYPES["float8_e8m0fnu"],
})
_ST_NAME = {row.name: st for st, row in ST_DTYPES.items()}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConvertError(f"key {key[:80]!r} appears twice in the header", where="safetensors header")
        out[key] = value
    return out


class SafetensorsFile:
    """A checked safetensors file: metadata, and tensors in data order as RawArray views of one map."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, start = _read_header(f.fileno(), size, self.path)
            self.metadata = _check_metadata(header.pop(_META, None), self.path)
            self._entries = _check_tensors(header, size - start, self.path)
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            if self._map is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
                self._map.madvise(mmap.MADV_SEQUENTIAL)  # read once, front to back: aggressive readahead
        self._start = start

    def names(self) -> list[str]:
        """Tensor names in the order their bytes lie in the file."""
        return list(self._entries)

    def tensor(self, name: str) -> RawArray:
        row, shape, begin, end = self._entries[name]
        view = memoryview(self._map)[self._start + begin : self._start + end] if end > begin else memoryview(b"")
        return RawArray(row, shape, view)

    def items(self) -> Iterator[tuple[str, RawArray]]:
        for name in self._entries:
            yield name, self.tensor(name)


def read_safetensors(path: str | os.PathLike[str]) -> SafetensorsFile:
    """Open and fully check a safetensors file (see the module docstring for the checks)."""
    return SafetensorsFile(path)


def _read_header(fd: int, size: int, path: str) -> tuple[dict[str, Any], int]:
    if size < 8:
        raise ConvertError(f"not a safetensors file: {size} bytes, fewer than the 8-byte header length",
                           source=path)
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise ConvertError(f"header length {n} is larger than the file ({size} bytes) or the "
                           f"{MAX_HEADER_BYTES >> 20} MiB cap", where="safetensors header", source=path)
    raw = os.pread(fd, n, 8)
    if not raw.startswith(b"{"):
        raise ConvertError("header is not a JSON object", where="safetensors header", source=path)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ConvertError as e:
        raise e.with_context(source=path)
    except (ValueError, RecursionError) as e:
        raise ConvertError(f"header is not valid JSON ({e.__class__.__name__})", where="safetensors header",
                           source=path) from e
    if not isinstance(header, dict):
        raise ConvertError("header is not a JSON object", where="safetensors header", source=path)
    return header, 8 + n


def _check_metadata(meta: Any, path: str) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ConvertError("__metadata__ must map strings to strings", where="safetensors header", source=path)
    return meta


def _check_tensors(header: dict[str, Any], data_size: int, path: str) -> dict[str, tuple[DType, tuple[int, ...], int, int]]:
    limits.check("max_tensors", len(header), where="safetensors header", what="number of tensors")
    entries = {name: _check_entry(name, info, path) for name, info in header.items()}
    ordered = dict(sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])))
    pos = 0
    for name, (_, _, begin, end) in ordered.items():
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise ConvertError(f"data_offsets [{begin}, {end}] {what} (expected to start at {pos})",
                               where=f"tensor {name[:80]!r}", source=path)
        pos = end
    if pos != data_size:
        raise ConvertError(f"the tensors cover {pos} bytes of a {data_size}-byte data region",
                           where="safetensors header", source=path)
    return ordered


def _check_entry(name: str, info: Any, path: str) -> tuple[DType, tuple[int, ...], int, int]:
    where = f"tensor {name[:80]!r}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ConvertError("entry must have exactly the keys dtype, shape, data_offsets", where=where, source=path)
    row = ST_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if row is None:
        raise ConvertError(f"dtype {str(info['dtype'])[:20]!r} is not supported; known: {', '.join(ST_DTYPES)}",
                           where=where, source=path)
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 1 << 63 for d in shape):
        raise ConvertError("shape must be a list of non-negative integers", where=where, source=path)
    limits.check("max_dims", len(shape), where=where, what="number of dimensions")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
        raise ConvertError("data_offsets must be two non-negative integers", where=where, source=path)
    begin, end = offsets
    nbytes = nbytes_of(shape, row.itemsize)
    if end - begin != nbytes:
        raise ConvertError(f"data_offsets [{begin}, {end}] hold {end - begin} bytes; shape {shape} x "
                           f"{info['dtype']} needs {nbytes}", where=where, source=path)
    return row, tuple(shape), begin, end


# --------------------------------------------------------------------------- writing


def header_bytes(tensors: list[tuple[str, DType, tuple[int, ...], int]], metadata: Mapping[str, str]) -> bytes:
    """The JSON header as the safetensors library writes it: compact, metadata first, space-padded to 8."""
    head: dict[str, Any] = {_META: dict(metadata)} if metadata else {}
    pos = 0
    for name, row, shape, nbytes in tensors:
        st = _ST_NAME.get(row.name)
        if st is None:
            raise ConvertError(f"safetensors has no dtype for {row.name}; it stores: {', '.join(_ST_NAME)}",
                               where=f"tensor {name!r}")
        head[name] = {"dtype": st, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    raw = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((-len(raw)) % _ALIGN)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: str | os.PathLike[str], tensors: list[tuple[str, RawArray]],
                      metadata: Mapping[str, str]) -> None:
    """Write tensors (in the given order) atomically, each straight from its memory view."""
    head = header_bytes([(n, t.dtype, t.shape, t.data.nbytes) for n, t in tensors], metadata)
    with _fs.atomic_write(path) as fd:
        _write_all(fd, head)
        for _, t in tensors:
            _write_all(fd, t.data)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[os.write(fd, view[: 64 << 20]) :]
