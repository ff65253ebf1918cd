"""Traced functions and tensor methods -> vocabulary op nodes.

torch.fx records a call as its target (``torch.nn.functional.relu``,
``operator.add``, the method name ``"view"``) with positional and keyword
arguments as written in the model's source. Each recognised target has an
:class:`OpRule`: the vocabulary op it is, and the torch parameter list needed to
bind what was written to names. Binding splits the call into tensor inputs (the
node's ``in``) and literal arguments (its ``args``); a value computed by another
node inside an argument becomes ``{ref: node}`` (the vocabulary says where that
is allowed). Several spellings map to one op (``F.relu``, ``torch.relu``,
``x.relu()``; ``x.view`` and ``x.reshape``), so the spec says what is computed,
not how it was typed.

Arguments that change nothing about the values (``inplace``, ``_stacklevel``)
are dropped: the spec executes functionally, and the export's reproduction check
would catch a model that relied on in-place aliasing. Any other torch argument
the vocabulary omits must hold its default, or the export is refused.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from ..errors import ExportError
from ..vocab import OPS, suggest
from . import ops as _ops

__all__ = ["OpRule", "FUNCTION_RULES", "QUALIFIED_RULES", "ATTRIBUTE_RULES", "qualified_name", "METHOD_RULES", "ELIDED_METHODS", "SHAPE_METHODS", "rule_for",
           "bind", "Bound", "public_name", "unknown_op_message"]

_VALUE_NEUTRAL = ("inplace", "_stacklevel")


@dataclasses.dataclass(frozen=True)
class OpRule:
    """How one traced target becomes one vocabulary op.

    ``params`` are the torch parameter names in call order (the tensor ``self``
    of a method included). The first ``tensors`` of them are tensor inputs; with
    ``tensors=-1`` the first parameter is a sequence of tensors (``torch.cat``).
    ``varargs`` says the last parameter collects the remaining positionals
    (``x.view(2, -1)``). ``rename`` maps torch names to vocabulary names,
    ``torch_defaults`` gives the defaults of torch arguments the vocabulary omits,
    and ``preset`` fixes vocabulary arguments the spelling implies (``//`` is
    ``div`` with ``rounding_mode: floor``).
    """

    op: str
    params: tuple[str, ...]
    tensors: int = 1
    varargs: bool = False
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    torch_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # names of the parameters that are tensor inputs, when they are not the first `tensors`
    # (F.layer_norm(input, normalized_shape, weight, bias)); trailing None ones are left out
    inputs: tuple[str, ...] | None = None
    # with tensors=-1: the index of the parameter holding the tensor sequence (einsum's is 1)
    seq: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"rule for unknown op {self.op!r}")


def _unary(op: str, *extra: str, **torch_defaults: Any) -> OpRule:
    return OpRule(op, ("input", *extra), torch_defaults=torch_defaults)


def _binary(op: str, *extra: str, **kw: Any) -> OpRule:
    return OpRule(op, ("input", "other", *extra), tensors=2, **kw)


_SOFTMAX = OpRule("softmax", ("input", "dim", "_stacklevel", "dtype"), torch_defaults={"dtype": None})
_LOG_SOFTMAX = dataclasses.replace(_SOFTMAX, op="log_softmax")
_ADD = _binary("add", "alpha", torch_defaults={"alpha": 1})
_SUB = _binary("sub", "alpha", torch_defaults={"alpha": 1})
_MUL = _binary("mul")
_DIV = _binary("div", "rounding_mode")
_MATMUL = _binary("matmul")
_REDUCE = ("input", "dim", "keepdim", "dtype")

# call_function targets. Keys are the callables themselves (never names).
FUNCTION_RULES: Mapping[Callable[..., Any], OpRule] = MappingProxyType({
    F.relu: _unary("relu", "inplace"),
    torch.relu: _unary("relu"),
    F.relu6: _unary("relu6", "inplace"),
    F.leaky_relu: _unary("leaky_relu", "negative_slope", "inplace"),
    F.elu: _unary("elu", "alpha", "inplace"),
    F.gelu: _unary("gelu", "approximate"),
    F.silu: _unary("silu", "inplace"),
    F.mish: _unary("mish", "inplace"),
    F.hardswish: _unary("hardswish", "inplace"),
    F.hardsigmoid: _unary("hardsigmoid", "inplace"),
    torch.sigmoid: _unary("sigmoid"),
    F.sigmoid: _unary("sigmoid"),
    torch.tanh: _unary("tanh"),
    F.tanh: _unary("tanh"),
    F.softmax: _SOFTMAX,
    torch.softmax: OpRule("softmax", ("input", "dim", "dtype"), torch_defaults={"dtype": None}),
    F.log_softmax: _LOG_SOFTMAX,
    torch.log_softmax: OpRule("log_softmax", ("input", "dim", "dtype"), torch_defaults={"dtype": None}),
    operator.add: _ADD,
    torch.add: _ADD,
    operator.sub: _SUB,
    torch.sub: _SUB,
    operator.mul: _MUL,
    torch.mul: _MUL,
    operator.truediv: _DIV,
    torch.div: _DIV,
    operator.floordiv: _binary("div", preset={"rounding_mode": "floor"}),
    operator.matmul: _MATMUL,
    torch.matmul: _MATMUL,
    torch.cat: OpRule("cat", ("tensors", "dim"), tensors=-1),
    torch.concat: OpRule("cat", ("tensors", "dim"), tensors=-1),
    torch.stack: OpRule("stack", ("tensors", "dim"), tensors=-1),
    torch.chunk: OpRule("chunk", ("input", "chunks", "dim")),
    torch.flatten: OpRule("flatten", ("input", "start_dim", "end_dim")),
    torch.reshape: OpRule("reshape", ("input", "shape")),
    torch.permute: OpRule("permute", ("input", "dims")),
    torch.transpose: OpRule("transpose", ("input", "dim0", "dim1")),
    torch.mean: OpRule("mean", _REDUCE, torch_defaults={"dtype": None}),
    torch.sum: OpRule("sum", _REDUCE, torch_defaults={"dtype": None}),
    # real-model coverage (issue 5)
    operator.neg: _unary("neg"),
    operator.pow: OpRule("pow", ("input", "exponent"), tensors=2),
    torch.pow: OpRule("pow", ("input", "exponent"), tensors=2),
    torch.einsum: OpRule("einsum", ("equation", "operands"), tensors=-1, varargs=True, seq=1),
    torch.unsqueeze: OpRule("unsqueeze", ("input", "dim")),
    torch.squeeze: OpRule("squeeze", ("input", "dim")),
    torch.unbind: OpRule("unbind", ("input", "dim")),
    torch.roll: OpRule("roll", ("input", "shifts", "dims")),
    torch.exp: _unary("exp"),
    torch.abs: _unary("abs"),
    torch.sqrt: _unary("sqrt"),
    torch.rsqrt: _unary("rsqrt"),
    torch.swapaxes: OpRule("transpose", ("input", "axis0", "axis1"), rename={"axis0": "dim0", "axis1": "dim1"}),
    F.linear: OpRule("linear", ("input", "weight", "bias"), tensors=3),
    F.adaptive_avg_pool2d: OpRule("adaptive_avg_pool2d", ("input", "output_size")),
    F.adaptive_max_pool2d: OpRule("adaptive_max_pool2d", ("input", "output_size", "return_indices"),
                                  torch_defaults={"return_indices": False}),
    F.max_pool2d: OpRule("max_pool2d", ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                        "return_indices"), torch_defaults={"return_indices": False}),
    F.avg_pool2d: OpRule("avg_pool2d", ("input", "kernel_size", "stride", "padding", "ceil_mode",
                                        "count_include_pad", "divisor_override")),
    F.interpolate: OpRule("interpolate", ("input", "size", "scale_factor", "mode", "align_corners",
                                          "recompute_scale_factor", "antialias")),
    F.pad: OpRule("pad", ("input", "pad", "mode", "value")),
    F.layer_norm: OpRule("layer_norm", ("input", "normalized_shape", "weight", "bias", "eps"),
                         inputs=("input", "weight", "bias")),
    F.dropout: OpRule("dropout", ("input", "p", "training", "inplace")),
    # a norm layer that calls the functional itself (timm's BatchNormAct2d): the ATen row F.batch_norm calls,
    # weights and statistics as {ref:} arguments, training as traced (the module's mode at export)
    F.batch_norm: OpRule("aten.batch_norm", ("input", "running_mean", "running_var", "weight", "bias", "training",
                                             "momentum", "eps"), preset={"cudnn_enabled": True}),
})

# Library functions hidden from tracing with torch.fx.wrap, by qualified name (module.qualname):
# the exporter never imports the library, and the loader runs modelpack's own implementation
# (modelpack/torch/ops.py).
# modelpack's own implementations, as a rebuilt model calls them (export -> load -> export)
OWN_RULES: Mapping[Callable[..., Any], OpRule] = MappingProxyType({
    _ops.dropout: OpRule("dropout", ("input", "p", "training")),
    _ops.stochastic_depth: OpRule("stochastic_depth", ("input", "p", "mode", "training")),
    _ops.shifted_window_attention: OpRule(
        "shifted_window_attention",
        ("input", "qkv_weight", "proj_weight", "bias", "qkv_bias", "proj_bias", "logit_scale", "window_size",
         "num_heads", "shift_size", "attention_dropout", "dropout", "training"),
        inputs=("input", "qkv_weight", "proj_weight", "bias", "qkv_bias", "proj_bias", "logit_scale")),
    _ops.relative_position_bias: OpRule("relative_position_bias", ("table", "index", "window_size"), tensors=2),
    _ops.patch_merging_pad: _unary("patch_merging_pad"),
})

_SWIN = "torchvision.models.swin_transformer."
QUALIFIED_RULES: Mapping[str, OpRule] = MappingProxyType({
    "torchvision.ops.stochastic_depth.stochastic_depth":
        OpRule("stochastic_depth", ("input", "p", "mode", "training")),
    _SWIN + "shifted_window_attention": OpRule(
        "shifted_window_attention",
        ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads",
         "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias", "logit_scale", "training"),
        inputs=("input", "qkv_weight", "proj_weight", "relative_position_bias", "qkv_bias", "proj_bias",
                "logit_scale")),
    _SWIN + "_get_relative_position_bias": OpRule(
        "relative_position_bias", ("relative_position_bias_table", "relative_position_index", "window_size"),
        tensors=2),
    _SWIN + "_patch_merging_pad": _unary("patch_merging_pad"),
})

# call_method names: the tensor is the first parameter ("self").
METHOD_RULES: Mapping[str, OpRule] = MappingProxyType({
    "relu": _unary("relu"),
    "sigmoid": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "softmax": OpRule("softmax", ("input", "dim", "dtype"), torch_defaults={"dtype": None}),
    "log_softmax": OpRule("log_softmax", ("input", "dim", "dtype"), torch_defaults={"dtype": None}),
    "add": _ADD,
    "sub": _SUB,
    "mul": _MUL,
    "div": _DIV,
    "matmul": _MATMUL,
    "chunk": OpRule("chunk", ("input", "chunks", "dim")),
    "flatten": OpRule("flatten", ("input", "start_dim", "end_dim")),
    "view": OpRule("reshape", ("input", "shape"), varargs=True),
    "reshape": OpRule("reshape", ("input", "shape"), varargs=True),
    "permute": OpRule("permute", ("input", "dims"), varargs=True),
    "transpose": OpRule("transpose", ("input", "dim0", "dim1")),
    "mean": OpRule("mean", _REDUCE, torch_defaults={"dtype": None}),
    "sum": OpRule("sum", _REDUCE, torch_defaults={"dtype": None}),
    "size": OpRule("size", ("input", "dim")),
    "dim": _unary("dim"),
    "expand": OpRule("expand", ("input", "size"), varargs=True),
    "unsqueeze": OpRule("unsqueeze", ("input", "dim")),
    "squeeze": OpRule("squeeze", ("input", "dim")),
    "unbind": OpRule("unbind", ("input", "dim")),
    "roll": OpRule("roll", ("input", "shifts", "dims")),
    "exp": _unary("exp"),
    "abs": _unary("abs"),
    "sqrt": _unary("sqrt"),
    "rsqrt": _unary("rsqrt"),
    "pow": OpRule("pow", ("input", "exponent"), tensors=2),
    "neg": _unary("neg"),
    "swapaxes": OpRule("transpose", ("input", "axis0", "axis1"), rename={"axis0": "dim0", "axis1": "dim1"}),
})

# Methods that change memory layout only: the node is replaced by its input.
ELIDED_METHODS = frozenset({"contiguous"})

# getattr(x, "shape") / getattr(x, "ndim"): the same values as x.size() / x.dim().
ATTRIBUTE_RULES: Mapping[str, OpRule] = MappingProxyType({
    "shape": OpRule("size", ("input", "_attr")),
    "ndim": OpRule("dim", ("input", "_attr")),
})

# Shape arithmetic (x.size(0), x.shape): values that are not tensors. Vocabulary version 1
# has no op producing them, so they are refused with advice (the coverage issue adds them).
SHAPE_METHODS = frozenset({"size", "dim", "numel"})


def public_name(target: Any) -> str:
    """``torch.fft.fft`` rather than ``torch._C._fft.fft_fft``: the name a reader would search for."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    for prefix, namespace in _NAMESPACES:
        for attr, value in vars(namespace).items():
            if value is target and not attr.startswith("_"):
                return f"{prefix}.{attr}"
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', getattr(target, '__name__', repr(target)))}"


