"""Shape propagation on the meta device: ``check_shapes`` for validate, ``output_shapes`` for inspect.

Symbolic dims (``batch``, ``seq``) get concrete sizes: distinct multiples of 32,
so a ``batch`` can never be mistaken for ``seq`` and halvings stay exact; sizes
are mapped back to names in messages. Nothing is allocated (meta tensors).
``output_shapes`` runs twice with different sizes and writes a dim that moved
with a symbol as that symbol (``height/2``, ``seq-4``), ``?`` when it fits none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..codec import dtype_by_name
from ..errors import ModelPackError, ShapeError, SpecError
from ..spec import validate
from ..spec.shape_rules import add_block_nodes, dim_text, sizes, symbols
from .build import SpecModule, Step, build_validated, prepare
from .tensors import torch_dtype

__all__ = ["check_shapes", "output_shapes", "propagate", "rnn_output_like"]

# layer -> (attribute holding the expected size, input dim that must equal it)
_FEATURE_DIM: Mapping[str, tuple[str, int]] = {
    "Linear": ("in_features", -1),
    "Bilinear": ("in1_features", -1),
    "Conv1d": ("in_channels", -2),
    "Conv2d": ("in_channels", -3),
    "Conv3d": ("in_channels", -4),
    "ConvTranspose1d": ("in_channels", -2),
    "ConvTranspose2d": ("in_channels", -3),
    "BatchNorm1d": ("num_features", 1),
    "BatchNorm2d": ("num_features", 1),
    "GroupNorm": ("num_channels", 1),
    "LSTM": ("input_size", -1),
    "GRU": ("input_size", -1),
    "MultiheadAttention": ("embed_dim", -1),
    "TransformerEncoderLayer": ("self_attn.embed_dim", -1),
}

# Layers and ops whose output has their first input's shape and dtype. ``output_shapes`` (inspect) takes
# that rule instead of running them: on the meta device several (batch_norm, layer_norm, gelu...) run as
# Python decompositions that import torch._dynamo, seconds of import for a table of shapes.
_SAME_SHAPE = frozenset({
    "Identity", "BatchNorm1d", "BatchNorm2d", "InstanceNorm2d", "LayerNorm", "GroupNorm", "Dropout", "Dropout2d",
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "GELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "Sigmoid",
    "Tanh", "Softmax", "LogSoftmax",
    "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "tanh",
    "softmax", "log_softmax", "neg", "exp", "abs", "sqrt", "rsqrt", "layer_norm", "dropout", "stochastic_depth",
})


# --------------------------------------------------------------------------- symbols


def _fmt_shape(shape: Any, names: Mapping[int, str]) -> str:
    return "[" + ", ".join(names.get(int(d), str(int(d))) for d in shape) + "]"


def _fmt_value(value: Any, names: Mapping[int, str]) -> str:
    if isinstance(value, torch.Tensor):
        return _fmt_shape(value.shape, names)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt_value(v, names) for v in value) + ")"
    return repr(value)


# --------------------------------------------------------------------------- propagation


def _inputs(spec: dict[str, Any], sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    out = {}
    for name, decl in spec["inputs"].items():
        shape = [sizes[d] if isinstance(d, str) else d for d in decl["shape"]]
        dtype = torch_dtype(dtype_by_name(decl.get("dtype", "float32")))
        out[name] = torch.empty(shape, dtype=dtype, device="meta")
    return out


Show = Callable[[str, Any], str]  # renders a value (and the env name holding it) for messages


def propagate(spec: dict[str, Any], sizes: Mapping[str, int], module: SpecModule | None = None,
              show: Show | None = None, *, rules: bool = False) -> tuple[dict[str, Any], list[ShapeError]]:
    """Run an expanded spec on meta inputs: every node's value, and a ShapeError per failing node.

    A node whose inputs failed is skipped (not reported again), so each
    independent problem is reported once. ``show`` renders an input in messages
    (default: its shape with symbol sizes written as names). ``rules`` takes the
    same-shape rule for the layers and ops that have one instead of running them
    (faster, but torch's own complaints about their arguments go unseen).
    """
    model = module if module is not None else build_validated(spec, device="meta").eval()
    names = {v: k for k, v in sizes.items()}
    try:
        env: dict[str, Any] = _inputs(spec, sizes)
    except RuntimeError as e:  # a declared input torch cannot even describe (size overflows int64)
        return {}, [ShapeError(f"the declared inputs cannot be created: {str(e).splitlines()[0][:200]}")]
    render = show or (lambda ref, value: _fmt_value(value, names))
    errors: list[ShapeError] = []
    for step in model._steps:
        if not all(ref in env for ref in step.inputs):
            continue
        problem = _precheck(model, step, env, lambda ref: render(ref, env[ref]))
        if problem is None:
            try:
                value = _shortcut(model, step, env, rules)
                env[step.name] = model._run(step, env) if value is None else value
                continue
            except Exception as e:  # torch's own shape error: keep its first line
                problem = _generic(step, lambda ref: render(ref, env[ref]), e)
        errors.append(ShapeError(problem, where=step.name))
    return env, errors


def _precheck(model: SpecModule, step: Step, env: Mapping[str, Any], show: Callable[[str], str]) -> str | None:
    """A message in the spec's own terms for the mistakes people make most."""
    if step.kind != "layer" or not step.inputs:  # Parameter/Buffer nodes take no input
        return None
    first = env[step.inputs[0]]
    if not isinstance(first, torch.Tensor):
        return None
    if step.what == "Embedding" and (first.is_floating_point() or first.is_complex()):
        dtype = str(first.dtype).removeprefix("torch.")
        return f"Embedding expects integer ids, got input {show(step.inputs[0])} {dtype}"
    rule = _FEATURE_DIM.get(step.what)
    if rule is None:
        return None
    attr, dim = rule
    expected = _attr(model._layer(step.path), attr)
    if first.dim() >= abs(dim) + (0 if dim < 0 else 1) and int(first.shape[dim]) != expected:
        return f"{step.what} expects {attr.rpartition('.')[2]}={expected}, got input {show(step.inputs[0])}"
    return None


def _shortcut(model: SpecModule, step: Step, env: Mapping[str, Any], rules: bool = False) -> Any:
    """Output values computed from a shape rule instead of running the layer, or None.

    Recurrent layers run one meta step per time step (tens of ms each), so at
    the symbol sizes used here a GRU would take minutes; their shape rule is
    short and is tested against torch (tests/test_build_shapes.py). With
    ``rules``, the same-shape layers and ops too (see ``_SAME_SHAPE``).
    """
    if rules and step.what in _SAME_SHAPE and step.inputs and isinstance(env[step.inputs[0]], torch.Tensor):
        return env[step.inputs[0]]
    if step.what not in ("LSTM", "GRU") or len(step.inputs) != 1:
        return None
    return rnn_output_like(model._layer(step.path), env[step.inputs[0]])


def rnn_output_like(rnn: nn.RNNBase, x: torch.Tensor) -> Any:
    """Meta tensors shaped like ``rnn(x)``: (output, h_n) for GRU, (output, (h_n, c_n)) for LSTM."""
    d = 2 if rnn.bidirectional else 1
    out_size = rnn.proj_size if rnn.proj_size > 0 else rnn.hidden_size
    batch = () if x.dim() == 2 else (x.shape[0 if rnn.batch_first else 1],)

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=x.dtype, device="meta")

    output = empty(*x.shape[:-1], d * out_size)
    h_n = empty(d * rnn.num_layers, *batch, out_size)
    if rnn.mode == "LSTM":
        return output, (h_n, empty(d * rnn.num_layers, *batch, rnn.hidden_size))
    return output, h_n


