"""What a spec will cost to build, in closed form from each layer row's arguments, before anything is built.

``LSTM(num_layers=10**6)`` is a 510-byte spec that used to build modules on
the meta device for minutes before any limit saw it. Each layer row here has
a formula for its parameter and buffer elements, bytes, tensors and modules
(checked against torch on the meta device in tests/test_spec_cost.py), so
``build`` and ``load_model`` check the totals against the limits, and
``load_model`` against the file's own tensor count, first. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from .. import limits
from .._dotted import DottedTree
from ..codec import dtype_by_name
from ..errors import LimitError
from ..vocab import LAYERS, REQUIRED

__all__ = ["Cost", "layer_cost", "spec_cost", "check_cost", "FORMULAS"]

_F32 = 4  # bytes per float element (torch's default dtype)


class Cost(NamedTuple):
    """Totals for one layer or a whole spec: parameter/buffer elements and bytes, tensors, nn.Modules."""

    elements: int = 0
    bytes: int = 0
    tensors: int = 0
    modules: int = 1

    def __add__(self, other: tuple[int, ...]) -> Cost:  # type: ignore[override]
        return Cost(*(a + b for a, b in zip(self, other)))


def _floats(*sizes: int, modules: int = 1) -> Cost:
    """Float tensors of the given element counts (a zero size is a tensor that is absent)."""
    present = [n for n in sizes if n]
    return Cost(sum(present), _F32 * sum(present), len(present), modules)


def _prod(value: Any, n: int) -> int:
    return math.prod(value) if isinstance(value, (list, tuple)) else value ** n


def _linear(a: Mapping[str, Any]) -> Cost:
    return _floats(a["in_features"] * a["out_features"], a["out_features"] * a["bias"])


def _bilinear(a: Mapping[str, Any]) -> Cost:
    return _floats(a["in1_features"] * a["in2_features"] * a["out_features"], a["out_features"] * a["bias"])


def _conv(n: int, transposed: bool) -> Callable[[Mapping[str, Any]], Cost]:
    def cost(a: Mapping[str, Any]) -> Cost:
        cin, cout, g = a["in_channels"], a["out_channels"], a["groups"]
        per = (cin * (cout // g)) if transposed else ((cin // g) * cout)
        return _floats(per * _prod(a["kernel_size"], n), cout * a["bias"])
    return cost


def _batch_norm(a: Mapping[str, Any]) -> Cost:
    c = a["num_features"]
    cost = _floats(c, c * a["bias"]) if a["affine"] else Cost()
    if a["track_running_stats"]:  # running mean and var, and num_batches_tracked (one int64)
        cost = cost + Cost(2 * c + 1, _F32 * 2 * c + 8, 3, 0)
    return cost


def _layer_norm(a: Mapping[str, Any]) -> Cost:
    n = _prod(a["normalized_shape"], 1)
    return _floats(n, n * a["bias"]) if a["elementwise_affine"] else Cost()


def _group_norm(a: Mapping[str, Any]) -> Cost:
    c = a["num_channels"]
    return _floats(c, c * a["bias"]) if a["affine"] else Cost()


def _rnn(gates: int) -> Callable[[Mapping[str, Any]], Cost]:
    def cost(a: Mapping[str, Any]) -> Cost:
        h, proj, dirs = a["hidden_size"], a.get("proj_size", 0), 2 if a["bidirectional"] else 1
        out = proj or h
        first = gates * h * (a["input_size"] + out)
        later = gates * h * (dirs * out + out)
        per_layer_extra = 2 * gates * h * a["bias"] + proj * h
        layers = a["num_layers"]
        elements = dirs * (first + (layers - 1) * later + layers * per_layer_extra)
        tensors = dirs * layers * (2 + 2 * a["bias"] + (proj > 0))
        return Cost(elements, _F32 * elements, tensors, 1)
    return cost


def _mha(a: Mapping[str, Any]) -> Cost:
    e, bias = a["embed_dim"], a["bias"]
    kdim, vdim = a["kdim"] or e, a["vdim"] or e
    proj = [e * (e + kdim + vdim)] if kdim == e and vdim == e else [e * e, e * kdim, e * vdim]
    kv = [e, e] if a["add_bias_kv"] else []
    return _floats(*proj, 3 * e * bias, *kv) + _floats(e * e, e * bias)  # + out_proj, a Linear


def _encoder_layer(a: Mapping[str, Any]) -> Cost:
    e, f, bias = a["d_model"], a["dim_feedforward"], a["bias"]
    attn = _mha({"embed_dim": e, "bias": bias, "kdim": None, "vdim": None, "add_bias_kv": False})
    ffn = _floats(e * f, f * bias) + _floats(f * e, e * bias)
    norms = _floats(e, e * bias) + _floats(e, e * bias)
    return attn + ffn + norms + Cost(modules=4)  # the layer itself and its three Dropouts


def _state(a: Mapping[str, Any]) -> Cost:
    n = _prod(a["shape"], 1)
    return Cost(n, n * dtype_by_name(a["dtype"]).itemsize, 1, 0)  # registered on its parent, not a module


def _embedding(a: Mapping[str, Any]) -> Cost:
    return _floats(a["num_embeddings"] * a["embedding_dim"])


def _prelu(a: Mapping[str, Any]) -> Cost:
    return _floats(a["num_parameters"])


# Layers holding state; every other row is one module with no tensors (a test keeps this in step with LAYERS).
FORMULAS: Mapping[str, Callable[[Mapping[str, Any]], Cost]] = {
    "Linear": _linear, "Bilinear": _bilinear,
    "Conv1d": _conv(1, False), "Conv2d": _conv(2, False), "Conv3d": _conv(3, False),
    "ConvTranspose1d": _conv(1, True), "ConvTranspose2d": _conv(2, True),
    "BatchNorm1d": _batch_norm, "BatchNorm2d": _batch_norm, "InstanceNorm2d": _batch_norm,
    "LayerNorm": _layer_norm, "GroupNorm": _group_norm, "Embedding": _embedding, "PReLU": _prelu,
    "LSTM": _rnn(4), "GRU": _rnn(3), "MultiheadAttention": _mha, "TransformerEncoderLayer": _encoder_layer,
    "Parameter": _state, "Buffer": _state,
}


def layer_cost(layer: str, args: Mapping[str, Any]) -> Cost:
    """The cost of one layer row with ``args`` (defaults filled in from the vocabulary)."""
    formula = FORMULAS.get(layer)
    if formula is None:
        return Cost()
    full = {a.name: args.get(a.name, a.default) for a in LAYERS[layer].args}
    if any(v is REQUIRED for v in full.values()):
        return Cost()  # validation reports the missing argument
    return formula(full)


def spec_cost(expanded: Mapping[str, Any]) -> Cost:
    """The whole expanded spec: every layer node, plus the root and one module per dotted-name level."""
    total = Cost()
    for _name, total in _running(expanded):
        pass
    return total


def _running(expanded: Mapping[str, Any]) -> Iterator[tuple[str, Cost]]:
    """(layer node name, the total up to and including it), in node order."""
    total = Cost()  # the root module
    levels = DottedTree()  # one dict lookup per part: no prefix string is built
    for node in expanded["nodes"]:
        if "layer" not in node:
            continue
        name = node["name"]
        new_levels = levels.add(name)
        total = total + layer_cost(node["layer"], node.get("args") or {}) + Cost(modules=new_levels)
        yield name, total


def check_cost(expanded: Mapping[str, Any]) -> Cost:
    """``spec_cost``, refused (LimitError naming the node that crosses) past max_param_bytes, max_tensors
    or max_modules."""
    total = Cost()
    for name, total in _running(expanded):
        where = f"node {name!r}"
        limits.check("max_param_bytes", total.bytes, where=where, what="parameter and buffer bytes implied by the spec")
        limits.check("max_tensors", total.tensors, where=where, what="parameter and buffer tensors implied by the spec")
        limits.check("max_modules", total.modules, where=where, what="modules implied by the spec")
    return total


def check_file_holds(cost: Cost, held: int, source: str) -> None:
    """A model file must hold a tensor for every one the spec implies: refuse before building if it cannot."""
    if cost.tensors > held:
        raise LimitError(f"the spec implies {cost.tensors:,} parameter and buffer tensors, the file holds {held:,}: "
                         "it cannot be this model's file", where=source)
