"""Calling the generated ATen rows: argument literals to torch values, device, size checks.

A row of ``vocab/aten.py`` is one ATen overload. Its spec arguments are
literals; this module turns the two that need it into torch values (dtype
names, memory formats), decides where created tensors live (never stored in a
file: they follow the model's inputs and parameters), and wraps the ops that
allocate from sizes written in the spec so that the output's element count is
checked against :mod:`modelpack.limits` *before* anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import limits
from ..codec import dtype_by_name
from ..errors import SpecError
from ..vocab.types import _Entry
from .tensors import torch_dtype

__all__ = ["aten_kwargs", "device_mode", "guarded", "allocates"]

_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format,
                   "channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d}
# ops whose output size comes from arguments (not only from the input's own size): checked first
_SIZED = ("expand", "repeat", "index_select", "new_", "tile", "repeat_interleave", "upsample_", "constant_pad_nd",
          "pad", "broadcast_to", "linspace", "im2col", "col2im", "reflection_pad", "replication_pad")
# the version-1 rows sized by their arguments (a resize's size or scale_factor, pad widths, a pooled size);
# expand is a view there, and its consumers are ops of their own
_SIZED_V1 = frozenset({"interpolate", "pad", "adaptive_avg_pool2d", "adaptive_max_pool2d"})


def aten_kwargs(entry: _Entry, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The row's keyword arguments with dtype names and memory formats as torch values."""
    out = dict(kwargs)
    for arg in entry.args:
        value = out.get(arg.name)
        if isinstance(value, str) and arg.type == "dtype":
            out[arg.name] = torch_dtype(dtype_by_name(value))
        elif isinstance(value, str) and arg.name == "memory_format":
            out[arg.name] = _MEMORY_FORMATS[value]
    return out


def device_mode(entry: _Entry) -> str:
    """"factory": creates tensors from nothing (goes where the model lives); "input": torch requires a
    device and it is the first input's; "": torch's own rule (the inputs' device) applies."""
    if "device" not in entry.omitted:
        return ""
    if entry.inputs == (0, 0):
        return "factory"
    return "input" if "Device device," in entry.doc else ""


def allocates(entry: _Entry) -> bool:
    """Whether the op's output size depends on numbers in the spec (so it is checked before running)."""
    if entry.impl != "aten":
        return entry.name in _SIZED_V1
    base = entry.name.removeprefix("aten.").lstrip("_")  # _upsample_bicubic2d_aa sizes as upsample_ does
    return entry.inputs == (0, 0) or any(base.startswith(p) for p in _SIZED)


def guarded(name: str, fn: Callable[..., Any], factory: bool) -> Callable[..., Any]:
    """``fn``, first run on the meta device (no memory) to size its output against the limits."""

    def run(*args: Any, **kwargs: Any) -> Any:
        _check_size(name, fn, args, kwargs, factory)
        return fn(*args, **kwargs)

    run.__name__ = getattr(fn, "__name__", name)
    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def _check_size(name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                factory: bool) -> None:
    total = _closed_form(name, getattr(fn, "__name__", ""), kwargs)
    if total is None:
        total = _meta_size(fn, args, kwargs, factory)
    if total is None:
        _refuse_nonfinite(name, kwargs)
    if total is not None:
        limits.check("max_op_elements", total, where=name, what=f"elements {name} would create")


def _refuse_nonfinite(name: str, kwargs: Mapping[str, Any]) -> None:
    """The output could not be sized: if a non-finite float is why (``scale_factors: [.inf]``), say so."""
    for key, value in kwargs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in items if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise SpecError(f"argument {key!r} holds {bad[0]}: the size of this op's output cannot be computed "
                            "from it; a number that sizes an output must be finite", where=name)


# factories sized by a ``size`` argument alone (``new_*`` take their input's dtype and device, not its size)
_SIZE_FACTORIES = frozenset({"full", "zeros", "ones", "empty", "new_full", "new_zeros", "new_ones", "new_empty"})


def _closed_form(name: str, overload: str, kwargs: Mapping[str, Any]) -> int | None:
    """The element count of a factory from its arguments, without running it (None: not one of these).

    torch's meta kernels of these ops are Python references whose checks import
    sympy on first use: most of a second of a process's first forward pass.
    """
    op = overload.split(".")[0]
    if op == "arange":
        bounds = {"start": kwargs.get("start", 0), "end": kwargs.get("end"), "step": kwargs.get("step", 1)}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds.values()):
            return None  # the meta run (or the real call) reports what is wrong
        for key, value in bounds.items():
            if not math.isfinite(value):  # the spec may write .inf where torch takes a Scalar
                raise SpecError(f"argument {key!r} is {value}: arange's bounds must be finite (they size its output)",
                                where=name)
        start, end, step = bounds.values()
        if not step:
            return None
        count = (end - start) / step
        if not math.isfinite(count):  # finite bounds far apart (-1e308 to 1e308)
            raise SpecError(f"arange from {start} to {end} by {step} has no finite number of elements", where=name)
        return max(0, math.ceil(count))
    size = kwargs.get("size")
    if op in _SIZE_FACTORIES and isinstance(size, (tuple, list)) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in size):
        return math.prod(size)
    return None


def _meta_size(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], factory: bool) -> int | None:
    if torch.compiler.is_compiling():  # torch.export re-capturing a rebuilt model: sizes are symbolic there
        return None
    meta_kwargs = {k: _meta(v) for k, v in kwargs.items()}
    if factory:
        meta_kwargs["device"] = torch.device("meta")
    try:
        with torch.no_grad():
            out = fn(*[_meta(a) for a in args], **meta_kwargs)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None  # sizes that depend on data (masks): bounded by the inputs; the real call reports errors
    return sum(t.numel() for t in _tensors(out))


def _meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_meta(v) for v in value)
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
