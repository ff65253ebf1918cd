"""modelpack's own implementations of the ops torch does not define as one function.

Library helpers hidden from tracing with ``torch.fx.wrap`` (torchvision's
``stochastic_depth``, Swin's window attention and its helpers) are recognised by
the exporter by qualified name and mapped to the functions here; the loader
never imports the library. The rest are small adapters that let one vocabulary
op work on tensors and on the ints/tuples of shape arithmetic alike, the
state-holding rows (``Parameter``, ``Buffer``) and the slice literal.

Ops whose vocabulary row has ``training=True`` take ``training`` from the
interpreter (the rebuilt module's mode), never from the file.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..codec import dtype_by_name
from ..errors import BuildError
from . import _arith
from .tensors import torch_dtype

__all__ = [
    "make_parameter", "make_buffer", "add", "sub", "mul", "div", "size", "dim", "scalar", "index",
    "decode_index", "stochastic_depth", "dropout", "shifted_window_attention", "relative_position_bias",
    "patch_merging_pad", "expand", "squeeze", "max_pool2d", "adaptive_max_pool2d", "layer_norm", "einsum", "pow", "neg",
]


# ----------------------------------------------------------------------------- state-holding rows


def make_parameter(shape: tuple[int, ...], requires_grad: bool = True, dtype: str = "float32") -> nn.Parameter:
    """A zero parameter of ``shape``: its values come from the file, or from training when a spec is
    built to train from scratch (zeros, never leftover memory that may hold NaNs)."""
    return nn.Parameter(torch.zeros(tuple(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def make_buffer(shape: tuple[int, ...], dtype: str = "float32", persistent: bool = True) -> torch.Tensor:
    """A zero buffer of ``shape`` (the builder registers a ``persistent=False`` one out of state_dict)."""
    return torch.zeros(tuple(shape), dtype=_dtype(dtype))


def _dtype(name: str) -> torch.dtype:
    return torch_dtype(dtype_by_name(name))


# ----------------------------------------------------------------------------- arithmetic on tensors and ints


def add(input: Any, other: Any) -> Any:
    """``input + other``: tensors (torch.add's kernel) or the values of shape arithmetic (bounded)."""
    if _arith.is_plain(input) and _arith.is_plain(other):
        return _arith.binary("add", operator.add, input, other)
    return operator.add(input, other)


def sub(input: Any, other: Any) -> Any:
    if _arith.is_plain(input) and _arith.is_plain(other):
        return _arith.binary("sub", operator.sub, input, other)
    return operator.sub(input, other)


def mul(input: Any, other: Any) -> Any:
    if _arith.is_plain(input) and _arith.is_plain(other):
        return _arith.binary("mul", operator.mul, input, other)
    return operator.mul(input, other)


def div(input: Any, other: Any, rounding_mode: str | None = None) -> Any:
    """torch.div for tensors; Python ``/`` and ``//`` where the dividend is a number (shape arithmetic),
    a symbolic size included (torch.export re-capturing a rebuilt model keeps it a size, not a tensor)."""
    if isinstance(input, (int, float, torch.SymInt, torch.SymFloat)):
        if _arith.is_plain(input) and _arith.is_plain(other):
            return _arith.binary("div", _PLAIN_DIV[rounding_mode], input, other)
        if rounding_mode == "floor":
            return operator.floordiv(input, other)
        if rounding_mode == "trunc":
            return torch.div(torch.as_tensor(input), other, rounding_mode="trunc") \
                if isinstance(other, torch.Tensor) else int(input / other)
        return operator.truediv(input, other)
    return torch.div(input, other, rounding_mode=rounding_mode)


_PLAIN_DIV = {None: operator.truediv, "floor": operator.floordiv, "trunc": lambda a, b: int(a / b)}


def pow(input: Any, exponent: Any) -> Any:  # noqa: A001 - the vocabulary name
    if _arith.is_plain(input) and _arith.is_plain(exponent):
        return _arith.binary("pow", operator.pow, input, exponent)
    return operator.pow(input, exponent)


def neg(input: Any) -> Any:
    return _arith.negate(input) if _arith.is_plain(input) else operator.neg(input)


# ----------------------------------------------------------------------------- shape values


def size(input: torch.Tensor, dim: int | None = None) -> Any:
    """``x.size()`` (a torch.Size, symbolic under tracing) or ``x.size(dim)``."""
    return input.size() if dim is None else input.size(dim)


def dim(input: torch.Tensor) -> int:
    return input.dim()


def scalar(value: Any) -> Any:
    """A literal operand (``x * 0.5``): the value itself."""
    return list(value) if isinstance(value, tuple) else value


def squeeze(input: torch.Tensor, dim: Any = None) -> torch.Tensor:
    return input.squeeze() if dim is None else input.squeeze(dim)


def expand(input: torch.Tensor, size: Any) -> torch.Tensor:
    return input.expand(*size)


# ----------------------------------------------------------------------------- indexing

_ELLIPSIS = "..."


def decode_index(item: Any) -> Any:
    """One spec index item -> a Python index: ``":"``/``"1:"``/``"::2"`` slices, ``"..."``, null (new axis)."""
    if isinstance(item, (list, tuple)):
        return tuple(decode_index(i) for i in item)
    if isinstance(item, str):
        if item == _ELLIPSIS:
            return Ellipsis
        parts = item.split(":")
        if not 2 <= len(parts) <= 3:
            raise BuildError(f"index item {item!r} is not a slice like '1:3', ':', '::2' or '...'")
        try:
            bounds = [int(p) if p.strip() else None for p in parts]
        except ValueError as e:
            raise BuildError(f"index item {item!r}: slice bounds must be integers") from e
        return slice(*bounds)
    return item  # int, None (a new axis), or a resolved ref (a tensor or an int)


def index(input: Any, index: Any) -> Any:
    """``input[index]`` with the spec's index literal (a tuple is a list; slices are strings)."""
    return input[decode_index(index)]


# ----------------------------------------------------------------------------- training-mode ops


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = False) -> torch.Tensor:
    return F.dropout(input, p=p, training=training)


def stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = False) -> torch.Tensor:
    """Drop whole samples ("row") or the whole batch with probability ``p`` while training."""
    if not training or p == 0.0:
        return input
    survival = 1.0 - p
    shape = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    keep = torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(survival)
    if survival > 0.0:
        keep.div_(survival)
    return input * keep


# ----------------------------------------------------------------------------- Swin helpers


def relative_position_bias(table: torch.Tensor, index: torch.Tensor, window_size: Any) -> torch.Tensor:
    """Gather the (heads, N, N) bias of an N = wh*ww window from a relative-position table; (1, heads, N, N)."""
    n = window_size[0] * window_size[1]
    bias = table[index].view(n, n, -1)
    return bias.permute(2, 0, 1).contiguous().unsqueeze(0)


def patch_merging_pad(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W, C) -> (..., ceil(H/2), ceil(W/2), 4C): pad to even size, stack the 2x2 neighbours."""
    h, w = x.shape[-3], x.shape[-2]
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    quads = [x[..., r::2, c::2, :] for c, r in ((0, 0), (0, 1), (1, 0), (1, 1))]
    return torch.cat(quads, -1)


def _window_mask(ph: int, pw: int, win: tuple[int, int], shift: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """-100 where two positions of a shifted window come from different image regions, else 0."""
    region = like.new_zeros((ph, pw))
    label = 0
    for hs in ((0, -win[0]), (-win[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -win[1]), (-win[1], -shift[1]), (-shift[1], None)):
            region[hs[0]:hs[1], ws[0]:ws[1]] = label
            label += 1
    region = region.view(ph // win[0], win[0], pw // win[1], win[1]).permute(0, 2, 1, 3)
    region = region.reshape(-1, win[0] * win[1])
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _windows(x: torch.Tensor, win: tuple[int, int]) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // win[0], win[0], w // win[1], win[1], c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, win[0] * win[1], c)


def shifted_window_attention(
    input: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor, bias: torch.Tensor,
    qkv_bias: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None, *, window_size: Any, num_heads: int, shift_size: Any,
    attention_dropout: float = 0.0, dropout: float = 0.0, training: bool = False,
) -> torch.Tensor:
    """(Shifted) window multi-head self-attention over (B, H, W, C), Swin v1 (dot product) or v2 (cosine)."""
    b, h, w, c = input.shape
    win = (int(window_size[0]), int(window_size[1]))
    x = F.pad(input, (0, 0, 0, (win[1] - w % win[1]) % win[1], 0, (win[0] - h % win[0]) % win[0]))
    ph, pw = x.shape[1], x.shape[2]
    shift = (0 if win[0] >= ph else int(shift_size[0]), 0 if win[1] >= pw else int(shift_size[1]))
    shifted = shift[0] + shift[1] > 0
    if shifted:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    n_win = (ph // win[0]) * (pw // win[1])
    x = _windows(x, win)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        third = qkv_bias.numel() // 3
        qkv_bias[third:2 * third].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (c // num_heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + bias
    if shifted:
        mask = _window_mask(ph, pw, win, shift, x)
        attn = attn.view(x.size(0) // n_win, n_win, num_heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, num_heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
    x = F.dropout(F.linear(x, proj_weight, proj_bias), p=dropout, training=training)
    x = x.view(b, ph // win[0], pw // win[1], win[0], win[1], c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if shifted:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


# ----------------------------------------------------------------------------- adapters (tensor inputs first)


def layer_norm(input: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
               normalized_shape: Any, eps: float = 1e-5) -> torch.Tensor:
    """F.layer_norm with weight and bias as inputs (a norm subclass traced through, e.g. LayerNorm2d)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return F.layer_norm(input, shape, weight, bias, eps)


def einsum(operands: tuple[torch.Tensor, ...], equation: str) -> torch.Tensor:
    return torch.einsum(equation, *operands)


def max_pool2d(input: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> torch.Tensor:
    """F.max_pool2d without return_indices (which would change the number of outputs)."""
    return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)


def adaptive_max_pool2d(input: torch.Tensor, output_size: Any) -> torch.Tensor:
    return F.adaptive_max_pool2d(input, output_size)
