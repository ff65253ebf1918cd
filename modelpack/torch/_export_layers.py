"""Module instance -> vocabulary layer node: which torch.nn types are layers, and their arguments.

The type table is the inverse of :data:`modelpack.torch.bindings.LAYER_BINDINGS`
(one table for both directions, so build and export cannot disagree on what a
name means). Arguments are read back from the module's attributes: torch stores
almost every constructor argument under its own name, and the few it does not
(``bias`` becomes a parameter or ``None``, a MultiheadAttention ``kdim`` of
``None`` becomes ``embed_dim``...) have a reader here. Values are written as a
person would write them (``kernel_size: 3``, not ``[3, 3]``) and defaults are
left out. An argument the vocabulary omits must still hold torch's default, or
the export is refused: a spec that cannot say ``return_indices=True`` must not
pretend the module was built without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError
from ..vocab import LAYERS, Arg, LayerDef, suggest
from .bindings import LAYER_BINDINGS

__all__ = ["LAYER_TYPES", "layer_name", "layer_args", "is_layer_type", "normalise_value", "drop_defaults"]

# torch class -> vocabulary layer name (the inverse of the build table).
LAYER_TYPES: Mapping[type[nn.Module], str] = MappingProxyType({cls: name for name, cls in LAYER_BINDINGS.items()})

# Omitted constructor arguments that are not architecture: `_weight` is an initial
# value (the weights in the file replace it) and `_freeze` sets requires_grad,
# which is training state like any other parameter's requires_grad.
_NOT_ARCHITECTURE = frozenset({"_weight", "_freeze"})


def _vocab_base(cls: type) -> type | None:
    """The vocabulary class ``cls`` is, or inherits its forward from unchanged (None if neither)."""
    if cls in LAYER_TYPES:
        return cls
    for base in cls.__mro__[1:]:
        if base in LAYER_TYPES:
            return base if cls.forward is base.forward else None
    return None


def is_layer_type(module: nn.Module) -> bool:
    """True when the tracer should keep ``module`` as one layer node instead of tracing into it."""
    return _vocab_base(type(module)) is not None


def layer_name(module: nn.Module, path: str) -> str:
    """The vocabulary name of ``module``; ExportError naming the nearest layers if it has none."""
    base = _vocab_base(type(module))
    if base is not None:
        return LAYER_TYPES[base]
    cls = type(module)
    lazy = isinstance(module, nn.modules.lazy.LazyModuleMixin)
    if lazy:
        raise ExportError(f"{cls.__name__} was never called by the example run, so its sizes are unknown; "
                          "pass example inputs that reach it, or remove it", where=path)
    near = suggest(cls.__name__, "layer")
    hint = f"nearest: {', '.join(near)}" if near else f"layers: {', '.join(LAYERS)}"
    raise ExportError(f"{_qualname(cls)} is not in the modelpack vocabulary (version 1); {hint}. "
                      "Replace it with vocabulary layers, or keep it out of the exported model",
                      where=path)


def _qualname(cls: type) -> str:
    module = cls.__module__
    if module.startswith("torch.nn.modules"):
        module = "torch.nn"
    return f"{module}.{cls.__qualname__}"


# ----------------------------------------------------------------------------- readers


def _has(tensor: Any) -> bool:
    return tensor is not None


def _bias(module: nn.Module) -> Any:
    """Linear/Conv: a bias parameter or None; RNNs: a bool; norms: only meaningful when affine."""
    value = getattr(module, "bias")
    if isinstance(value, bool):
        return value
    for flag in ("affine", "elementwise_affine"):
        if getattr(module, flag, True) is False:
            return True  # no parameters at all: bias is moot, write the default
    return _has(value)


def _same_as_embed(attr: str) -> Callable[[nn.Module], Any]:
    """MultiheadAttention stores kdim=None as embed_dim; write None (the default) for that."""

    def read(m: nn.Module) -> Any:
        value = getattr(m, attr)
        return None if value == m.embed_dim else value

    return read


def _pool_stride(m: nn.Module) -> Any:
    """Pools store stride=None as kernel_size; write None (the default) for that."""
    return None if m.stride == m.kernel_size else m.stride


def _activation_name(m: nn.Module) -> str:
    """TransformerEncoderLayer keeps F.relu / F.gelu (or a module) where the spec has a word."""
    act = m.activation
    if act is F.relu or type(act) is nn.ReLU:
        return "relu"
    if act is F.gelu or (type(act) is nn.GELU and act.approximate == "none"):
        return "gelu"
    raise ExportError(f"TransformerEncoderLayer activation {act!r} is not expressible; the spec allows "
                      "'relu' and 'gelu'")


_ENCODER_LAYER: dict[str, Callable[[nn.Module], Any]] = {
    "d_model": lambda m: m.self_attn.embed_dim,
    "nhead": lambda m: m.self_attn.num_heads,
    "dim_feedforward": lambda m: m.linear1.out_features,
    "dropout": lambda m: m.dropout.p,
    "activation": _activation_name,
    "layer_norm_eps": lambda m: m.norm1.eps,
    "batch_first": lambda m: m.self_attn.batch_first,
    "norm_first": lambda m: m.norm_first,
    "bias": lambda m: _has(m.linear1.bias),
}

# (layer, argument) -> reader, where the attribute is not simply the argument.
_READERS: Mapping[str, Mapping[str, Callable[[nn.Module], Any]]] = MappingProxyType({
    "MultiheadAttention": {
        "bias": lambda m: _has(m.in_proj_bias),
        "add_bias_kv": lambda m: _has(m.bias_k),
        "kdim": _same_as_embed("kdim"),
        "vdim": _same_as_embed("vdim"),
    },
    "TransformerEncoderLayer": _ENCODER_LAYER,
    **{name: {"stride": _pool_stride} for name in ("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d")},
})


def _read(module: nn.Module, layer: str, arg: Arg) -> Any:
    reader = _READERS.get(layer, {}).get(arg.name)
    if reader is not None:
        return reader(module)
    if arg.name == "bias":
        return _bias(module)
    return getattr(module, arg.name)


# ----------------------------------------------------------------------------- values


def normalise_value(value: Any) -> Any:
    """Module attributes -> plain spec data: tuples and torch.Size become lists, numbers stay numbers."""
    if isinstance(value, (tuple, list, torch.Size)):
        return [normalise_value(v) for v in value]
    if isinstance(value, torch.dtype):
        from .tensors import dtype_row

        return dtype_row(value).name
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise ExportError(f"internal: cannot write {type(value).__name__} value {value!r} in a spec")


def _as_written(arg: Arg, value: Any) -> Any:
    """``[3, 3]`` -> ``3`` where one number means the same thing (sizes with a fixed length)."""
    if arg.type not in ("ints", "floats") or not isinstance(value, list) or not value:
        return value
    if len(value) == 1:
        return value[0]
    if arg.length == len(value) and all(v == value[0] and type(v) is type(value[0]) for v in value):
        return value[0]
    return value


def drop_defaults(entry: LayerDef | Any, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments that differ from the vocabulary default, in vocabulary order."""
    out: dict[str, Any] = {}
    for arg in entry.args:
        if arg.name not in args:
            continue
        value = _as_written(arg, args[arg.name])
        default = arg.default if arg.required else _as_written(arg, normalise_value(arg.default))
        if arg.required or not _equal(value, default):
            out[arg.name] = value
    return out