def _attr(module: nn.Module, dotted: str) -> int:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return int(value)


def _generic(step: Step, show: Callable[[str], str], e: Exception) -> str:
    got = ", ".join(show(ref) for ref in step.inputs)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{step.what} fails on input {got}: {first_line}"


# --------------------------------------------------------------------------- public


def check_shapes(spec: Any) -> list[SpecError]:
    """Every node that cannot take the shapes flowing into it (``where`` is the node name).

    ``spec`` is a validated spec (dict), expanded or not; problems building it
    (e.g. a parameter limit) come back as one error rather than raising.
    Messages write dims in the spec's terms (``[batch, seq/2]``), ``?`` for a
    dim that follows no single symbol.
    """
    try:
        expanded = prepare(spec)
        model = build_validated(expanded, device="meta").eval()
    except ModelPackError as e:
        return [e if isinstance(e, SpecError) else SpecError(str(e))]
    names = symbols(expanded)
    runs = [sizes(names, r) for r in (0, 1)]
    other, _ = propagate(expanded, runs[1], model)

    def show(ref: str, value: Any) -> str:
        return _describe(value, other[ref], runs) if ref in other else _fmt_value(value, {})

    return list(propagate(expanded, runs[0], model, show=show)[1])


def output_shapes(spec: Any) -> dict[str, str]:
    """node name -> its output shape with symbolic dims named (``[batch, 10]``), for ``modelpack inspect``.

    Nodes whose shape cannot be computed are left out (``check_shapes`` says why).
    """
    try:
        data = validate(spec)
        expanded = prepare(data)
        model = build_validated(expanded, device="meta").eval()
    except ModelPackError:
        return {}
    names = symbols(expanded)
    runs = [sizes(names, r) for r in (0, 1)]
    envs = [propagate(expanded, sizes, model, rules=True)[0] for sizes in runs]
    shapes = {n["name"]: _describe(envs[0][n["name"]], envs[1][n["name"]], runs)
              for n in expanded["nodes"] if n["name"] in envs[0] and n["name"] in envs[1]}
    add_block_nodes(data.get("blocks") or {}, data["nodes"], "", shapes)
    return shapes


def _describe(a: Any, b: Any, runs: list[dict[str, int]]) -> str:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == b.dim():
        return "[" + ", ".join(dim_text(int(x), int(y), runs) for x, y in zip(a.shape, b.shape)) + "]"
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return "(" + ", ".join(_describe(x, y, runs) for x, y in zip(a, b)) + ")"
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return "?"
    return repr(a) if a == b else "?"
