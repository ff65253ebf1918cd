"""Exact comparison of two tensors: same dtype, same shape, same bits.

Casting to float64 to compare hides differences: an imaginary part is dropped,
int64 values above 2**53 round together. Here equality is bitwise, through a
byte view of each element, so every dtype (complex, int64, float8, bool...) is
compared exactly and a NaN equals a NaN only with the same payload. The
numeric size of a difference is computed only to describe it (and to apply a
tolerance), in arithmetic exact for the dtype.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["Mismatch", "compare_tensors"]


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """How two tensors differ; ``str()`` is a one-line report for error messages.

    ``kind`` is ``dtype``, ``shape`` or ``values``. For values: ``count`` of
    ``numel`` elements differ in their bits; ``first`` is the first such
    element (index, a, b); ``max_abs`` the largest absolute difference (0.0
    when only the bits differ, e.g. -0.0 and 0.0 or two NaN payloads; inf when a
    NaN meets a number or the dtype has no arithmetic) and ``max_at`` its element.
    """

    where: str
    kind: str
    detail: str = ""
    count: int = 0
    numel: int = 0
    first: tuple[tuple[int, ...], str, str] | None = None
    max_abs: float = float("inf")
    max_at: tuple[tuple[int, ...], str, str] | None = None

    def __str__(self) -> str:
        if self.kind != "values":
            return f"{self.where}: {self.detail}"
        assert self.first is not None and self.max_at is not None
        text = (f"{self.where}: {self.count} of {self.numel} elements differ; first at {_at(self.first)}; "
                f"max abs difference {self.max_abs:.6g}")
        return text + (f" at {_at(self.max_at)}" if self.max_at[0] != self.first[0] else "")


def _at(element: tuple[tuple[int, ...], str, str]) -> str:
    index, a, b = element
    return f"[{', '.join(map(str, index))}]: {a} vs {b}"


def compare_tensors(a: torch.Tensor, b: torch.Tensor, *, where: str = "tensor") -> Mismatch | None:
    """None when ``a`` and ``b`` have the same dtype, shape and bits; else how they differ."""
    if a.dtype != b.dtype:
        return Mismatch(where, "dtype", f"dtype {_dtype(b)} where {_dtype(a)} was expected")
    if a.shape != b.shape:
        return Mismatch(where, "shape", f"shape {list(b.shape)} where {list(a.shape)} was expected")
    a, b = a.detach(), b.detach().to(a.device)
    if a.numel() == 0:
        return None
    bits_a, bits_b = _bits(a), _bits(b)
    differs = bits_a != bits_b
    if differs.ndim == 2:
        differs = differs.any(dim=1)
    flat = differs.nonzero().reshape(-1)
    if flat.numel() == 0:
        return None
    try:
        xa, xb = a.reshape(-1)[flat], b.reshape(-1)[flat]
    except (RuntimeError, NotImplementedError):  # no indexing for this dtype (packed float4): bytes only
        xa, xb = bits_a[flat], bits_b[flat]
    raw = xa.dtype != a.dtype  # only the bytes: no arithmetic, shown in hex
    gaps = None if raw else _gaps(xa, xb)
    worst = int(gaps.argmax()) if gaps is not None else 0
    return Mismatch(where, "values", count=flat.numel(), numel=a.numel(),
                    first=_element(a.shape, int(flat[0]), xa[0], xb[0], raw),
                    max_abs=float(gaps[worst]) if gaps is not None else float("inf"),
                    max_at=_element(a.shape, int(flat[worst]), xa[worst], xb[worst], raw))


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Each element's bytes as a row (or one integer per element): compares every dtype exactly."""
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.view(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    size = flat.element_size()
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    view = flat.view(ints[size])
    return view.reshape(t.numel(), -1) if t.is_complex() else view


def _gaps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """|a - b| per element, exact for integers; 0 for NaN vs NaN, inf for NaN vs a number.

    None for dtypes without arithmetic here (packed float4 and the like).
    """
    if a.dtype == torch.bool:
        return (a != b).to(torch.float64)
    if not (a.is_floating_point() or a.is_complex()):
        if a.dtype in (torch.int64, torch.uint64):  # exact in Python ints; as float64 only for the report
            return torch.tensor([float(abs(x - y)) for x, y in zip(a.tolist(), b.tolist())], dtype=torch.float64)
        return (a.to(torch.int64) - b.to(torch.int64)).abs().to(torch.float64)
    try:
        wide = torch.complex128 if a.is_complex() else torch.float64
        x, y = a.to(wide), b.to(wide)
    except (RuntimeError, TypeError):
        return None
    nan_x, nan_y = torch.isnan(x), torch.isnan(y)
    gap = (x - y).abs().to(torch.float64)
    gap = torch.where(nan_x & nan_y, torch.zeros_like(gap), gap)
    return torch.where(nan_x ^ nan_y, torch.full_like(gap, float("inf")), gap)


def _element(shape: torch.Size, flat_index: int, a: torch.Tensor, b: torch.Tensor,
             raw: bool) -> tuple[tuple[int, ...], str, str]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index)), _value(a, raw), _value(b, raw)


def _value(t: torch.Tensor, raw: bool) -> str:
    """One element for people: its value, with its bytes when the value alone hides them (NaN)."""
    text = None if raw else repr(t.item())
    if text is not None and "nan" not in text:
        return text
    raw = bytes(t.reshape(-1).contiguous().view(torch.uint8).tolist())[::-1].hex()  # little-endian bytes
    return f"{text} (0x{raw})" if text is not None else f"0x{raw}"
