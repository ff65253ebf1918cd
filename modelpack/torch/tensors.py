"""torch tensors <-> the stored bytes of the dtype table (zero-copy both ways)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..codec import DTYPES, DType
from ..errors import UnsupportedObjectError

__all__ = ["torch_payload", "to_torch", "torch_dtype", "dtype_row"]

# torch dtype -> row, built from the table's own names (never from a file).
_BY_TORCH: dict[torch.dtype, DType] = {
    getattr(torch, d.torch_name): d for d in DTYPES.values() if d.torch_name and hasattr(torch, d.torch_name)
}


def dtype_row(dtype: torch.dtype, *, where: str = "") -> DType:
    """The table row of a torch dtype, or an error listing what can be stored."""
    row = _BY_TORCH.get(dtype)
    if row is None:
        raise UnsupportedObjectError(
            f"cannot save a tensor of dtype {dtype}; storable: {', '.join(r.name for r in _BY_TORCH.values())}",
            where=where or None,
        )
    return row


def torch_dtype(row: DType) -> torch.dtype:
    """The torch dtype of a table row (from the table's constant names)."""
    dt = getattr(torch, row.torch_name or "", None)
    if not isinstance(dt, torch.dtype):
        raise UnsupportedObjectError(f"this torch ({torch.__version__}) has no dtype {row.name}")
    return dt


def torch_payload(t: torch.Tensor, *, where: str = "") -> tuple[DType, tuple[int, ...], memoryview]:
    """Row, shape and C-order bytes of a tensor; copies only non-contiguous or non-CPU data."""
    if t.layout != torch.strided or t.is_quantized or t.is_nested:
        raise UnsupportedObjectError(f"cannot save a {t.layout} tensor; only dense tensors", where=where or None)
    if t.device.type == "meta":
        raise UnsupportedObjectError("cannot save a tensor on the meta device (it has no data)", where=where or None)
    row = dtype_row(t.dtype, where=where)
    if row.numpy_native and t.device.type == "cpu" and t.is_contiguous() and not (t.is_conj() or t.is_neg()):
        # fast path (most tensors): a byte view of the tensor's own memory, no torch view ops
        return row, tuple(t.shape), memoryview(t.detach().numpy().reshape(-1).view(np.uint8))
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    # as_strided: a 1-element view may carry any stride, which view(uint8) refuses
    flat = t.reshape(-1).as_strided((t.numel(),), (1,))
    if flat.numel() == 0:
        return row, tuple(t.shape), memoryview(b"")
    return row, tuple(t.shape), memoryview(flat.view(torch.uint8).numpy())


def to_torch(arr: np.ndarray, row: DType) -> Any:
    """A tensor sharing ``arr``'s memory, reinterpreted as the row's true dtype."""
    if arr.ndim == 0:  # from_numpy gives 0-d tensors odd strides for later views
        return to_torch(arr.reshape(1), row).reshape(())
    if row.numpy_native:
        return torch.from_numpy(arr)
    carrier = arr.view(np.dtype(f"<i{row.itemsize}") if row.itemsize > 1 else np.uint8)
    return torch.from_numpy(carrier).view(torch_dtype(row))
