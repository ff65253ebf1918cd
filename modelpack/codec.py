"""THE dtype table, and tensor bytes <-> arrays (numpy only; torch lives in modelpack.torch).

Every dtype modelpack can store is one row here. A row says how its bytes sit
in the file (the ``.npy`` descr, little-endian) and what it is in numpy and
torch. Dtypes numpy lacks (bfloat16, float8, float4, complex32, torch's bits
types) are stored as raw unsigned bits of the same width; the manifest keeps
the true name. Not stored: torch's quantized dtypes (their scale lives outside
the bytes) and its sub-byte shell dtypes (uint1..uint7, int1..int7), which
torch itself cannot copy.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from .errors import FormatError

__all__ = [
    "DType",
    "DTYPES",
    "dtype_by_name",
    "dtype_for_numpy",
    "npy_header",
    "NPY_ALIGN",
    "nbytes_of",
    "numpy_payload",
    "numpy_view",
    "RawArray",
    "FileRange",
    "CopiedArray",
    "foreign_array",
]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("modelpack needs a little-endian machine")

NPY_ALIGN = 64


@dataclasses.dataclass(frozen=True)
class DType:
    """One storable dtype."""

    name: str  # modelpack's name, used in the manifest and the spec
    itemsize: int
    descr: str  # .npy descr of the stored bytes
    numpy_native: bool  # np.load returns the true values (else raw bits)
    torch_name: str | None  # attribute name in the torch module, from this table only

    @property
    def storage_numpy(self) -> np.dtype:
        """The numpy dtype the stored bytes are viewed as."""
        return np.dtype(self.descr)


def _rows() -> list[DType]:
    native = [
        ("bool", 1, "|b1", "bool"),
        ("uint8", 1, "|u1", "uint8"),
        ("int8", 1, "|i1", "int8"),
        ("int16", 2, "<i2", "int16"),
        ("uint16", 2, "<u2", "uint16"),
        ("int32", 4, "<i4", "int32"),
        ("uint32", 4, "<u4", "uint32"),
        ("int64", 8, "<i8", "int64"),
        ("uint64", 8, "<u8", "uint64"),
        ("float16", 2, "<f2", "float16"),
        ("float32", 4, "<f4", "float32"),
        ("float64", 8, "<f8", "float64"),
        ("complex64", 8, "<c8", "complex64"),
        ("complex128", 16, "<c16", "complex128"),
    ]
    raw = [
        ("bfloat16", 2, "<u2"),
        ("complex32", 4, "<u4"),
        ("float8_e4m3fn", 1, "|u1"),
        ("float8_e5m2", 1, "|u1"),
        ("float8_e4m3fnuz", 1, "|u1"),
        ("float8_e5m2fnuz", 1, "|u1"),
        ("float8_e8m0fnu", 1, "|u1"),
        ("float4_e2m1fn_x2", 1, "|u1"),  # two float4 values per byte, as torch and safetensors pack them
        ("bits1x8", 1, "|u1"),  # torch's opaque bit containers: bytes with no arithmetic
        ("bits2x4", 1, "|u1"),
        ("bits4x2", 1, "|u1"),
        ("bits8", 1, "|u1"),
        ("bits16", 2, "<u2"),
    ]
    rows = [DType(n, size, descr, True, t) for n, size, descr, t in native]
    rows += [DType(n, size, descr, False, n) for n, size, descr in raw]
    return rows


DTYPES: Mapping[str, DType] = MappingProxyType({d.name: d for d in _rows()})
_BY_NUMPY: Mapping[np.dtype, DType] = MappingProxyType(
    {np.dtype(d.descr): d for d in DTYPES.values() if d.numpy_native}
)


def dtype_by_name(name: object, *, where: str | None = None) -> DType:
    """Look a manifest dtype name up in the closed table."""
    if isinstance(name, str) and name in DTYPES:
        return DTYPES[name]
    raise FormatError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}", where=where)


def dtype_for_numpy(dt: np.dtype) -> DType | None:
    """The row for a numpy dtype (any byte order), or None if not storable."""
    if dt.kind not in "biufc":
        return None
    return _BY_NUMPY.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)


@dataclasses.dataclass(frozen=True)
class RawArray:
    """Tensor bytes already in stored form (little-endian, C order), handed to the writer as they are.

    What converters pass to ``save``: a view of a mapped foreign file, so a
    conversion never holds a second copy. ``kind`` says how it loads back
    (``"torch"`` or ``"numpy"``; numpy only for the dtypes numpy has).
    """

    dtype: DType
    shape: tuple[int, ...]
    data: memoryview
    kind: str = "torch"

    def __post_init__(self) -> None:
        want = nbytes_of(self.shape, self.dtype.itemsize)
        if self.data.nbytes != want:
            raise FormatError(f"{self.data.nbytes} bytes cannot hold shape {list(self.shape)} x {self.dtype.name} "
                              f"({want} bytes)")
        if self.kind not in ("torch", "numpy") or (self.kind == "numpy" and not self.dtype.numpy_native):
            raise ValueError(f"kind {self.kind!r} cannot hold {self.dtype.name}")


class FileRange(NamedTuple):
    """``nbytes`` bytes at ``offset`` of the open file ``fd`` (at ``path``), whose CRC-32 the caller already knows."""

    fd: int
    offset: int
    nbytes: int
    crc32: int
    path: str = ""


@dataclasses.dataclass(frozen=True)
class CopiedArray:
    """Tensor bytes in stored form that are byte ranges of other open files, joined in order.

    The writer copies them file to file in the kernel (no pass through memory)
    and joins their CRC-32s arithmetically instead of reading them: what
    consolidating a distributed checkpoint hands to the writer. A range whose
    bytes no longer match its CRC keeps the written member's CRC wrong, so
    damage in the source stays visible to ``verify`` in the copy.
    """

    dtype: DType
    shape: tuple[int, ...]
    ranges: tuple[FileRange, ...]
    kind: str = "torch"

    def __post_init__(self) -> None:
        want = nbytes_of(self.shape, self.dtype.itemsize)
        if self.nbytes != want:
            raise FormatError(f"{self.nbytes} bytes cannot hold shape {list(self.shape)} x {self.dtype.name} "
                              f"({want} bytes)")

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.ranges)


def foreign_array(obj: object) -> "np.ndarray | RawArray | None":
    """A JAX/TensorFlow/CuPy/MXNet... array as numpy (zero copy on CPU) via DLPack or the array interface.

    Returns None when ``obj`` speaks neither protocol. Dtypes numpy lacks but
    ``ml_dtypes`` names (JAX's bfloat16, float8...) come back as a RawArray of
    their bits, matched by name to this table.
    """
    if hasattr(obj, "__dlpack__"):
        try:
            arr = np.from_dlpack(obj)
        except (BufferError, RuntimeError, TypeError, ValueError) as e:  # on a device, or a dtype DLPack lacks
            arr = _from_device(obj, e)
    elif _has_array_interface(obj):
        arr = np.asarray(obj)
    else:
        return None
    row = DTYPES.get(arr.dtype.name)
    if dtype_for_numpy(arr.dtype) is None and row is not None and row.itemsize == arr.dtype.itemsize:
        flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        return RawArray(row, tuple(arr.shape), memoryview(flat))
    return arr


def _from_device(obj: object, first: Exception) -> np.ndarray:
    """A DLPack array numpy cannot view in place: through the array interface, else a copy to the CPU."""
    from .errors import UnsupportedObjectError

    try:
        if _has_array_interface(obj):
            return np.asarray(obj)
        return np.from_dlpack(obj, device="cpu", copy=True)
    except (BufferError, RuntimeError, TypeError, ValueError) as e:
        raise UnsupportedObjectError(
            f"cannot read a {type(obj).__name__!r} through DLPack ({first}) or copy it to the CPU ({e}); "
            "convert it to numpy first") from e


def _has_array_interface(obj: object) -> bool:
    return hasattr(obj, "__array_interface__") or hasattr(obj, "__array_struct__") or hasattr(obj, "__array__")


def nbytes_of(shape: tuple[int, ...] | list[int], itemsize: int) -> int:
    """Exact byte size of a tensor (Python ints never overflow)."""
    n = itemsize
    for d in shape:
        n *= d
    return n


def npy_header(descr: str, shape: tuple[int, ...] | list[int]) -> bytes:
    """The canonical .npy header (cached: models repeat a few shapes many times)."""
    return _npy_header(descr, tuple(shape))


@functools.lru_cache(maxsize=4096)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The canonical .npy v1.0 header, padded so the data after it is 64-byte aligned.

    modelpack writes and accepts exactly these bytes, so a reader can check a
    header by regenerating it instead of parsing Python literals.
    """
    dims = ", ".join(str(int(d)) for d in shape)
    if len(shape) == 1:
        dims += ","
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}"
    body_len = len(text) + 1  # + "\n"
    total = 10 + body_len
    pad = (-total) % NPY_ALIGN
    header_len = body_len + pad
    if header_len > 0xFFFF:
        raise FormatError(f"shape {list(shape)} is too long for a .npy v1.0 header")
    return b"\x93NUMPY\x01\x00" + header_len.to_bytes(2, "little") + text.encode("ascii") + b" " * pad + b"\n"


def numpy_payload(arr: np.ndarray, *, where: str = "") -> tuple[DType, tuple[int, ...], memoryview]:
    """The row, shape and little-endian C-order bytes of an array (copies only if it must)."""
    from .errors import UnsupportedObjectError

    dt = dtype_for_numpy(arr.dtype)
    if dt is None:
        raise UnsupportedObjectError(
            f"cannot save a numpy array of dtype {arr.dtype}; storable: "
            + ", ".join(d.name for d in DTYPES.values() if d.numpy_native),
            where=where or None,
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # np.ascontiguousarray would turn 0-d into 1-d
    return dt, tuple(arr.shape), memoryview(arr.reshape(-1).view(np.uint8))


def numpy_view(buffer: object, offset: int, dt: DType, shape: list[int] | tuple[int, ...]) -> np.ndarray:
    """An array over ``buffer`` bytes without copying (storage dtype for raw rows)."""
    count = nbytes_of(shape, 1)
    return np.frombuffer(buffer, dtype=dt.storage_numpy, count=count, offset=offset).reshape(shape)  # type: ignore[call-overload]