def _equal(a: Any, b: Any) -> bool:
    """Same value and kind (True is not 1; 1 and 1.0 are the same number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


# ----------------------------------------------------------------------------- public


def layer_args(module: nn.Module, layer: str, path: str) -> dict[str, Any]:
    """The spec ``args`` of a layer node: non-default vocabulary arguments read from ``module``."""
    entry = LAYERS[layer]
    _check_omitted(module, entry, path)
    try:
        values = {arg.name: normalise_value(_read(module, layer, arg)) for arg in entry.args if not arg.call}
    except ExportError as e:
        raise e.with_context(where=path)
    except AttributeError as e:
        raise ExportError(f"cannot read the arguments of this {layer} back from the module ({e}); is it a "
                          "subclass that renames attributes?", where=path) from e
    return drop_defaults(entry, values)


def _check_omitted(module: nn.Module, entry: LayerDef, path: str) -> None:
    """Refuse a module whose value for an argument the spec cannot set is not torch's default."""
    if not entry.omitted:
        return
    params = inspect.signature(LAYER_BINDINGS[entry.name].__init__).parameters
    for name in entry.omitted:
        if name in _NOT_ARCHITECTURE:
            continue
        default = params[name].default if name in params else inspect.Parameter.empty
        value = getattr(module, name, default)
        if default is inspect.Parameter.empty or value != default:
            raise ExportError(f"{entry.name} was built with {name}={value!r}; the spec cannot express "
                              f"{name} (vocabulary version 1 leaves it at {default!r})", where=path)
