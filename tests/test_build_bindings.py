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

    calls = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
             for node in ast.walk(ast.parse(Path(bindings.__file__).read_text()))
             if isinstance(node, ast.Call)}
    assert not calls & {"getattr", "__import__", "import_module", "eval", "exec"}
    assert calls == {"MappingProxyType"}


def test_every_layer_is_a_torch_module_class():
    for name, cls in LAYER_BINDINGS.items():
        assert isinstance(cls, type) and issubclass(cls, nn.Module), name
        assert cls.__name__ == name, f"{name} is bound to {cls.__name__}"


def _layer_signature(cls: type) -> inspect.Signature:
    """The constructor signature; LSTM/GRU take *args and forward them to RNNBase (minus `mode`)."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()) and issubclass(cls, nn.RNNBase):
        base = inspect.signature(nn.RNNBase.__init__)
        return base.replace(parameters=[p for n, p in base.parameters.items() if n != "mode"])
    return sig


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_arguments_and_defaults_match_torch(name):
    entry, cls = LAYERS[name], LAYER_BINDINGS[name]
    params = _layer_signature(cls).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values()) and name == "Identity"
    for arg in entry.args:
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
    if op in ("cat", "stack"):
        return ((x, y),)
    if op == "getitem":
        return ((x, y),)
    return (x,)


_REQUIRED_VALUES = {"softmax": {"dim": 1}, "log_softmax": {"dim": 1}, "chunk": {"chunks": 2},
                    "getitem": {"index": 1}, "reshape": {"shape": (6, 4)}, "permute": {"dims": (2, 0, 1)},
                    "transpose": {"dim0": 0, "dim1": 2}}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_arguments_are_accepted_with_torch_defaults(name):
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
