"""A traced fx graph -> the spec's ``nodes`` and ``outputs`` (plain data).

One fx node becomes at most one spec node, in graph (execution) order:
``call_module`` of a vocabulary layer -> a layer node named by the module's
qualified path (so state_dict keys are unchanged); a recognised function or
method -> an op node with a short unique name (``relu``, ``add_1``); a
layout-only method (``contiguous``) -> nothing (its users read its input).
Every refusal names the module path, the model's source line and the construct.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import fx, nn

from ..errors import ExportError
from ..spec.names import name_problem
from ..vocab import OPS
from ._export_layers import layer_args, layer_name, normalise_value
from ._export_ops import ELIDED_METHODS, SHAPE_METHODS, bind, public_name, rule_for, unknown_op_message
from ._trace import node_module, node_source

__all__ = ["GraphSpec", "graph_to_spec"]

_FREE_PARAMS = ("free parameters (used in forward without a layer that owns them) are not in vocabulary "
                "version 1; they arrive with the real-model coverage issue. Until then, own the tensor by a "
                "vocabulary layer (nn.Embedding for a table, nn.Linear for a matrix) or keep it out of forward")
_SHAPES = ("shape arithmetic (x.size(), x.shape, x.dim()) is not in vocabulary version 1; for "
           "x.view(x.size(0), -1) write torch.flatten(x, 1) or nn.Flatten(), which keep the batch size free")


@dataclasses.dataclass
class GraphSpec:
    """What the graph gave: spec nodes and outputs, and where each node came from (for messages)."""

    nodes: list[dict[str, Any]]
    outputs: list[str] | dict[str, str]
    sources: dict[str, str]  # spec node name -> "module path, file:line `code`"


def graph_to_spec(graph: fx.Graph, model: nn.Module, inputs: list[str]) -> GraphSpec:
    """Convert ``graph`` (traced from ``model``; placeholders named ``inputs``) to spec nodes."""
    return _Converter(graph, model, inputs).run()


def fail(node: fx.Node, message: str, *, cause: BaseException | None = None) -> ExportError:
    """An ExportError at ``node``: the module path as ``where``, the source line in the message."""
    source = node_source(node)
    at = f" (at {source})" if source else ""
    err = ExportError(f"{message}{at}", where=node_module(node))
    if cause is not None:
        err.__cause__ = cause
    return err


class _Converter:
    """Walks the graph once; keeps the name of each fx node's value in the spec."""

    def __init__(self, graph: fx.Graph, model: nn.Module, inputs: list[str]) -> None:
        self.graph = graph
        self.modules = dict(model.named_modules())
        self.inputs = inputs
        self.value: dict[fx.Node, str] = {}  # fx node -> spec name of its value
        self.nodes: list[dict[str, Any]] = []
        self.sources: dict[str, str] = {}
        self.used: set[str] = set(inputs)
        self.next_index: dict[str, int] = {}
        self.reserved = _reserved_names(graph)
        self.previous: str | None = inputs[0] if len(inputs) == 1 else None

    def run(self) -> GraphSpec:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        for node, name in zip(placeholders, self.inputs, strict=True):
            self.value[node] = name
        outputs: Any = None
        for node in _live_nodes(self.graph):
            if node.op == "output":
                outputs = self.outputs(node)
            elif node.op != "placeholder":
                self.convert(node)
        return GraphSpec(self.nodes, outputs, self.sources)

    # ------------------------------------------------------------------ per node

    def convert(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self.layer(node)
        elif node.op in ("call_function", "call_method"):
            self.op(node)
        elif node.op == "get_attr":
            self.get_attr(node)
        else:  # pragma: no cover - fx has no other node kinds
            raise fail(node, f"internal: unexpected fx node kind {node.op!r}")

    def layer(self, node: fx.Node) -> None:
        path = str(node.target)
        module = self.modules[path]
        try:
            layer = layer_name(module, path)
            args = layer_args(module, layer, path)
        except ExportError as e:
            raise _with_source(e, node)
        inputs = self.layer_inputs(node, layer)
        self.emit(node, self.layer_node_name(node, module), {"layer": layer}, args, inputs)

    def layer_inputs(self, node: fx.Node, layer: str) -> list[fx.Node]:
        if node.kwargs:
            raise fail(node, f"{layer} called with keyword arguments ({', '.join(node.kwargs)}); a layer node "
                             "takes its inputs positionally and no call options in vocabulary version 1")
        args = list(node.args)
        while args and args[-1] is None:  # lstm(x, None) is lstm(x)
            args.pop()
        for a in args:
            if not isinstance(a, fx.Node):
                raise fail(node, f"{layer} called with {type(a).__name__} {a!r} as an input; every input of a "
                                 "layer node is one value computed by the model (pass tuples such as (h0, c0) "
                                 "is not supported in vocabulary version 1)")
        return args  # type: ignore[return-value]

    def layer_node_name(self, node: fx.Node, module: nn.Module) -> str:
        path = str(node.target)
        problem = name_problem(path)
        if problem:
            raise fail(node, f"the module path cannot name a spec node: {problem}")
        if path not in self.used:
            return path
        if _has_state(module):
            raise fail(node, f"module {path!r} is called more than once; its weights are shared between the "
                             "calls, which a spec (one node per layer call) cannot say in vocabulary version 1")
        return self.fresh(path)  # a stateless layer used twice (ResNet's relu): one node per call

    def op(self, node: fx.Node) -> None:
        if node.op == "call_method" and node.target in ELIDED_METHODS:
            self.alias(node, node.args[0])
            return
        if _is_shape_arithmetic(node):
            raise fail(node, f"{public_name(node.target)}: {_SHAPES}")
        if node.target is operator.getitem:
            self.getitem(node)
            return
        rule = rule_for(node)
        if rule is None:
            raise fail(node, unknown_op_message(node))
        try:
            bound = bind(rule, node)
        except ExportError as e:
            raise _with_source(e, node)
        args = {k: self.arg_value(node, rule.op, k, v) for k, v in bound.args.items()}
        self.emit(node, self.fresh(rule.op), {"op": rule.op}, _drop_op_defaults(rule.op, args), bound.inputs)

    def getitem(self, node: fx.Node) -> None:
        source, index = node.args
        if not isinstance(index, int) or isinstance(index, bool):
            raise fail(node, f"indexing with {_describe_index(index)}: the getitem op takes one integer index "
                             "(a tuple element, or a row of dim 0) in vocabulary version 1; slicing arrives "
                             "with the real-model coverage issue. Use chunk, or a layer")
        self.emit(node, self.fresh("getitem"), {"op": "getitem"}, {"index": index}, [source])

    def get_attr(self, node: fx.Node) -> None:
        target = str(node.target)
        if target.startswith("_tensor_constant"):
            raise fail(node, "a tensor created or captured in forward was baked into the trace as a constant; "
                             + _FREE_PARAMS)
        raise fail(node, f"{target!r} is read directly in forward; " + _FREE_PARAMS)

    # ------------------------------------------------------------------ values and names

    def arg_value(self, node: fx.Node, op: str, key: str, value: Any) -> Any:
        """An op argument as spec data; values computed by other nodes become {ref: name}."""
        if isinstance(value, fx.Node):
            arg = OPS[op].arg(key)
            if arg is None or arg.type != "value":
                raise fail(node, f"argument {key!r} of op {op!r} is computed at run time by {value.name!r}; "
                                 "the spec needs a literal there")
            return {"ref": self.name_of(value)}
        if isinstance(value, (tuple, list, torch.Size)):
            return [self.arg_value(node, op, key, v) for v in value]
        if isinstance(value, (slice, type(Ellipsis))) or not _is_literal(value):
            raise fail(node, f"argument {key}={value!r} of op {op!r} cannot be written in a spec")
        return normalise_value(value)

    def name_of(self, node: fx.Node) -> str:
        if node not in self.value:
            raise fail(node, f"internal: {node.name!r} is used before it was converted")
        return self.value[node]

    def fresh(self, base: str) -> str:
        """``base``, ``base_1``, ``base_2``...: the first that names nothing yet and is a valid name.

        Names are never released, so the search resumes where the last one for ``base`` ended.
        """
        n = self.next_index.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            if name not in self.used and name not in self.reserved and name_problem(name) is None:
                self.next_index[base] = n + 1
                return name
            n += 1

    def alias(self, node: fx.Node, source: Any) -> None:
        self.value[node] = self.name_of(source)

    def emit(self, node: fx.Node, name: str, kind: dict[str, str], args: Mapping[str, Any],
             inputs: Iterable[fx.Node]) -> None:
        """Append the spec node; ``in`` is left out when it is the previous value (the spec's default)."""
        spec: dict[str, Any] = {"name": name, **kind}
        names = [self.name_of(i) for i in inputs]
        if names != [self.previous]:
            spec["in"] = names[0] if len(names) == 1 else names
        if args:
            spec["args"] = dict(args)
        self.nodes.append(spec)
        self.used.add(name)
        self.value[node] = name
        self.previous = name
        where, source = node_module(node), node_source(node)
        self.sources[name] = ", ".join(p for p in (f"module {where!r}" if where else None, source) if p)

    def outputs(self, node: fx.Node) -> list[str] | dict[str, str]:
        result = node.args[0]
        if isinstance(result, fx.Node):
            return [self.name_of(result)]
        if isinstance(result, (tuple, list)) and result and all(isinstance(r, fx.Node) for r in result):
            return [self.name_of(r) for r in result]
        if isinstance(result, dict) and result and all(isinstance(r, fx.Node) for r in result.values()):
            return {str(k): self.name_of(v) for k, v in result.items()}
        raise fail(node, f"forward returns {_describe_output(result)}; a spec's outputs are one tensor, a "
                         "tuple/list of tensors, or a dict of str -> tensor, each computed by the model")


# ----------------------------------------------------------------------------- helpers


def _reserved_names(graph: fx.Graph) -> set[str]:
    """Paths of the called modules and every prefix of them: op names must not take these."""
    out: set[str] = set()
    for node in graph.nodes:
        if node.op == "call_module":
            parts = str(node.target).split(".")
            out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _live_nodes(graph: fx.Graph) -> list[fx.Node]:
    """Nodes in order, minus pure calls whose values nothing reads (``_, h = gru(x)`` reads no ``_``).

    Layer calls stay even when unused: they own weights the state_dict carries.
    """
    dead: set[fx.Node] = set()
    for node in reversed(list(graph.nodes)):
        pure = node.op in ("call_function", "call_method", "get_attr")
        if pure and all(user in dead for user in node.users):
            dead.add(node)
    return [n for n in graph.nodes if n not in dead]


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _is_shape_arithmetic(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in SHAPE_METHODS
    return node.target is getattr and len(node.args) > 1 and node.args[1] in ("shape", "ndim")


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, torch.dtype))


def _describe_index(index: Any) -> str:
    if isinstance(index, slice):
        return "a slice (x[a:b])"
    if isinstance(index, tuple):
        return "a tuple of indices (x[:, 0])"
    if isinstance(index, fx.Node):
        return f"a value computed by the model ({index.name!r})"
    return f"{type(index).__name__} {index!r}"


def _describe_output(result: Any) -> str:
    if isinstance(result, (tuple, list)):
        inner = ", ".join(type(r).__name__ if not isinstance(r, fx.Node) else "tensor" for r in result)
        return f"a {type(result).__name__} of ({inner})"
    return f"a {type(result).__name__}" if not isinstance(result, fx.Node) else "a tensor"


def _drop_op_defaults(op: str, args: dict[str, Any]) -> dict[str, Any]:
    from ._export_layers import drop_defaults

    return drop_defaults(OPS[op], args)


def _with_source(e: ExportError, node: fx.Node) -> ExportError:
    """Add the module path and source line to an error raised while reading one node."""
    source = node_source(node)
    if source and source not in e.message:
        e.message = f"{e.message} (at {source})"
    if e.where is None:
        e.where = node_module(node)
    e.args = (e._render(),)
    return e
