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
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import fx, nn

from ..errors import ExportError
from ..spec.names import name_problem
from ..vocab import LAYERS, OPS
from ._export_layers import layer_args, layer_name, normalise_value
from ._export_ops import ELIDED_METHODS, bind, rule_for, unknown_op_message
from ._sym import COMPOSITES, is_size_value
from ._trace import node_module, node_source

__all__ = ["GraphSpec", "graph_to_spec", "UnreadTensorsWarning"]


class UnreadTensorsWarning(UserWarning):
    """Some modules are never called by forward; their tensors are kept without their computation."""

@dataclasses.dataclass
class GraphSpec:
    """What the graph gave: spec nodes and outputs, and where each node came from (for messages)."""

    nodes: list[dict[str, Any]]
    outputs: list[str] | dict[str, str]
    sources: dict[str, str]  # spec node name -> "module path, file:line `code`"
    owners: dict[str, tuple[str, ...]] | None = None  # node -> module calls it ran in (torch.export path)


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
        self.state = dict(model.state_dict(keep_vars=True))
        self.state_nodes: dict[str, str] = {}  # state_dict key -> its Parameter/Buffer node

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
        self.keep_unread_tensors()
        return GraphSpec(self.nodes, outputs, self.sources)

    def keep_unread_tensors(self) -> None:
        """Tensors forward never reads as Parameter/Buffer nodes: the state_dict keys stay the original's.

        A module forward never calls (an auxiliary head in eval mode) is worth a warning. A tensor that a
        called module reads only in the other mode (BatchNorm's ``num_batches_tracked`` in eval) is not.
        """
        owned = set(self.state_nodes)
        for node in self.nodes:
            module = self.modules.get(node["name"]) if "layer" in node else None
            if module is not None:
                owned.update(f"{node['name']}.{k}" for k in module.state_dict())
        kept = []
        for key, tensor in self.state.items():
            if key in owned or name_problem(key) is not None:
                continue
            kind, args = state_node_args(tensor, isinstance(tensor, nn.Parameter))
            self.nodes.append({"name": key, **kind, "in": [], "args": args})
            self.used.add(key)
            self.sources[key] = "a tensor forward does not read"
            kept.append(key)
        called = {k.rpartition(".")[0] for k in owned}
        owners = sorted({k.rpartition(".")[0] or k for k in kept if k.rpartition(".")[0] not in called})
        if owners:
            warnings.warn(f"forward never calls module(s) {', '.join(owners[:6])}{' ...' if len(owners) > 6 else ''} "
                          "on the example (an auxiliary head in eval mode?); their tensors are kept as Parameter/"
                          "Buffer nodes, so the state_dict is complete, but the rebuilt model cannot run them",
                          UnreadTensorsWarning, stacklevel=4)

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
        inputs, call = self.layer_inputs(node, layer)
        self.emit(node, self.layer_node_name(node, module), {"layer": layer}, {**args, **call}, inputs)

    def layer_inputs(self, node: fx.Node, layer: str) -> tuple[list[fx.Node], dict[str, Any]]:
        """The call's tensor inputs, and the forward keywords its row can say (``need_weights=False``)."""
        calls = {a.name: a for a in LAYERS[layer].args if a.call}
        other = [k for k, v in node.kwargs.items() if k not in calls or isinstance(v, fx.Node)]
        if other:
            said = f" (a {layer} node can say {', '.join(calls)})" if calls else ""
            raise fail(node, f"{layer} called with keyword arguments ({', '.join(other)}); a layer node takes "
                             f"its inputs positionally{said}")
        call = {k: v for k, v in node.kwargs.items() if v != calls[k].default}
        args = list(node.args)
        while args and args[-1] is None:  # lstm(x, None) is lstm(x)
            args.pop()
        for a in args:
            if not isinstance(a, fx.Node):
                raise fail(node, f"{layer} called with {type(a).__name__} {a!r} as an input; every input of a "
                                 "layer node is one value computed by the model (pass tuples such as (h0, c0) "
                                 "is not supported in vocabulary version 1)")
        return args, call  # type: ignore[return-value]

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
        if node.target is operator.getitem:
            self.getitem(node)
            return
        if node.op == "call_function" and node.target in COMPOSITES and all(map(is_size_value, node.args)):
            self.composite(node, COMPOSITES[node.target])  # math.ceil(h / s), h % w of sizes
            return
        rule = rule_for(node)
        if rule is None:
            raise fail(node, unknown_op_message(node))
        try:
            bound = bind(rule, node)
        except ExportError as e:
            raise _with_source(e, node)
        args = {k: self.arg_value(node, rule.op, k, v) for k, v in bound.args.items()}
        inputs = [self.operand(node, v) for v in bound.inputs]
        self.emit(node, self.fresh(rule.op), {"op": rule.op}, _drop_op_defaults(rule.op, args), inputs)

    def composite(self, node: fx.Node, spell: Any) -> None:
        def step(op: str, inputs: list[Any], **args: Any) -> str:
            name = self.fresh(op)
            self.emit(node, name, {"op": op}, args, inputs)
            return name

        spell(step, lambda v: self.operand(node, v), *[self.operand(node, a) for a in node.args])

    def operand(self, node: fx.Node, value: Any) -> fx.Node | str:
        """An op operand: a computed value, or a number written as a `scalar` node (``x * 0.5``)."""
        if isinstance(value, fx.Node):
            return value
        name = self.fresh("scalar")
        self.nodes.append({"name": name, "op": "scalar", "in": [], "args": {"value": normalise_value(value)}})
        self.used.add(name)
        self.sources[name] = f"a literal operand of {node.name}"
        return name

    def getitem(self, node: fx.Node) -> None:
        source, index = node.args
        if isinstance(index, int) and not isinstance(index, bool):
            self.emit(node, self.fresh("getitem"), {"op": "getitem"}, {"index": index}, [source])
            return
        try:
            encoded = self.index_literal(node, index)
        except ExportError as e:
            raise _with_source(e, node)
        self.emit(node, self.fresh("index"), {"op": "index"}, {"index": encoded}, [source])

    def index_literal(self, node: fx.Node, index: Any, nested: bool = False) -> Any:
        """A Python index as spec data: ``x[:, 0]`` -> ``[":", 0]``; ``x[..., ::2]`` -> ``["...", "::2"]``."""
        if isinstance(index, tuple) and not nested:
            return [self.index_literal(node, i, True) for i in index]
        if index is None or (isinstance(index, int) and not isinstance(index, bool)):
            return index
        if index is Ellipsis:
            return "..."
        if isinstance(index, fx.Node):
            return {"ref": self.name_of(index)}
        if isinstance(index, slice):
            bounds = (index.start, index.stop, index.step)
            if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
                raise ExportError(f"slice {index!r} has bounds computed at run time; the spec's slices are "
                                  "literals ('1:3', '::2'); slice to a fixed size, or split with chunk / unbind")
            text = ":".join("" if b is None else str(b) for b in bounds[:2])
            return text + (f":{index.step}" if index.step is not None else "")
        raise ExportError(f"indexing with {_describe_index(index)} cannot be written in a spec; indices are "
                          "integers, slices with literal bounds, ..., None and computed values")

    def get_attr(self, node: fx.Node) -> None:
        """A tensor read directly in forward: a Parameter/Buffer node named by its state_dict key."""
        target = str(node.target)
        if target in self.state_nodes:  # read twice: one node
            self.value[node] = self.state_nodes[target]
            return
        tensor = self.state.get(target)
        if tensor is None:
            what = ("a tensor created or captured in forward was baked into the trace as a constant"
                    if target.startswith("_tensor_constant") else f"{target!r} is a tensor attribute outside "
                    "the state_dict")
            raise fail(node, f"{what}; a spec stores named tensors of the state_dict only: register it as a "
                             "parameter or a (persistent) buffer of the module, or compute it in forward")
        problem = name_problem(target)
        if problem:
            raise fail(node, f"the state_dict key cannot name a spec node: {problem}")
        self.emit(node, target, *state_node_args(tensor, isinstance(tensor, nn.Parameter)), [])
        self.state_nodes[target] = target

    # ------------------------------------------------------------------ values and names

    def arg_value(self, node: fx.Node, op: str, key: str, value: Any) -> Any:
        """An op argument as spec data; values computed by other nodes become {ref: name}."""
        if isinstance(value, fx.Node):
            arg = OPS[op].arg(key)
            if arg is None or arg.type not in ("size", "value"):
                raise fail(node, f"argument {key!r} of op {op!r} is computed at run time by {value.name!r}; "
                                 "the spec needs a literal there")
            return {"ref": self.name_of(value)}
        if isinstance(value, (tuple, list, torch.Size)):
            return [self.arg_value(node, op, key, v) for v in value]
        if isinstance(value, (slice, type(Ellipsis))) or not _is_literal(value):
            raise fail(node, f"argument {key}={value!r} of op {op!r} cannot be written in a spec")
        return normalise_value(value)

    def name_of(self, node: fx.Node | str) -> str:
        if isinstance(node, str):  # a scalar node's name
            return node
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


def state_node_args(tensor: torch.Tensor, parameter: bool,
                    where: str = "") -> tuple[dict[str, str], dict[str, Any]]:
    """The kind and args of a Parameter/Buffer node holding ``tensor`` (defaults left out); both capture paths."""
    from .tensors import dtype_row

    args: dict[str, Any] = {"shape": list(tensor.shape)}
    dtype = dtype_row(tensor.dtype, where=where).name
    if dtype != "float32":
        args["dtype"] = dtype
    if parameter and not tensor.requires_grad:
        args["requires_grad"] = False
    return {"layer": "Parameter" if parameter else "Buffer"}, args


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