_NAMESPACES = (("F", F), ("torch", torch), ("torch.fft", torch.fft), ("torch.linalg", torch.linalg),
               ("torch.special", torch.special), ("operator", operator))


def rule_for(node: fx.Node) -> OpRule | None:
    """The rule for a call_function / call_method node (None: not in the vocabulary)."""
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)  # type: ignore[arg-type]
    if node.target is getattr and len(node.args) == 2 and isinstance(node.args[1], str):
        return ATTRIBUTE_RULES.get(node.args[1])
    try:
        rule = FUNCTION_RULES.get(node.target) or OWN_RULES.get(node.target)  # type: ignore[arg-type]
    except TypeError:  # an unhashable callable is not in the table
        rule = None
    return rule if rule is not None else QUALIFIED_RULES.get(qualified_name(node.target))


def qualified_name(target: Any) -> str:
    """``module.qualname`` of a callable (how fx-wrapped library functions are recognised)."""
    return f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__qualname__', '') or ''}"


def unknown_op_message(node: fx.Node) -> str:
    """What was called, the nearest vocabulary ops, and what to do."""
    name = public_name(node.target)
    short = name.rsplit(".", 1)[-1]
    near = suggest(short, "op")
    hint = f"nearest: {', '.join(near)}" if near else f"ops: {', '.join(OPS)}"
    return f"{name} is not in the modelpack vocabulary (version 1); {hint}"


