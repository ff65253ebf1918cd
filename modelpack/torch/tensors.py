"""torch tensors <-> the stored bytes of the dtype table (zero-copy both ways)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..codec import DTYPES, DType
from ..errors import UnsupportedObjectError

__all__ = ["torch_payload", "torch_plan", "torch_plan_view", "to_torch", "torch_dtype", "dtype_row"]

# torch dtype -> row, built from the table's own names (never from a file).
_BY_TORCH: dict[torch.dtype, DType] = {
    getattr(torch, d.torch_name): d for d in DTYPES.values() if d.torch_name and hasattr(torch, d.torch_name)
}
# same-width integer dtypes: raw rows are copied and viewed through these (torch has no kernels for some)
_CARRIER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NESTED = "cannot save a nested tensor; save its components instead: list(t.unbind())"
# looked up once: each costs an attribute walk per tensor otherwise (``t.device.type`` builds a string)
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_STRIDED = torch.strided
_WRAPPED = torch._C._functorch.is_functorch_wrapped_tensor


def dtype_row(dtype: torch.dtype, *, where: str = "") -> DType:
    """The table row of a torch dtype, or an error listing what can be stored."""
    row = _BY_TORCH.get(dtype)
    if row is None:
        hint = ""
        if dtype.itemsize == 1 and not dtype.is_floating_point and not dtype.is_complex:
            hint = " (torch has no copy kernels for it); save t.view(torch.uint8) and view it back after loading"
        raise UnsupportedObjectError(
            f"cannot save a tensor of dtype {dtype}{hint}; storable: {', '.join(r.name for r in _BY_TORCH.values())}",
            where=where or None,
        )
    return row


def torch_dtype(row: DType) -> torch.dtype:
    """The torch dtype of a table row (from the table's constant names)."""
    dt = getattr(torch, row.torch_name or "", None)
    if not isinstance(dt, torch.dtype):
        raise UnsupportedObjectError(f"this torch ({torch.__version__}) has no dtype {row.name}")
    return dt


def _subclass_refusal(t: torch.Tensor) -> str:
    names = {c.__name__ for c in type(t).__mro__}
    if "DTensor" in names:
        return "cannot save a DTensor (a shard of a distributed tensor); gather it to a full tensor first: t.full_tensor()"
    if "FakeTensor" in names:
        return "cannot save a FakeTensor (it has shapes but no data); save real tensors"
    if "UninitializedParameter" in names or "UninitializedBuffer" in names:
        return "cannot save an uninitialized lazy parameter; run one forward pass to materialize it first"
    if "NestedTensor" in names:
        return _NESTED
    return (
        f"cannot save a tensor subclass {type(t).__module__}.{type(t).__qualname__}: its type and extra state "
        "would be lost; convert it to a plain tensor first (e.g. t.as_subclass(torch.Tensor))"
    )


def _refusal(t: torch.Tensor) -> str | None:
    """Why a tensor cannot be stored as one dense member, with what to do instead; None if it can."""
    if type(t) not in _PLAIN:
        return _subclass_refusal(t)
    if t.is_nested:
        return _NESTED
    if _WRAPPED(t):
        return "cannot save a tensor inside a torch.func transform (vmap, grad...); save it outside the transform"
    if t.is_quantized:
        return (
            f"cannot save a quantized tensor (dtype {t.dtype}); save t.dequantize(), "
            "or t.int_repr() together with its scale and zero point"
        )
    if t.layout != _STRIDED:
        return f"cannot save a {t.layout} tensor; only dense and sparse tensors: convert with t.to_dense()"
    if t.is_meta:
        return (
            "cannot save a tensor on the meta device: it has a shape but no data; "
            "materialize it first (e.g. module.to_empty(device='cpu'), then load or initialize the weights)"
        )
    if t._is_zerotensor():
        return "cannot save an efficient zero tensor (it has no memory); materialize it first: t.clone()"
    return None


def torch_plan(t: torch.Tensor, *, where: str = "") -> tuple[DType, tuple[int, ...], bool]:
    """Row and shape of a savable tensor (refusals raised here), and whether its bytes need a copy.

    The writer plans every tensor first and makes a copy (GPU, non-contiguous, lazily negated
    data) only right before writing it, so at most one copy is in flight.
    """
    row, shape, view = torch_plan_view(t, where=where)
    return row, shape, view is None


def torch_plan_view(t: torch.Tensor, *, where: str = "") -> tuple[DType, tuple[int, ...], memoryview | None]:
    """:func:`torch_plan` and, when no copy is needed (most tensors), the bytes in the same call."""
    why = _refusal(t)
    if why is not None:
        raise UnsupportedObjectError(why, where=where or None)
    row = _BY_TORCH.get(t.dtype) or dtype_row(t.dtype, where=where)
    if row.numpy_native and t.is_cpu and t.is_contiguous() and not (t.is_conj() or t.is_neg()):
        # a byte view of the tensor's own memory, no torch view ops (detach only where numpy() needs it)
        arr = (t.detach() if t.requires_grad else t).numpy()
        view = memoryview(arr).cast("B") if arr.size else memoryview(b"")  # cast refuses empty arrays
        return row, arr.shape, view
    return row, tuple(t.shape), None


def torch_payload(t: torch.Tensor, *, where: str = "") -> tuple[DType, tuple[int, ...], memoryview]:
    """Row, shape and C-order bytes of a tensor; copies only non-contiguous, non-CPU or lazily negated data."""
    row, shape, view = torch_plan_view(t, where=where)
    if view is not None:  # most tensors: no copy
        return row, shape, view
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()  # the values a reader sees, not the memory under a lazy bit
    if not row.numpy_native:
        t = t.view(_CARRIER[row.itemsize])  # same width, so any strides; copy kernels exist for these
    t = t.contiguous()
    # as_strided: a 1-element view may carry any stride, which view(uint8) refuses
    flat = t.reshape(-1).as_strided((t.numel(),), (1,))
    if flat.numel() == 0:
        return row, tuple(t.shape), memoryview(b"")
    return row, tuple(t.shape), memoryview(flat.view(torch.uint8).numpy())


def to_torch(arr: np.ndarray, row: DType) -> Any:
    """A tensor sharing ``arr``'s memory, reinterpreted as the row's true dtype."""
    if arr.size == 0:  # numpy gives empty arrays zero strides; torch views need canonical ones
        return torch.empty(arr.shape, dtype=torch_dtype(row))
    if arr.ndim == 0:  # from_numpy gives 0-d tensors odd strides for later views
        return to_torch(arr.reshape(1), row).reshape(())
    if row.numpy_native:
        return torch.from_numpy(arr)
    carrier = arr.view(np.dtype(f"<i{row.itemsize}") if row.itemsize > 1 else np.uint8)
    return torch.from_numpy(carrier).view(torch_dtype(row))
