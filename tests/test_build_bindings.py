"""The torch binding tables against the vocabulary: same names, accepted arguments, same defaults."""

from __future__ import annotations

import inspect
import operator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from modelpack.torch.bindings import LAYER_BINDINGS, OP_BINDINGS, POSITIONAL_ARGS  # noqa: E402
from modelpack.vocab import LAYERS, OPS, REQUIRED  # noqa: E402

# Where the vocabulary's default is torch's default written as data: the spec says "relu",
# torch's signature holds the function F.relu (TransformerEncoderLayer accepts both, same layer).
_EQUIVALENT_DEFAULTS = {("TransformerEncoderLayer", "activation"): ("relu", F.relu)}


def test_tables_have_exactly_the_vocabulary_names():
    assert set(LAYER_BINDINGS) == set(LAYERS)
    assert set(OP_BINDINGS) == set(OPS)


def test_tables_are_read_only():
    with pytest.raises(TypeError):
        LAYER_BINDINGS["Evil"] = nn.Linear  # type: ignore[index]
    with pytest.raises(TypeError):
        OP_BINDINGS["system"] = print  # type: ignore[index]


def test_bindings_are_literal_not_looked_up():
    """No name is resolved at run time: the module calls no getattr/import machinery at all."""
    import ast

    import modelpack.torch.bindings as bindings

    tree = ast.parse(Path(bindings.__file__).read_text())
    resolver = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "aten_overload")
    inside = {id(n) for n in ast.walk(resolver)}

    def names(nodes):
        return {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                for node in nodes if isinstance(node, ast.Call)}

    calls = names(n for n in ast.walk(tree) if id(n) not in inside)
    assert not calls & {"getattr", "__import__", "import_module", "eval", "exec"}
    assert calls == {"MappingProxyType", "aten_overload"}
    # the one resolver: names of the literal ATen table only, on torch.ops.aten only
    assert names(ast.walk(resolver)) <= {"getattr", "split", "KeyError"}
    with pytest.raises(KeyError):
        bindings.aten_overload("aten.system")


TORCH_LAYERS = sorted(n for n, e in LAYERS.items() if e.impl == "torch")
TORCH_OPS = sorted(n for n, e in OPS.items() if e.impl == "torch")


def test_every_layer_is_a_torch_module_class():
    for name in TORCH_LAYERS:
        cls = LAYER_BINDINGS[name]
        assert isinstance(cls, type) and issubclass(cls, nn.Module), name
        assert cls.__name__ == name, f"{name} is bound to {cls.__name__}"


