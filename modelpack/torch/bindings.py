"""The torch side of the vocabulary: one literal table per kind, name -> torch callable.

A name read from a file is only ever looked up in these two tables, never with
``getattr(torch.nn, name)``: a file cannot reach any torch attribute that is
not written out here. ``tests/test_build_bindings.py`` proves the tables have
exactly the vocabulary's names and that every vocabulary argument is accepted
by the bound callable with the same default.

Calling convention (what :mod:`modelpack.torch.build` does with a node):

* layers: ``LAYER_BINDINGS[name](**args)`` with every vocabulary argument
  filled in (spec value or vocabulary default), then ``module(*inputs)``;
* ops: ``OP_BINDINGS[name](*inputs, **args)``, except that the arguments named
  in :data:`POSITIONAL_ARGS` follow the inputs positionally (``operator.getitem``
  takes no keywords) and variadic ops (vocabulary ``inputs=(n, None)``, e.g.
  ``cat``) receive their inputs as one tuple, as ``torch.cat(tensors, dim)`` expects.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from ..vocab.aten import ATEN_OPS
from . import ops

__all__ = ["LAYER_BINDINGS", "OP_BINDINGS", "POSITIONAL_ARGS", "aten_overload"]


def aten_overload(row: str) -> Any:
    """The ATen overload a generated row names (``aten.add.Tensor`` -> ``torch.ops.aten.add.Tensor``).

    Only ever called with the names of the literal ATen table (vocab/aten.py),
    never with a name read from a file, so the reachable callables are exactly
    the table's rows.
    """
    if row not in ATEN_OPS:
        raise KeyError(f"{row!r} is not a row of the generated ATen table")
    _, op, *overload = row.split(".")
    return getattr(getattr(torch.ops.aten, op), overload[0] if overload else "default")


LAYER_BINDINGS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "Linear": nn.Linear,
    "Bilinear": nn.Bilinear,
    "Identity": nn.Identity,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "ConvTranspose1d": nn.ConvTranspose1d,
    "ConvTranspose2d": nn.ConvTranspose2d,
    "BatchNorm1d": nn.BatchNorm1d,
    "BatchNorm2d": nn.BatchNorm2d,
    "InstanceNorm2d": nn.InstanceNorm2d,
    "LayerNorm": nn.LayerNorm,
    "GroupNorm": nn.GroupNorm,
    "Dropout": nn.Dropout,
    "Dropout2d": nn.Dropout2d,
    "Embedding": nn.Embedding,
    "LSTM": nn.LSTM,
    "GRU": nn.GRU,
    "MultiheadAttention": nn.MultiheadAttention,
    "TransformerEncoderLayer": nn.TransformerEncoderLayer,
    "MaxPool1d": nn.MaxPool1d,
    "MaxPool2d": nn.MaxPool2d,
    "AvgPool1d": nn.AvgPool1d,
    "AvgPool2d": nn.AvgPool2d,
    "AdaptiveAvgPool1d": nn.AdaptiveAvgPool1d,
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
    "AdaptiveMaxPool1d": nn.AdaptiveMaxPool1d,
    "AdaptiveMaxPool2d": nn.AdaptiveMaxPool2d,
    "Flatten": nn.Flatten,
    "Unflatten": nn.Unflatten,
    "Upsample": nn.Upsample,
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "LeakyReLU": nn.LeakyReLU,
    "PReLU": nn.PReLU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "Mish": nn.Mish,
    "Hardswish": nn.Hardswish,
    "Hardsigmoid": nn.Hardsigmoid,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Softmax": nn.Softmax,
    "LogSoftmax": nn.LogSoftmax,
    # state-holding rows: factories of one tensor, registered at the node name itself (build._attach)
    "Parameter": ops.make_parameter,
    "Buffer": ops.make_buffer,
})

OP_BINDINGS: Mapping[str, Callable[..., object]] = MappingProxyType({
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    "add": ops.add,  # also the ints of shape arithmetic
    "sub": ops.sub,  # also the ints of shape arithmetic
    "mul": ops.mul,  # also the ints of shape arithmetic
    "div": ops.div,  # also the ints of shape arithmetic
    "matmul": torch.matmul,
    "cat": torch.cat,
    "stack": torch.stack,
    "chunk": torch.chunk,
    "getitem": operator.getitem,
    "flatten": torch.flatten,
    "reshape": torch.reshape,
    "permute": torch.permute,
    "transpose": torch.transpose,
    "mean": torch.mean,
    "sum": torch.sum,
    "size": ops.size,
    "dim": ops.dim,
    "scalar": ops.scalar,
    "neg": ops.neg,
    "pow": ops.pow,
    "index": ops.index,
    "expand": ops.expand,
    "einsum": ops.einsum,
    "unsqueeze": torch.unsqueeze,
    "squeeze": ops.squeeze,
    "unbind": torch.unbind,
    "roll": torch.roll,
    "exp": torch.exp,
    "abs": torch.abs,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "linear": F.linear,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "adaptive_max_pool2d": ops.adaptive_max_pool2d,
    "max_pool2d": ops.max_pool2d,
    "avg_pool2d": F.avg_pool2d,
    "interpolate": F.interpolate,
    "pad": F.pad,
    "layer_norm": ops.layer_norm,
    "dropout": ops.dropout,
    "stochastic_depth": ops.stochastic_depth,
    "shifted_window_attention": ops.shifted_window_attention,
    "relative_position_bias": ops.relative_position_bias,
    "patch_merging_pad": ops.patch_merging_pad,
    # version 2: the generated ATen rows, each bound to its own overload
    **{row: aten_overload(row) for row in ATEN_OPS},
})

# Arguments passed positionally after the inputs, in this order (the callable takes no keywords).
POSITIONAL_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "getitem": ("index",),
})
