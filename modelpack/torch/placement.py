"""dtype and device at load: cast floating tensors one at a time, stage host-to-GPU copies through pinned memory.

``place`` converts one tensor as it comes out of the file, so a model is never held whole at
the source precision. A CUDA target gets a pinned staging copy and a non-blocking transfer:
the next tensor is read from the file while this one crosses the bus; ``finish`` waits for
the transfers (pinned buffers stay alive until then). Every other device uses ``Tensor.to``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..codec import DTYPES
from ..errors import UnsupportedObjectError
from .tensors import torch_dtype

__all__ = ["place", "finish", "resolve_dtype"]

_pending: list[torch.Tensor] = []  # pinned sources of copies still in flight
_PENDING_CAP = 256 << 20  # pinned bytes in flight before waiting: staging memory stays bounded


def resolve_dtype(dtype: Any) -> torch.dtype | None:
    """None for None/``"auto"``; a floating torch dtype from a torch dtype or a name in the dtype table."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str):
        row = DTYPES.get(dtype.removeprefix("torch."))
        if row is None or row.torch_name is None:
            raise UnsupportedObjectError(f"dtype {dtype!r} is not a dtype name; use e.g. 'bfloat16', 'float16', "
                                         "'float32' or a torch.dtype")
        dtype = torch_dtype(row)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UnsupportedObjectError(f"dtype= must be a floating dtype (or 'auto'); got {dtype!r}")
    return dtype


def place(t: torch.Tensor, *, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """``t`` cast (when floating) and moved; integer and bool tensors keep their dtype."""
    target = resolve_dtype(dtype)
    if target is not None and not t.is_floating_point():
        target = None
    if device is None:
        return t if target is None else t.to(target)
    dev = torch.device(device)
    if dev.type == "cuda" and t.device.type == "cpu" and torch.cuda.is_available():
        return _to_cuda(t, dev, target)
    return t.to(device=dev, dtype=target)


def _to_cuda(t: torch.Tensor, dev: torch.device, target: torch.dtype | None) -> torch.Tensor:
    """Read into pinned memory (casting on the way), then a non-blocking copy that overlaps the next read."""
    pinned = torch.empty(t.shape, dtype=target or t.dtype, pin_memory=True)
    pinned.copy_(t)
    out = pinned.to(dev, non_blocking=True)
    _pending.append(pinned)
    if sum(p.nbytes for p in _pending) > _PENDING_CAP:
        finish()
    return out


def finish() -> None:
    """Wait for staged copies, then drop their pinned buffers."""
    if _pending:
        torch.cuda.synchronize()
        _pending.clear()