# ----------------------------------------------------------------------------- binding


@dataclasses.dataclass
class Bound:
    """A call split into tensor inputs (fx nodes) and the op's literal arguments."""

    inputs: list[fx.Node]
    args: dict[str, Any]


def bind(rule: OpRule, node: fx.Node) -> Bound:
    """Bind ``node``'s call to ``rule``; ExportError for arguments the spec cannot hold."""
    values = _by_name(rule, node)
    if node.target is getattr:
        values.pop("_attr", None)
    inputs = _tensor_inputs(rule, values, node)
    args: dict[str, Any] = dict(rule.preset)
    entry = OPS[rule.op]
    for name, value in values.items():
        if name in _VALUE_NEUTRAL or (name == "training" and entry.training):
            continue  # training: the rebuilt module's mode, never the traced literal
        if name in rule.torch_defaults:
            _check_default(rule, name, value, node)
            continue
        vocab_name = rule.rename.get(name, name)
        if entry.arg(vocab_name) is None:
            raise ExportError(f"{public_name(node.target)}: argument {name}={value!r} cannot be expressed by "
                              f"op {rule.op!r} (arguments: {', '.join(a.name for a in entry.args) or 'none'})")
        args[vocab_name] = value
    return Bound(inputs, args)


def _by_name(rule: OpRule, node: fx.Node) -> dict[str, Any]:
    """Positional and keyword arguments, by torch parameter name."""
    positional = list(node.args)
    if rule.varargs:
        n = len(rule.params) - 1
        rest = positional[n:]
        # x.view(2, -1) and x.view((2, -1)) mean the same
        packed = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)) else tuple(rest)
        positional = positional[:n] + ([packed] if rest else [])
    if len(positional) > len(rule.params):
        raise ExportError(f"{public_name(node.target)} called with {len(positional)} positional arguments; "
                          f"expected at most {len(rule.params)} ({', '.join(rule.params)})")
    values = dict(zip(rule.params, positional))
    for key, value in node.kwargs.items():
        if key in values:
            raise ExportError(f"{public_name(node.target)}: argument {key!r} given twice")
        if key not in rule.params:
            raise ExportError(f"{public_name(node.target)}: unexpected argument {key}={value!r}")
        values[key] = value
    return values


def _tensor_inputs(rule: OpRule, values: dict[str, Any], node: fx.Node) -> list[Any]:
    """The operands; a number among them stays a literal (the converter gives it a scalar node)."""
    if rule.tensors == -1:
        first = values.pop(rule.params[rule.seq], ())
        items = list(first) if isinstance(first, (tuple, list)) else [first]
    elif rule.inputs is not None:
        items = [values.pop(p, None) for p in rule.inputs]
        while items and items[-1] is None:
            items.pop()
    else:
        items = [values.pop(p) for p in rule.params[: rule.tensors] if p in values]
    for item in items:
        if not isinstance(item, fx.Node) and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise ExportError(f"{public_name(node.target)} with {item!r} as an operand: an operand of an op "
                              "is a value computed by the model or a number; compute it with a layer, or "
                              "pass it as a tensor input")
    return items


def _check_default(rule: OpRule, name: str, value: Any, node: fx.Node) -> None:
    default = rule.torch_defaults[name]
    if value is default or value == default:
        return
    raise ExportError(f"{public_name(node.target)} with {name}={value!r}: the spec cannot express {name} "
                      f"(op {rule.op!r} in vocabulary version 1 always uses {default!r})")
