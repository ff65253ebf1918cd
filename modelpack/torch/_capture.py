"""torch.export capture: an ExportedProgram's default ATen IR -> spec nodes, outputs and extra tensors.

The program is interpreted as ``torch.export.export`` returns it (before
``run_decompositions``): the IR that reproduces eager outputs bit for bit. Each
ATen call becomes an ``aten.*`` op node (vocabulary version 2); parameters and
buffers become ``Parameter``/``Buffer`` nodes named by their state_dict keys,
lifted constants and non-persistent buffers become ``Buffer`` nodes whose
tensors the file stores too; SymInt arithmetic becomes ``size``/``add``/``mul``
nodes, so the model runs at other sizes. Calls of vocabulary layers are then
folded back into layer nodes (:mod:`._fold`).
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram
from torch._export.verifier import SpecViolationError
from torch.export.graph_signature import InputKind

from ..errors import ExportError
from ..spec.names import name_problem
from ..vocab import OPS
from ._blockify import Owners
from ._export_graph import GraphSpec, UnreadTensorsWarning, state_node_args
from ._fold import fold_layers, foldable_paths, layer_calls
from ._hops import inline_grad_regions
from ._sym import COMPOSITES
from .build import arg_refs
from .tensors import dtype_row

__all__ = ["Captured", "ExportWarning", "capture", "program_to_spec", "row_name"]

# calls that check or constrain, and compute nothing a spec needs
_DROPPED = {"aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size",
            "aten.sym_constrain_range", "aten._assert_async.msg", "aten._assert_async"}
# ATen calls the converter writes without a row of their own (sizes, identities, device moves)
_HANDLED = {"aten.sym_size.int", "aten.to.device", "aten.alias", "aten.lift_fresh_copy"}
# SymInt arithmetic (operator.* on sizes) -> the vocabulary's int-capable ops
_SYM_OPS: Mapping[Any, tuple[str, dict[str, Any]]] = {
    operator.add: ("add", {}), operator.sub: ("sub", {}), operator.mul: ("mul", {}),
    operator.floordiv: ("div", {"rounding_mode": "floor"}), operator.truediv: ("div", {}),
    operator.neg: ("neg", {}), operator.pow: ("pow", {}),
}
_MEMORY_FORMATS = {torch.contiguous_format: "contiguous_format", torch.preserve_format: "preserve_format",
                   torch.channels_last: "channels_last", torch.channels_last_3d: "channels_last_3d"}


class ExportWarning(UserWarning):
    """Export changed or left out something the model computes or returns (the message says what)."""


@dataclasses.dataclass
class Captured:
    """What capture gave: the graph as spec data, and tensors the file stores beyond the state_dict."""

    graph: GraphSpec
    extra_state: dict[str, torch.Tensor]  # lifted constants, non-persistent buffers: node name -> tensor
    sizes: dict[str, str]  # symbol (s0) -> the size label used in the spec's input shapes


def row_name(target: Any) -> str:
    """The vocabulary row of an ATen overload: ``aten.add.Tensor``, ``aten.linear``."""
    op, _, overload = target.name().partition("::")[2].partition(".")
    return f"aten.{op}" if overload in ("", "default") else f"aten.{op}.{overload}"


def capture(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
            dynamic_shapes: Any) -> ExportedProgram:
    """``torch.export.export`` (non-strict), in-place ops functionalized; ExportError when torch gives up.

    The call signatures of vocabulary layers are preserved (which values went in and came out of each
    call), so their calls can fold back into layer nodes with their inputs and keywords in order."""
    try:
        program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False,
                                      preserve_module_call_signature=foldable_paths(model))
    except Exception as e:
        first = " ".join(str(e).strip().split("\n\n")[0].split())[:300]  # sympy wraps one sentence in lines
        raise ExportError(f"torch.export could not capture {type(model).__name__}: {type(e).__name__}: "
                          f"{first}") from e
    inline_grad_regions(program.graph_module)  # before torch's passes, so they see the regions' ops too
    if any(_mutates(n) for n in program.graph.nodes):
        program = _decompose(program, {})  # functionalize only: no op is decomposed
    return _decompose_outside_table(program)


def _decompose(program: ExportedProgram, table: dict[Any, Any]) -> ExportedProgram:
    """``run_decompositions``, keeping the layers' call signatures where torch can carry them.

    torch re-traces, and loses track of a ``getitem`` of a split that a layer takes as its input (timm's
    selective kernels); those calls' signatures are dropped (their ops then stay unfolded), then all.
    """
    for keep in (_all_signatures, _no_getitem_leaves, _root_only):
        _keep_signatures(program, keep)
        try:
            return program.run_decompositions(table)
        except (SpecViolationError, ValueError):  # torch's check of the signatures it carried over
            if keep is _root_only:
                raise
    raise AssertionError("unreachable")


def _keep_signatures(program: ExportedProgram, keep: Any) -> None:
    getitems = {n.name for n in program.graph.nodes if n.target is operator.getitem}
    for entry in program._module_call_graph:
        if entry.fqn and entry.signature is not None and not keep(entry.signature, getitems):
            entry.signature = None


def _all_signatures(signature: Any, getitems: set[str]) -> bool:
    return True


def _no_getitem_leaves(signature: Any, getitems: set[str]) -> bool:
    return not any(a.name in getitems for a in signature.inputs if hasattr(a, "name"))


def _root_only(signature: Any, getitems: set[str]) -> bool:
    return False


def _decompose_outside_table(program: ExportedProgram) -> ExportedProgram:
    """Ops the table has no row for, decomposed into table ops by torch's own decompositions, with a warning.

    Only those ops are decomposed (everything else stays as the default IR has
    it, which reproduces eager bit for bit); a decomposition may round
    differently, which export's bit-exact check then reports. An op with no
    decomposition, or one whose decomposition needs other missing ops, stays
    and is reported by name when the graph is converted.
    """
    done: list[str] = []
    for _ in range(3):  # a decomposition may use ops that need one too
        outside = {n.target for n in program.graph.nodes if n.op == "call_function"
                   and isinstance(n.target, torch._ops.OpOverload) and not _in_table(row_name(n.target))}
        table = {op: fn for op, fn in torch.export.default_decompositions().items() if op in outside}
        if not table:
            break
        program = _decompose(program, table)
        done += sorted(row_name(op) for op in table)
    if done:
        warnings.warn(f"export: {', '.join(done)} {'have' if len(done) > 1 else 'has'} no row in the vocabulary: "
                      "decomposed into table ops "
                      "(torch's own decomposition), which may round differently from the original kernel; "
                      "export still checks the rebuilt model bit for bit (atol= accepts a known difference)",
                      ExportWarning, stacklevel=5)
    return program


def _in_table(row: str) -> bool:
    """Whether the converter writes this ATen overload (a row, or a call it handles itself)."""
    packet = row.rsplit(".", 1)[0] if row.count(".") == 2 else row
    return row in OPS or row in _HANDLED or row in _DROPPED or packet in _DROPPED

def _mutates(node: fx.Node) -> bool:
    target = node.target
    return node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable


def program_to_spec(program: ExportedProgram, model: nn.Module, input_names: list[str | None],
                    fold: bool = True) -> Captured:
    """Spec nodes for ``program``; ``input_names`` gives each user input its spec name (None: a constant);
    ``fold=False`` leaves layer calls as their ops."""
    inline_grad_regions(program.graph_module)  # a program from torch.export directly (capture's are flat)
    converter = _Converter(program, model, input_names)
    converter.run()
    converter.prune()
    if fold:
        names = {node.name: v for node, v in converter.value.items() if isinstance(v, str)}
        nodes, renames = fold_layers(converter.nodes, converter.meta, model, converter.outputs_used(),
                                     layer_calls(program, names))
    else:
        nodes, renames = converter.nodes, {}
    outputs = converter.outputs
    if isinstance(outputs, dict):
        outputs = {k: renames.get(v, v) for k, v in outputs.items()}
    else:
        outputs = [renames.get(v, v) for v in outputs]
    nodes = [*nodes, *_unread_keys(nodes, model)]
    graph = GraphSpec(nodes, outputs, converter.sources, owners=_owners(nodes, converter.meta, model))
    return Captured(graph, converter.extra_state, converter.sizes)


def _owners(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]], model: nn.Module) -> Owners:
    """Node name -> the paths of the module calls it ran in (outer first), for blocks. A module called
    more than once is left out of every chain: its calls are not one instance each."""
    modules = dict(model.named_modules())
    keys: dict[str, set[str]] = {}
    chains: Owners = {}
    for node in nodes:
        stack = (meta.get(node["name"]) or {}).get("stack") or {}
        if stack and node.get("layer") not in ("Parameter", "Buffer"):
            chain = []
            for key, (path, _) in stack.items():
                if path and path in modules:
                    keys.setdefault(path, set()).add(key)
                    chain.append(path)
            chains[node["name"]] = tuple(dict.fromkeys(chain))
        elif node["name"] in modules or node.get("layer") in ("Parameter", "Buffer"):
            parts = node["name"].split(".")
            above = [".".join(parts[:i]) for i in range(1, len(parts))]
            chains[node["name"]] = tuple(p for p in above if p in modules)
        else:
            reads = [chains[r] for r in node.get("in", []) if r in chains]
            chains[node["name"]] = reads[0] if reads else ()
    once = {p for p, k in keys.items() if len(k) == 1}  # called, once (a ModuleList is never called)
    return {n: tuple(p for p in c if p in once) for n, c in chains.items()}


class _Converter:
    """One walk over the program's graph, naming each fx value by its spec node."""

    def __init__(self, program: ExportedProgram, model: nn.Module, input_names: list[str | None]) -> None:
        self.program = program
        self.model = model
        self.input_names = input_names
        self.value: dict[fx.Node, Any] = {}  # fx node -> spec name (or a literal for constant inputs)
        self.nodes: list[dict[str, Any]] = []
        self.meta: dict[str, dict[str, Any]] = {}  # spec node name -> {"stack": nn_module_stack, "fx": node}
        self.sources: dict[str, str] = {}
        self.extra_state: dict[str, torch.Tensor] = {}
        self.sizes: dict[str, str] = {}
        self.symbol_at: dict[str, tuple[str, int]] = {}  # symbol -> (input, dim) where it first appears
        self.size_nodes: dict[tuple[str, int], str] = {}  # (input, dim) -> its one size node
        self.outputs: list[str] | dict[str, str] = []
        self.state = dict(model.state_dict(keep_vars=True))
        # module paths and every dotted prefix of a tensor's key: an op named `lstm` beside the
        # Parameter `lstm.weight_ih_l0` would make one name both a node and a parent
        self.reserved = {".".join(parts[:i]) for key in (*self.state, *dict(model.named_modules()))
                         if key for parts in [key.split(".")] for i in range(1, len(parts) + 1)}

    # ------------------------------------------------------------------ walk

    def run(self) -> None:
        self._placeholders()
        for node in self.program.graph.nodes:
            if node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                self._output(node)
            elif node.op != "placeholder":
                raise ExportError(f"the exported graph holds a {node.op} node ({node.name}); modelpack reads "
                                  "call_function nodes only")

    def prune(self) -> None:
        """Drop nodes nothing reads (left by a skipped ``cat`` operand); state_dict tensors always stay."""
        live = self.outputs_used()
        for node in reversed(self.nodes):
            if node["name"] in live or (node.get("layer") in ("Parameter", "Buffer") and node["name"] in self.state):
                live.add(node["name"])
                live.update(node.get("in", []))
                live.update(arg_refs(node.get("args")))
        self.nodes = [n for n in self.nodes if n["name"] in live]
        self.meta = {k: v for k, v in self.meta.items() if k in live}
        self.extra_state = {k: v for k, v in self.extra_state.items() if k in live}

    def outputs_used(self) -> set[str]:
        return set(self.outputs.values() if isinstance(self.outputs, dict) else self.outputs)

    def _placeholders(self) -> None:
        by_name = {n.name: n for n in self.program.graph.nodes if n.op == "placeholder"}
        user = iter(self.input_names)
        for spec in self.program.graph_signature.input_specs:
            node = by_name.get(getattr(spec.arg, "name", ""))
            if spec.kind == InputKind.USER_INPUT:
                name = next(user, None)
                if node is not None:
                    self.value[node] = name if name is not None else getattr(spec.arg, "value", None)
                    if name is not None:
                        self._input_sizes(node, name)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self.value[node] = _StateRef(spec.target, spec.kind, spec.persistent)
            else:
                raise ExportError(f"the exported program has a {spec.kind.name} input ({spec.target}); "
                                  "modelpack cannot carry it")

    def _input_sizes(self, node: fx.Node, name: str) -> None:
        """Where each symbolic size first appears among the inputs: symbol -> (input, dim)."""
        val = node.meta.get("val")
        for d, size in enumerate(getattr(val, "shape", ())):
            expr = getattr(getattr(size, "node", None), "expr", None)
            if expr is not None and getattr(expr, "is_Symbol", False):
                self.symbol_at.setdefault(str(expr), (name, d))

    def _size(self, node: fx.Node) -> None:
        """``x.size(d)``: read from the input that first has that size, one node per size, so a size
        never hangs on an intermediate value (a layer call that computes one can still fold)."""
        expr = getattr(getattr(node.meta.get("val"), "node", None), "expr", None)
        where = self.symbol_at.get(str(expr)) if expr is not None else None
        if expr is not None and expr.is_number:  # a size torch.export specialized: the number itself
            self.value[node] = self._operand(int(expr), node)
        elif where is None:
            self._add(node, "size", [self._ref(node.args[0])], {"dim": node.args[1]})
        elif where in self.size_nodes:
            self.value[node] = self.size_nodes[where]
        else:
            self._add(node, "size", [where[0]], {"dim": where[1]})
            self.size_nodes[where] = self.value[node]

    def _state(self, ref: "_StateRef") -> str:
        """The Parameter/Buffer node of a state tensor, added at its first use."""
        name = ref.target
        if name in self.meta:
            return name
        tensor = self._tensor(ref)
        # not in the state_dict: a non-persistent buffer, a lifted constant
        self._emit(_state_node(name, tensor, ref.kind == InputKind.PARAMETER, name in self.state), None)
        if name not in self.state:
            self.extra_state[name] = tensor.detach()
        return name

    def _tensor(self, ref: "_StateRef") -> torch.Tensor:
        if ref.target in self.state:
            return self.state[ref.target]
        constant = self.program.constants.get(ref.target)
        if isinstance(constant, torch.Tensor):
            return constant
        raise ExportError(f"the exported program reads {ref.target!r}, which is neither in the state_dict nor "
                          "a lifted tensor constant")

    # ------------------------------------------------------------------ calls

    def _call(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            self._add(node, "getitem", [self._ref(node.args[0])], {"index": node.args[1]})
        elif target is torch.sym_float:  # int -> float of a size (x / n in Python): x * 1.0, exact below 2**53
            self._add(node, "mul", [self._operand(node.args[0], node), self._operand(1.0, node)], {})
        elif target in COMPOSITES:  # max/min/ceil/floor/% of sizes: a few int-capable ops
            self._composite(node, COMPOSITES[target])
        elif target in _SYM_OPS:
            op, extra = _SYM_OPS[target]
            inputs = [self._operand(a, node) for a in node.args]
            self._add(node, op, inputs, dict(extra))
        elif isinstance(target, torch._ops.OpOverload):
            self._aten(node, target)
        else:
            raise ExportError(f"the exported graph calls {getattr(target, '__name__', target)!r}, which modelpack "
                              "cannot express (higher-order ops such as cond/while_loop are not supported)",
                              where=_module_path(node))

    def _composite(self, node: fx.Node, spell: Any) -> None:
        def step(op: str, inputs: list[str], **args: Any) -> str:
            name = self._fresh(f"{node.name}_{op}")
            self._emit({"name": name, "op": op, "in": inputs, **({"args": args} if args else {})}, node)
            return name

        operands = [self._operand(a, node) for a in node.args]
        self.value[node] = spell(step, lambda v: self._operand(v, node), *operands)

    def _aten(self, node: fx.Node, target: Any) -> None:
        row = row_name(target)
        packet = row.rsplit(".", 1)[0] if row.count(".") == 2 else row
        if row in _DROPPED or packet in _DROPPED:
            return
        if row == "aten.dropout" and _dropout_p(node) > 0:
            # captured in eval mode as dropout(train=False): the live mode decides again in the rebuilt
            # model (nn.Dropout, F.dropout(x, p, self.training)), so .train() drops out as the original does
            self._add(node, "dropout", [self._ref(node.args[0])], {"p": _dropout_p(node)})
            return
        if _is_identity(row, node):  # a full slice, a cast to the same dtype, an alias: the input itself
            self.value[node] = self._ref(node.args[0])
            return
        if row == "aten.sym_size.int":
            self._size(node)
            return
        if row == "aten.to.device":  # the device is never stored: .to(x.device, dtype) is a dtype cast
            row, target = "aten.to.dtype", torch.ops.aten.to.dtype
            args = list(node.args)
            node_args, node_kwargs = (args[0], *args[2:]), dict(node.kwargs)
        else:
            node_args, node_kwargs = node.args, dict(node.kwargs)
        if row not in OPS:
            raise ExportError(f"{target.name()} is not in the modelpack vocabulary (version 2): the rule-generated "
                              "ATen table (vocab/aten.py) has no row for it", where=_module_path(node))
        entry = OPS[row]
        bound = _bind(target, node_args, node_kwargs)
        names = [a.name for a in target._schema.arguments]
        low, high = entry.inputs
        if high is None:
            values = bound[names[0]]
            if row == "aten.cat":
                values = [v for v in values if not _legacy_empty(v, node)]
                if len(values) == 1 and isinstance(values[0], fx.Node):  # nothing joined: the value itself
                    self.value[node] = self._ref(values[0])
                    return
            inputs = [self._operand(v, node) for v in values]
            rest = names[1:]
        else:
            inputs = [self._operand(bound[n], node) for n in names[:low]]
            rest = names[low:]
        args: dict[str, Any] = {}
        for name in rest:
            if name in entry.omitted or name not in bound:
                continue
            arg = entry.arg(name)
            value = self._literal(bound[name], node)
            if arg is not None and not arg.required and _same(value, arg.default):
                continue
            args[name] = value
        self._add(node, row, inputs, args)

    def _operand(self, value: Any, node: fx.Node) -> str:
        """An operand: a node, or a literal (``add(x, 0)``, SymInt arithmetic) as a ``scalar`` node."""
        if isinstance(value, fx.Node):
            return self._ref(value)
        name = self._fresh(f"{node.name}_const")
        self._emit({"name": name, "op": "scalar", "in": [], "args": {"value": value}}, node)
        return name

    def _literal(self, value: Any, node: fx.Node) -> Any:
        """An argument as spec data: nodes as ``{ref:}``, dtypes by name, lists recursively."""
        if isinstance(value, fx.Node):
            return {"ref": self._ref(value)}
        if isinstance(value, (list, tuple)):
            return [self._literal(v, node) for v in value]
        if isinstance(value, torch.dtype):
            return dtype_row(value, where=node.name).name
        if isinstance(value, torch.memory_format):
            return _MEMORY_FORMATS[value]
        if isinstance(value, (torch.device, torch.layout)):
            return None
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ExportError(f"{node.name}: argument {value!r} ({type(value).__name__}) cannot be written in a spec",
                          where=_module_path(node))

    def _ref(self, value: Any) -> str:
        if not isinstance(value, fx.Node):
            raise ExportError(f"expected a tensor value, got the literal {value!r}")
        name = self.value.get(value)
        if isinstance(name, _StateRef):
            return self._state(name)
        if not isinstance(name, str):
            raise ExportError(f"{value.name} has no value in the spec (a constant input {name!r} used as a tensor?)")
        return name

    def _add(self, node: fx.Node, op: str, inputs: list[str], args: dict[str, Any]) -> None:
        name = self._fresh(node.name)
        spec: dict[str, Any] = {"name": name, "op": op, "in": inputs}
        if args:
            spec["args"] = args
        self.value[node] = name
        self._emit(spec, node)

    def _emit(self, spec: dict[str, Any], node: fx.Node | None) -> None:
        self.nodes.append(spec)
        stack = dict(node.meta.get("nn_module_stack") or {}) if node is not None else {}
        self.meta[spec["name"]] = {"stack": stack, "fx": node}
        if node is not None:
            path = _module_path(node)
            self.sources[spec["name"]] = f"module {path or '(root)'}"

    def _fresh(self, base: str) -> str:
        if name_problem(base):  # fx names ops after their target: `to`, `float` would shadow Module attributes
            base = f"{base}_op"
        name, i = base, 1
        while name in self.meta or name in self.reserved:
            name, i = f"{base}_{i}", i + 1
        return name

    # ------------------------------------------------------------------ outputs

    def _output(self, node: fx.Node) -> None:
        values = list(node.args[0])
        names = [self._output_name(v) for v in values]
        out_spec = self.program.call_spec.out_spec
        keys = _output_keys(out_spec, len(names))
        self.outputs = dict(zip(keys, names)) if keys is not None else names

    def _output_name(self, value: Any) -> str:
        if not isinstance(value, fx.Node):
            raise ExportError(f"the model returns the constant {value!r}; a spec's outputs are tensors")
        return self._ref(value)


def _state_node(name: str, tensor: torch.Tensor, parameter: bool, persistent: bool = True) -> dict[str, Any]:
    """The ``Parameter``/``Buffer`` node holding ``tensor`` under its state_dict key ``name``."""
    kind, args = state_node_args(tensor, parameter, where=name)
    if not parameter and not persistent:
        args["persistent"] = False
    return {"name": name, **kind, "args": args, "in": []}


def _unread_keys(nodes: list[dict[str, Any]], model: nn.Module) -> list[dict[str, Any]]:
    """State nodes for the original's keys that forward never reads, so the state_dict keeps every key.

    T5's ``shared.weight`` is the encoder's embedding under a second key: the
    rebuilt model holds it too (one tensor in the file, one Parameter after
    loading). A module forward never calls (an auxiliary head in eval mode) keeps
    its tensors too, with a warning: the rebuilt model cannot run it.
    """
    modules = dict(model.named_modules())
    state = model.state_dict(keep_vars=True)
    held: set[str] = set()
    for node in nodes:
        layer = node.get("layer")
        if layer in ("Parameter", "Buffer"):
            held.add(node["name"])
        elif layer is not None and node["name"] in modules:
            held.update(f"{node['name']}.{k}" for k in modules[node["name"]].state_dict(keep_vars=True))
    ids = {id(state[k]) for k in held if k in state}
    unread = [k for k, t in state.items() if k not in held and not name_problem(k)]
    untied = [k for k in unread if id(state[k]) not in ids]
    if untied:
        owners = sorted({k.rpartition(".")[0] or k for k in untied})
        warnings.warn(f"forward never calls module(s) {', '.join(owners[:6])}{' ...' if len(owners) > 6 else ''} "
                      "on the example (an auxiliary head in eval mode?); their tensors are kept as Parameter/"
                      "Buffer nodes, so the state_dict is complete, but the rebuilt model cannot run them",
                      UnreadTensorsWarning, stacklevel=6)
    return [_state_node(k, state[k], isinstance(state[k], nn.Parameter)) for k in unread]


@dataclasses.dataclass(frozen=True)
class _StateRef:
    target: str
    kind: Any
    persistent: bool | None


_FULL = 2**62  # `x[:, 1:]` slices to the end with end=sys.maxsize


def _dropout_p(node: fx.Node) -> float:
    return float(node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.0))