def _layer_signature(cls: type) -> inspect.Signature:
    """The constructor signature; LSTM/GRU take *args and forward them to RNNBase (minus `mode`)."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()) and issubclass(cls, nn.RNNBase):
        base = inspect.signature(nn.RNNBase.__init__)
        return base.replace(parameters=[p for n, p in base.parameters.items() if n != "mode"])
    return sig


@pytest.mark.parametrize("name", TORCH_LAYERS)
def test_layer_arguments_and_defaults_match_torch(name):
    entry, cls = LAYERS[name], LAYER_BINDINGS[name]
    params = _layer_signature(cls).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values()) and name == "Identity"
    for arg in entry.args:
        if arg.call:  # a forward keyword (test_vocab checks it against forward's signature)
            continue
        assert arg.name in params or accepts_any, f"{name}: torch does not accept {arg.name!r}"
        if arg.default is REQUIRED or accepts_any:
            continue
        torch_default = params[arg.name].default
        if (name, arg.name) in _EQUIVALENT_DEFAULTS:
            assert (arg.default, torch_default) == _EQUIVALENT_DEFAULTS[(name, arg.name)]
        else:
            assert torch_default == arg.default and type(torch_default) is type(arg.default), \
                f"{name}.{arg.name}: vocabulary default {arg.default!r}, torch {torch_default!r}"
    for omitted in entry.omitted:
        assert omitted in params, f"{name}: omitted argument {omitted!r} is not a torch argument"


def _schemas(op: str) -> list:
    return torch._C._jit_get_schemas_for_operator(f"aten::{op}")


def _arg_names(fn, op: str) -> set[str]:
    """Argument names the callable takes: from its Python signature, or its aten schemas."""
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {a.name for s in _schemas(op) for a in s.arguments}


# sample inputs per op (positional), small and valid
def _sample(op: str) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, generator=g)
    y = torch.randn(2, 3, 4, generator=g)
    if op in ("add", "sub", "mul", "div"):
        return (x, y.abs() + 1)
    if op == "matmul":
        return (x, torch.randn(4, 5, generator=g))
    if op in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool2d", "avg_pool2d", "interpolate", "pad"):
        return (torch.randn(1, 2, 4, 4, generator=g),)
    if op in ("sqrt", "rsqrt"):
        return (x.abs() + 1,)
    if op == "linear":
        return (x, torch.randn(5, 4, generator=g))
    if op in ("cat", "stack"):
        return ((x, y),)
    if op == "getitem":
        return ((x, y),)
    return (x,)


_REQUIRED_VALUES = {"softmax": {"dim": 1}, "log_softmax": {"dim": 1}, "chunk": {"chunks": 2},
                    "getitem": {"index": 1}, "reshape": {"shape": (6, 4)}, "permute": {"dims": (2, 0, 1)},
                    "transpose": {"dim0": 0, "dim1": 2}, "adaptive_avg_pool2d": {"output_size": 2},
                    "adaptive_max_pool2d": {"output_size": 2}, "max_pool2d": {"kernel_size": 2},
                    "avg_pool2d": {"kernel_size": 2}, "interpolate": {"size": 2}, "pad": {"pad": (1, 1)},
                    "roll": {"shifts": 1}, "unsqueeze": {"dim": 0}}


@pytest.mark.parametrize("name", TORCH_OPS)
def test_op_arguments_are_accepted_with_torch_defaults(name):
    if name == "interpolate":
        pytest.skip("needs size or scale_factor, both null by default; covered by tests/test_zoo_real.py")
    entry, fn = OPS[name], OP_BINDINGS[name]
    positional = POSITIONAL_ARGS.get(name, ())
    if name == "getitem":
        assert fn is operator.getitem and positional == ("index",)
    else:
        names = _arg_names(fn, name)
        for arg in entry.args:
            assert arg.name in names, f"{name}: torch does not accept {arg.name!r}"
    required = dict(_REQUIRED_VALUES.get(name, {}))
    defaults = {a.name: a.default for a in entry.args if a.default is not REQUIRED}
    inputs = _sample(name)

    def call(kwargs):
        extra = [kwargs.pop(k) for k in positional]
        return fn(*inputs, *extra, **kwargs)

    plain, explicit = call(dict(required)), call({**required, **defaults})
    assert type(plain) is type(explicit)
    for a, b in zip(plain if isinstance(plain, tuple) else (plain,),
                    explicit if isinstance(explicit, tuple) else (explicit,)):
        assert torch.equal(a, b), f"{name}: passing the vocabulary defaults changes the result"


def test_positional_args_name_real_vocabulary_arguments():
    for op, names in POSITIONAL_ARGS.items():
        assert op in OPS
        assert all(OPS[op].arg(n) is not None for n in names)


# modelpack's own ops (modelpack/torch/ops.py): each runs on a small sample, by keyword
_OWN_CALLS = {
    "size": ((torch.ones(2, 3),), {"dim": 1}, 3),
    "dim": ((torch.ones(2, 3),), {}, 2),
    "scalar": ((), {"value": 0.5}, 0.5),
    "neg": ((3,), {}, -3),
    "pow": ((2, 3), {}, 8),
    "index": ((torch.arange(6).view(2, 3),), {"index": [":", "1:"]}, torch.tensor([[1, 2], [4, 5]])),
    "expand": ((torch.ones(1, 3),), {"size": (2, -1)}, torch.ones(2, 3)),
    "squeeze": ((torch.ones(1, 3),), {"dim": None}, torch.ones(3)),
    "einsum": (((torch.eye(2), torch.ones(2, 2)),), {"equation": "ij,jk->ik"}, torch.ones(2, 2)),
    "layer_norm": ((torch.ones(2, 3),), {"normalized_shape": 3}, torch.zeros(2, 3)),
    "dropout": ((torch.ones(2, 3),), {"p": 0.5, "training": False}, torch.ones(2, 3)),
    "stochastic_depth": ((torch.ones(2, 3),), {"p": 0.5, "mode": "row", "training": False}, torch.ones(2, 3)),
    "patch_merging_pad": ((torch.ones(1, 4, 4, 2),), {}, torch.ones(1, 2, 2, 8)),
    "max_pool2d": ((torch.ones(1, 1, 4, 4),), {"kernel_size": 2}, torch.ones(1, 1, 2, 2)),
    "adaptive_max_pool2d": ((torch.ones(1, 1, 4, 4),), {"output_size": 1}, torch.ones(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(n for n, e in OPS.items() if e.impl == "modelpack"))
def test_modelpack_ops_run(name):
    if name not in _OWN_CALLS:
        pytest.skip(f"{name} has its own test below")
    inputs, kwargs, expected = _OWN_CALLS[name]
    got = OP_BINDINGS[name](*inputs, **kwargs)
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected)
    else:
        assert got == expected


def test_arithmetic_works_on_shape_ints():
    assert OP_BINDINGS["div"](7, 2, rounding_mode="floor") == 3
    assert OP_BINDINGS["mul"](3, 4) == 12 and OP_BINDINGS["add"](1, 2) == 3 and OP_BINDINGS["sub"](1, 2) == -1


def _plain_attention(x, qkv_w, qkv_b, proj_w, proj_b, heads):
    """Multi-head self-attention over all tokens of (B, H, W, C), written out independently."""
    b, h, w, c = x.shape
    t = x.reshape(b, h * w, c)
    q, k, v = F.linear(t, qkv_w, qkv_b).chunk(3, dim=-1)
    split = lambda z: z.reshape(b, h * w, heads, c // heads).transpose(1, 2)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    out = (att @ split(v)).transpose(1, 2).reshape(b, h * w, c)
    return F.linear(out, proj_w, proj_b).reshape(b, h, w, c)


def test_window_attention_over_one_window_is_plain_attention():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 8, generator=g)
    qkv_w, qkv_b = torch.randn(24, 8, generator=g) * 0.3, torch.randn(24, generator=g)
    proj_w, proj_b = torch.randn(8, 8, generator=g) * 0.3, torch.randn(8, generator=g)
    bias = torch.zeros(1, 2, 16, 16)
    fn = OP_BINDINGS["shifted_window_attention"]
    # a window as large as the image: no partition, and the shift is ignored
    got = fn(x, qkv_w, proj_w, bias, qkv_b, proj_b, window_size=(4, 4), num_heads=2, shift_size=(2, 2))
    assert torch.allclose(got, _plain_attention(x, qkv_w, qkv_b, proj_w, proj_b, 2), atol=1e-5)
    # four 2x2 windows, shifted: each output depends only on its own (rolled) window
    part = fn(x, qkv_w, proj_w, torch.zeros(1, 2, 4, 4), qkv_b, proj_b, window_size=(2, 2), num_heads=2,
              shift_size=(0, 0))
    ref = _plain_attention(x[:, :2, :2], qkv_w, qkv_b, proj_w, proj_b, 2)
    assert torch.allclose(part[:, :2, :2], ref, atol=1e-5)
    shifted = fn(x, qkv_w, proj_w, torch.zeros(1, 2, 4, 4), qkv_b, proj_b, window_size=(2, 2), num_heads=2,
                 shift_size=(1, 1))
    assert shifted.shape == x.shape and not torch.allclose(shifted, part)


def test_relative_position_bias_gathers_the_table():
    table = torch.arange(9 * 2, dtype=torch.float32).view(9, 2)
    index = torch.tensor([4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4])
    bias = OP_BINDINGS["relative_position_bias"](table, index, window_size=(2, 2))
    assert bias.shape == (1, 2, 4, 4)
    assert torch.equal(bias[0, 1].flatten(), table[index, 1])
