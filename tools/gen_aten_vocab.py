"""Generate modelpack/vocab/aten.py: the ATen op rows of the vocabulary, derived from torch's schemas.

The rule (no hand-picked rows): every functional overload of an op in the Core
ATen opset (ops tagged ``core``), plus every functional overload that
``torch.export``'s default IR emits for a broad set of probe calls, with the
sibling overloads of each op found (Python picks one by argument types; those only
TorchScript's interpreter knows are left out, torch.export never emits them) -- as
exported, and functionalized (``run_decompositions({})``, what the capture
writes for a model with in-place ops) -- nn modules, ``torch.nn.functional`` calls and Tensor
methods. Each row keeps the schema's argument names, order and defaults; the
leading ``Tensor`` arguments become the node's inputs (``in:``), everything else
is a keyword argument. Device/layout/pin_memory/generator are never stored.

Run with the torch the table is pinned to (the header records it)::

    python tools/gen_aten_vocab.py > modelpack/vocab/aten.py
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from typing import Any

import torch
import torch.nn.functional as F
import torchgen.model as tg
from torch import nn

OMITTED = ("layout", "device", "pin_memory", "generator")
MEMORY_FORMATS = ("contiguous_format", "preserve_format", "channels_last", "channels_last_3d")  # enum order
# schema types that a spec cannot carry: an overload using one is left out
_REFUSED_BASE = {"Dimname", "Storage", "Stream", "ConstQuantizerPtr", "DimVector", "QScheme", "GraphModule",
                 "Generator"}


# ----------------------------------------------------------------------------- probes


def _probes() -> list[tuple[Any, tuple[Any, ...]]]:
    """(callable, example args) pairs exported to find the non-core ops the default IR keeps."""
    x4, x3, x2 = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8), torch.randn(2, 8)
    ids = torch.randint(0, 10, (2, 5))
    mods: list[tuple[Any, tuple[Any, ...]]] = [
        (nn.Linear(8, 4), (x2,)), (nn.Bilinear(8, 8, 3), (x2, x2)), (nn.Conv1d(6, 4, 3), (x3,)),
        (nn.Conv2d(4, 4, 3, padding=1), (x4,)), (nn.Conv2d(4, 4, 3, padding="same", groups=2), (x4,)),
        (nn.Conv3d(4, 2, 1), (x4[:, :, None],)), (nn.ConvTranspose1d(6, 2, 2), (x3,)),
        (nn.ConvTranspose2d(4, 2, 2, stride=2), (x4,)), (nn.BatchNorm1d(6), (x3,)), (nn.BatchNorm2d(4), (x4,)),
        (nn.InstanceNorm2d(4), (x4,)), (nn.LayerNorm(8), (x3,)), (nn.GroupNorm(2, 4), (x4,)),
        (nn.Dropout(0.1), (x2,)), (nn.Dropout2d(0.1), (x4,)), (nn.Embedding(10, 4), (ids,)),
        (nn.EmbeddingBag(10, 4), (ids,)), (nn.LSTM(8, 4, batch_first=True), (x3,)),
        (nn.GRU(8, 4, batch_first=True), (x3,)),
        (nn.MultiheadAttention(8, 2, batch_first=True), (x3,) * 3),
        (nn.MaxPool1d(2), (x3,)), (nn.MaxPool2d(2), (x4,)), (nn.AvgPool1d(2), (x3,)), (nn.AvgPool2d(2), (x4,)),
        (nn.AdaptiveAvgPool1d(2), (x3,)), (nn.AdaptiveAvgPool2d(1), (x4,)), (nn.AdaptiveMaxPool2d(2), (x4,)),
        (nn.Upsample(scale_factor=2), (x4,)), (nn.Upsample(scale_factor=2, mode="bilinear"), (x4,)),
        (nn.Upsample(scale_factor=2, mode="bicubic"), (x4,)), (nn.PixelShuffle(2), (x4,)),
        (nn.Unfold(2), (x4,)), (nn.Fold((4, 4), 2), (torch.randn(2, 8, 9),)), (nn.ZeroPad2d(1), (x4,)),
        (nn.ReflectionPad2d(1), (x4,)), (nn.ReplicationPad2d(1), (x4,)), (nn.Flatten(), (x4,)),
        (nn.Unflatten(1, (2, 2)), (x4,)), (nn.Softmax(-1), (x2,)), (nn.LogSoftmax(-1), (x2,)),
    ]
    mods += [(cls(), (x2,)) for cls in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU,
                                        nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus,
                                        nn.Hardtanh, nn.SELU, nn.CELU, nn.GLU, nn.Softsign, nn.Tanhshrink)]
    fns: list[tuple[Any, tuple[Any, ...]]] = [
        (lambda a: F.gelu(a, approximate="tanh"), (x2,)), (lambda a: F.normalize(a, dim=-1), (x2,)),
        (lambda a: F.pad(a, (1, 1), value=0.5), (x2,)), (lambda a: F.interpolate(a, size=(5, 5)), (x4,)),
        (lambda a: F.interpolate(a, scale_factor=2, mode="nearest-exact"), (x4,)),
        (lambda a: F.interpolate(a, size=(5, 5), mode="bilinear", align_corners=True), (x4,)),
        (lambda a: F.interpolate(a, size=(5, 5), mode="bicubic", antialias=True), (x4,)),
        (lambda a: F.interpolate(a, size=(5, 5), mode="bilinear", antialias=True), (x4,)),
        (lambda a: F.interpolate(a, scale_factor=2, mode="linear"), (x3,)),
        (lambda a: F.scaled_dot_product_attention(a, a, a, is_causal=True), (x4,)),
        (lambda a: F.one_hot(a, 10), (ids,)), (lambda a: F.cross_entropy(a, torch.tensor([1, 2])), (x2,)),
        (lambda a: F.mse_loss(a, a * 2), (x2,)), (lambda a: F.dropout(a, 0.1, training=True), (x2,)),
        (lambda a: F.rms_norm(a, (8,)), (x2,)), (lambda a: F.embedding(ids, a), (x2,)),
        (lambda a: F.softplus(a), (x2,)), (lambda a: F.grid_sample(a, torch.zeros(2, 3, 3, 2)), (x4,)),
        (lambda a: F.batch_norm(a, torch.zeros(4), torch.ones(4)), (x4,)),
        (lambda a: F.cosine_similarity(a, a), (x2,)), (lambda a: F.logsigmoid(a), (x2,)),
        (lambda a: (F.relu6(a), F.hardtanh(a), F.adaptive_max_pool1d(a, 2), F.max_pool1d(a, 2)), (x3,)),
        (lambda a: (F.adaptive_max_pool2d(a, 2), F.max_pool2d(a, 2, ceil_mode=True), F.avg_pool2d(a, 2)), (x4,)),
    ]
    methods: list[tuple[Any, tuple[Any, ...]]] = [
        (lambda a: a.reshape(4, -1).view(-1).reshape_as(a), (x2,)), (lambda a: a.split(4, dim=-1), (x2,)),
        (lambda a: a.chunk(2, dim=-1), (x2,)), (lambda a: a.unbind(0), (x2,)), (lambda a: a.flatten(1), (x4,)),
        (lambda a: a.permute(1, 0).contiguous(), (x2,)), (lambda a: a.transpose(0, 1).t(), (x2,)),
        (lambda a: a.expand(3, 2, 8).repeat(1, 2, 1), (x2,)), (lambda a: a.float().half().to(torch.float32), (x2,)),
        (lambda a: a.type_as(ids) + a.long(), (x2,)), (lambda a: a.masked_fill(a > 0, -1e9), (x2,)),
        (lambda a: torch.where(a > 0, a, 0.0), (x2,)), (lambda a: a[:, 1:3, None, ..., ::2], (x4,)),
        (lambda a: a[ids[:, 0] % 2], (x2,)), (lambda a: a.index_select(1, ids[0] % 8), (x2,)),
        (lambda a: a.gather(1, ids % 8), (x2,)), (lambda a: (torch.cat([a, a], 1), torch.stack([a, a])), (x2,)),
        (lambda a: a.cumsum(-1).cumprod(-1).diff(dim=-1), (x2,)), (lambda a: a.triu(1).tril(), (x2,)),
        (lambda a: torch.arange(a.shape[0]) + torch.zeros(2) + torch.ones(2) + torch.full((2,), 2.0), (x2,)),
        (lambda a: a.new_zeros(2) + a.new_ones(2) + a.new_full((2,), 1.0) + torch.zeros_like(a[0, :2]), (x2,)),
        (lambda a: (a.amax(-1), a.amin(-1), a.max(-1).values, a.min(), a.argmax(-1), a.topk(2).values), (x2,)),
        (lambda a: (a.sum(), a.mean((0, 1)), a.var(-1), a.std(-1), a.norm(dim=-1), a.prod(-1)), (x2,)),
        (lambda a: (a.any(), a.all(), (a > 0).logical_not(), (a > 0) & (a < 1), (a > 0) | (a < 1)), (x2,)),
        (lambda a: (a.sort(-1).values, a.argsort(-1), a.flip(-1), a.roll(1, -1), a.clamp(0, 1)), (x2,)),
        (lambda a: (a.exp(), a.log(), a.sqrt(), a.rsqrt(), a.abs(), a.sin(), a.cos(), a.tanh(), a.erf()), (x2,)),
        (lambda a: (a.pow(2), a ** 0.5, a.reciprocal(), a.sign(), a.floor(), a.ceil(), a.round(), a % 2), (x2,)),
        (lambda a: (a // 2, a.trunc(), -a, a - 1, 2 / a, a.maximum(a), a.minimum(a), a.square()), (x2,)),
        (lambda a: (a.matmul(a.t()), a @ a.t(), torch.bmm(a[None], a.t()[None]), torch.einsum("ij->j", a)), (x2,)),
        (lambda a: (torch.baddbmm(a[None], a[None], torch.ones(1, 8, 8)), torch.addmm(a, a, torch.ones(8, 8))), (x2,)),
        (lambda a: (a.to(a.device), a.to(device=a.device, dtype=torch.float64), a.new_ones((2, 3))), (x2,)),
        (lambda a: (a.unsqueeze(0).squeeze(0), a.clone(), a.detach(), a.softmax(-1), a.log_softmax(-1)), (x2,)),
        (lambda a: (a.isnan(), a.isinf(), a.isfinite(), a.nan_to_num(), a.eq(a), a.ne(1), a.ge(a), a.lt(1)), (x2,)),
        (lambda a: (a.scatter(1, ids[:, :2] % 8, 1.0), a.scatter_add(1, ids[:, :2] % 8, a[:, :2])), (x2,)),
        (lambda a: (a.index_put((ids[:, 0] % 2,), a[0]), a.masked_scatter(a > 0, a)), (x2,)),
        (lambda a: (a.mT, a.narrow(1, 0, 2), a.select(0, 1), a.movedim(0, 1), a.swapaxes(0, 1)), (x2,)),
        (lambda a: (a.unfold(1, 2, 2), a.tile(2), a.repeat_interleave(2, 0), a.as_strided((2,), (1,))), (x2,)),
        (lambda a: (a.new_empty(3).fill_(1.0), torch.empty(2).zero_(), torch.full_like(a, 1.0)), (x2,)),
        (lambda a: (torch.linspace(0, 1, 5) + a[0, :5], torch.outer(a[0], a[1]), torch.tensor(1.0) * a), (x2,)),
        (lambda a: (a.sigmoid(), a.relu(), F.silu(a), a.exp2(), a.expm1(), a.log1p(), a.log2(), a.atan()), (x2,)),
        (lambda a: (a.bool(), a.int(), a.to(torch.bfloat16), a.cumsum(0, dtype=torch.float64)), (x2,)),
        (lambda a: (torch.zeros(a.shape, dtype=torch.long), torch.ones_like(a, dtype=torch.bool)), (x2,)),
        (lambda a: (a.lerp(a, 0.5), a.addcmul(a, a), a.addcdiv(a, a + 3), torch.hypot(a, a)), (x2,)),
        (lambda a: (a.logsumexp(-1), a.softmax(-1, dtype=torch.float32), a.mean(-1, keepdim=True)), (x2,)),
        (lambda a: (torch.min(a, a * 2), torch.max(a, a * 2), a.max(), a.min(-1).values, a.clamp_min(0)), (x2,)),
        (lambda a: (a.clamp_max(1), torch.full_like(a, 2.0).log(), a.abs().log() / 2.0, a.long() // 3), (x2,)),
        (lambda a: (torch.meshgrid(a[0], a[1], indexing="ij"), torch.meshgrid(a[0], a[1], indexing="xy")), (x2,)),
        # Python's reflected operators: a number on the left of every binary operator
        (lambda a: (1 + a, 1 - a, 2 * a, 2 / a, 2 ** a, 2 // a, 2 % a, 1 - a.long(), 3 & a.long()), (x2,)),
        # matmul at every rank pairing torch.matmul distinguishes (1-4 dims on either side)
        (lambda a: tuple(torch.matmul(a.flatten()[:math.prod(s)].reshape(s), a.flatten()[:math.prod(t)].reshape(t))
                         for s, t in
                         (((16,), (16,)), ((16,), (16, 1)), ((4, 4), (4,)), ((2, 2, 4), (4, 4)),
                          ((2, 2, 4), (2, 4, 2)), ((1, 2, 2, 4), (4, 4)), ((4, 4), (1, 4, 4)),
                          ((2, 2, 2, 2), (2, 2, 2, 2)))), (x2,)),
    ]
    return mods + fns + methods


class _Wrap(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


def _probed_overloads() -> set[Any]:
    """Every OpOverload the default export IR holds for the probes (train and eval mode)."""
    found: set[Any] = set()
    for target, args in _probes():
        module = target if isinstance(target, nn.Module) else _Wrap(target)
        for training in (False, True):
            module.train(training)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    program = torch.export.export(module, args, strict=False)
            except Exception as e:  # a probe torch cannot export: reported, not fatal
                print(f"# probe failed: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
                continue
            # the capture functionalizes a program that mutates (run_decompositions({})), which also
            # lowers composite ops (matmul -> bmm + _unsafe_view): both IRs are what capture writes
            for graph in (program.graph, _functional(program).graph):
                found.update(node.target for node in graph.nodes
                             if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload))
    return found


def _functional(program: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return program.run_decompositions({})


# ----------------------------------------------------------------------------- schema -> row


def _core_overloads() -> set[Any]:
    found = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        overload = _overload(schema.name[len("aten::"):], schema.overload_name)
        if overload is not None and torch.Tag.core in overload.tags:
            found.add(overload)
    return found


def _overload(op: str, name: str) -> Any:
    try:
        return getattr(getattr(torch.ops.aten, op), name or "default")
    except (AttributeError, RuntimeError):
        return None


def _row_name(overload: Any) -> str:
    op, _, name = overload.name().partition("::")[2].partition(".")
    return f"aten.{op}" if name in ("", "default") else f"aten.{op}.{name}"


def _arg_type(t: Any) -> tuple[str, bool, int | None] | None:
    """(vocabulary type, nullable, list length) of a torchgen type; None for a type a spec cannot carry."""
    if isinstance(t, tg.OptionalType):
        inner = _arg_type(t.elem)
        return None if inner is None else (inner[0], True, inner[2])
    if isinstance(t, tg.ListType):
        elem = t.elem
        if isinstance(elem, tg.BaseType) and elem.name == tg.BaseTy.int:
            return "ints", False, None
        if isinstance(elem, tg.BaseType) and elem.name == tg.BaseTy.float:
            return "floats", False, None
        if isinstance(elem, tg.BaseType) and elem.name == tg.BaseTy.SymInt:
            return "size", False, None
        if elem.is_tensor_like() or (isinstance(elem, tg.BaseType) and
                                     elem.name in (tg.BaseTy.bool, tg.BaseTy.Scalar)):
            return "value", False, None
        return None
    name = t.name.name
    if name in _REFUSED_BASE:
        return None
    simple = {"int": "int", "float": "float", "bool": "bool", "str": "str", "SymInt": "size", "Scalar": "value",
              "ScalarType": "dtype", "MemoryFormat": "str", "Tensor": "value", "SymFloat": "value",
              "SymBool": "value"}
    return (simple[name], False, None) if name in simple else None


def _default(arg: Any, value: Any, vtype: str) -> Any:
    """The schema default as a spec literal (REQUIRED when there is none; _SKIP when it has no literal)."""
    if arg.default is None:
        return "REQUIRED"
    if value is None:
        return None
    if vtype == "str" and "MemoryFormat" in str(arg.type):
        # torch prints a MemoryFormat default as the enum's number (contiguous_format=0)
        return arg.default if arg.default in MEMORY_FORMATS else MEMORY_FORMATS[int(arg.default)]
    if vtype == "dtype" or isinstance(value, (complex, torch.dtype, torch.device)):
        return _SKIP
    if isinstance(value, float) and not math.isfinite(value):
        return _SKIP
    return value


_SKIP = object()


def _row(overload: Any) -> tuple[str, str] | None:
    """One literal row (name, source line) for an overload, or None when a spec cannot call it."""
    text = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace(" ", ""), str(overload._schema).partition("::")[2])
    try:
        schema = tg.FunctionSchema.parse(text)
    except (AssertionError, RuntimeError) as e:  # a type torchgen does not know (complex): not carried
        print(f"# unparsable schema {text}: {e}", file=sys.stderr)
        return None
    if schema.is_mutable or schema.kind() != tg.SchemaKind.functional or schema.name.name.inplace:
        return None
    defaults = {a.name: a.default_value for a in overload._schema.arguments if a.has_default_value()}
    flat = list(schema.arguments.flat_all)
    inputs, variadic = 0, False
    if flat and isinstance(flat[0].type, tg.ListType) and flat[0].type.elem == tg.BaseType(tg.BaseTy.Tensor):
        inputs, variadic = 1, True
    else:
        while inputs < len(flat) and flat[inputs].type == tg.BaseType(tg.BaseTy.Tensor):
            inputs += 1
    args, omitted = [], []
    for a in flat[inputs:]:
        if a.name in OMITTED:
            omitted.append(a.name)
            continue
        typed = _arg_type(a.type)
        if typed is None:
            return None
        vtype, nullable, length = typed
        default = _default(a, defaults.get(a.name), vtype)
        if default is _SKIP:
            return None
        extra = ", choices=_MF" if vtype == "str" and "MemoryFormat" in str(a.type) else ""
        args.append(f"_a({a.name!r}, {vtype!r}, {default!r}, {nullable!r}{extra})".replace("'REQUIRED'", "_R"))
    returns = schema.returns
    if len(returns) == 1 and isinstance(returns[0].type, tg.ListType) and returns[0].type.is_tensor_like():
        outputs = "None"
    elif all(r.type.is_tensor_like() for r in returns) and returns:
        outputs = str(len(returns))
    else:
        return None  # returns a number (sym_size): the spec's own size/dim ops carry those
    arity = "(1, None)" if variadic else f"({inputs}, {inputs})"
    name = _row_name(overload)
    doc = str(overload._schema).partition("::")[2]
    line = (f"    _op({name!r}, ({', '.join(args)}{',' if len(args) == 1 else ''}), {arity}, {outputs}, "
            f"{tuple(omitted)!r}, {doc!r}),")
    return name, line


def _with_siblings(overloads: set[Any]) -> set[Any]:
    """Every overload of each op found: Python picks one by its argument types (``arange(n)`` or
    ``arange(1, n)``, ``x - 1`` or ``1 - x``), so a model may reach any of them."""
    out = set(overloads)
    for overload in overloads:
        packet = overload.overloadpacket
        out.update(getattr(packet, name) for name in packet.overloads())
    return {overload for overload in out if _dispatched(overload)}


def _dispatched(overload: Any) -> bool:
    """Whether the dispatcher knows the overload. TorchScript's interpreter registers its own
    operators under ``aten::`` (``split.str`` on Python strings, ``to.prim_dtype``, the
    ``*_hacked_twin`` and ``mT.a`` overloads); torch.export traces through the dispatcher, so it
    never emits them and a spec has no use for them."""
    schema = overload._schema
    try:
        torch._C._dispatch_find_schema_or_throw(schema.name, schema.overload_name)
    except RuntimeError:
        return False
    return True


def main() -> None:
    overloads = _with_siblings(_core_overloads() | _probed_overloads())
    rows = {}
    for overload in overloads:
        row = _row(overload)
        if row is not None and not row[0].endswith("_backward") and "backward" not in row[0]:
            rows[row[0]] = row[1]
    print(HEADER.format(torch=torch.__version__, n=len(rows)))
    for name in sorted(rows):
        print(rows[name])
    print("])")


HEADER = '''"""The ATen rows of the vocabulary, GENERATED by tools/gen_aten_vocab.py from torch {torch} -- do not edit.

The rule: the Core ATen opset plus the ops torch.export's default IR keeps for nn
modules, torch.nn.functional and Tensor methods, as exported and functionalized,
with every functional overload of each op ({n} rows). A row is one ATen
overload: its leading Tensor arguments are the node's inputs, the others its
arguments (schema names and defaults); device/layout are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from .types import REQUIRED, Arg, OpDef, freeze_table

__all__ = ["ATEN_TORCH_VERSION", "ATEN_OPS"]

ATEN_TORCH_VERSION = "{torch}"
_R = REQUIRED
_MF = ("contiguous_format", "preserve_format", "channels_last", "channels_last_3d")


def _a(name: str, type_: str, default: object, nullable: bool, choices: tuple[str, ...] | None = None) -> Arg:
    return Arg(name, type_, default, nullable=nullable, choices=choices)


def _op(name: str, args: tuple[Arg, ...], inputs: tuple[int, int | None], outputs: int | None,
        omitted: tuple[str, ...], schema: str) -> OpDef:
    return OpDef(name, 2, args, inputs=inputs, outputs=outputs, doc=schema, omitted=omitted, impl="aten")


ATEN_OPS: Mapping[str, OpDef] = freeze_table(['''


if __name__ == "__main__":
    main()