def _is_identity(row: str, node: fx.Node) -> bool:
    """Whether the call returns its first input unchanged (the same values; no kernel needed)."""
    args, kwargs = node.args, node.kwargs
    if row in ("aten.alias", "aten.lift_fresh_copy"):  # not detach: it stops gradients in .train()
        return isinstance(args[0], fx.Node)
    if row == "aten.dropout":
        return _dropout_p(node) == 0
    if row == "aten.slice.Tensor":
        start = args[2] if len(args) > 2 else kwargs.get("start")
        end = args[3] if len(args) > 3 else kwargs.get("end")
        step = args[4] if len(args) > 4 else kwargs.get("step", 1)
        return start in (None, 0) and (end is None or (isinstance(end, int) and end >= _FULL)) and step == 1
    if row in ("aten.to.dtype", "aten.to.dtype_layout"):
        source = args[0].meta.get("val") if isinstance(args[0], fx.Node) else None
        dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
        plain = not kwargs.get("copy") and kwargs.get("memory_format") is None and (len(args) < 4 or not args[3])
        return source is not None and getattr(source, "dtype", None) == dtype and plain
    return False


def _legacy_empty(value: Any, cat: fx.Node) -> bool:
    """A ``cat`` operand of shape [0] that adds nothing: torch skips it (an empty KV cache's first update)."""
    val = value.meta.get("val") if isinstance(value, fx.Node) else None
    out = cat.meta.get("val")
    return (isinstance(val, torch.Tensor) and isinstance(out, torch.Tensor) and val.dim() == 1
            and isinstance(val.shape[0], int) and val.shape[0] == 0 and val.dtype == out.dtype and out.dim() > 1)


def _bind(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Argument name -> value for one call, by the overload's schema."""
    names = [a.name for a in target._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, bool) or isinstance(default, bool):
        return type(value) is type(default) and value == default
    if isinstance(value, list) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return type(value) in (int, float, str, type(None)) and value == default


def _module_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path or None


def _output_keys(out_spec: Any, n: int) -> list[str] | None:
    """Names for the outputs when the model returns a mapping (HF ModelOutput, dict); None for sequences."""
    if out_spec is None:
        return None
    context = getattr(out_spec, "context", None)
    children = out_spec.children() if hasattr(out_spec, "children") else []
    is_mapping = isinstance(context, (list, tuple)) and all(isinstance(k, str) for k in context) and context
    if not is_mapping:
        return None
    if len(context) != n or any(getattr(c, "num_leaves", 1) != 1 for c in children):
        raise ExportError(f"the model returns nested outputs ({', '.join(context)}); a spec returns tensors "
                          "by name: return one tensor per key")
    return list(context)
