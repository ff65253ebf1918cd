"""Copies of a state tree that the training loop can no longer mutate (for async saves).

``state_dict()`` hands out live tensors and, for optimizers, the live per-param
dicts; a background write of those would race with the next ``step()``. A
:class:`Snapshotter` rebuilds the containers and copies every tensor to host
memory. It keeps the copies between saves and refills them in place when the
shapes match: refilling warm pages is several times faster than allocating
fresh ones, and that copy is all the training loop waits for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..tree import tensor_key

__all__ = ["Snapshotter", "iter_tensors", "tensor_nbytes"]

Path_ = tuple[Any, ...]


def _torch() -> Any:
    return sys.modules.get("torch")


def _is_torch_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


class Snapshotter:
    """Deep-copies state trees, reusing the buffers of the previous snapshot.

    Not thread-safe, and a snapshot's buffers are refilled by the next call:
    the caller must be done with (have written) one snapshot before taking the
    next, which the one-save-in-flight rule guarantees.
    """

    def __init__(self) -> None:
        self._buffers: dict[Path_, Any] = {}
        self._next: dict[Path_, Any] = {}
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._device_copy = False

    def take(self, obj: Any) -> Any:
        """A copy of ``obj``: new containers, tensors copied to host memory, scalars shared."""
        self._next, self._memo, self._device_copy = {}, {}, False
        try:
            out = self._copy(obj, ())
            if self._device_copy:
                _torch().cuda.synchronize()
        finally:
            self._memo = {}
        self._buffers = self._next
        return out

    def release(self) -> None:
        """Drop the kept buffers (they hold one host copy of the last state)."""
        self._buffers = {}

    def _copy(self, obj: Any, path: Path_) -> Any:
        if isinstance(obj, np.ma.MaskedArray):
            return obj  # a plain copy would drop the mask; modelpack.save refuses it with what to do
        if _is_torch_tensor(obj) and obj.layout != _torch().strided:
            return obj.detach().to("cpu", copy=True)  # sparse: a private copy of its parts
        if isinstance(obj, np.ndarray) or _is_torch_tensor(obj):
            return self._tensor(obj, path)
        if isinstance(obj, dict):
            return {k: self._copy(v, path + (k,)) for k, v in obj.items()}
        if type(obj) is list:
            return [self._copy(v, path + (i,)) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return tuple(self._copy(v, path + (i,)) for i, v in enumerate(obj))
        return obj  # immutable scalars; anything else is left for modelpack.save to judge

    def _tensor(self, src: Any, path: Path_) -> Any:
        key = tensor_key(src)
        if key in self._memo:
            return self._memo[key]
        buf = self._buffers.get(path)  # only a tensor's first path owns a buffer, so none is shared
        if not _fits(buf, src):
            buf = self._alloc(src)
        if isinstance(src, np.ndarray):
            np.copyto(buf, src, casting="no")
        else:
            non_blocking = src.device.type == "cuda"
            self._device_copy |= non_blocking
            buf.copy_(src.detach(), non_blocking=non_blocking)
        self._memo[key] = self._next[path] = buf
        return buf

    @staticmethod
    def _alloc(src: Any) -> Any:
        if isinstance(src, np.ndarray):
            return np.empty(src.shape, dtype=src.dtype)
        torch = _torch()
        pinned = src.device.type == "cuda"
        return torch.empty(tuple(src.shape), dtype=src.dtype, pin_memory=pinned)


def _fits(buf: Any, src: Any) -> bool:
    if isinstance(src, np.ndarray):
        return isinstance(buf, np.ndarray) and buf.shape == src.shape and buf.dtype == src.dtype
    return _is_torch_tensor(buf) and buf.shape == src.shape and buf.dtype == src.dtype and buf.device.type == "cpu"


def iter_tensors(obj: Any) -> Iterator[Any]:
    """Every tensor/array in a tree, each distinct one once."""
    seen: set[tuple[Any, ...]] = set()
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, np.ndarray) or _is_torch_tensor(node):
            key = tensor_key(node)
            if key not in seen:
                seen.add(key)
                yield node
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def tensor_nbytes(obj: Any) -> int:
    """Bytes of tensor data in a tree (what the file will mostly consist of)."""
    total = 0
    for t in iter_tensors(obj):
        total += t.nbytes if isinstance(t, np.ndarray) else t.numel() * t.element_size()
    return total
