"""Level 2: the graph checks, torch-free, on the document as written (blocks unexpanded).

The model and each block are *scopes*: a list of nodes that may use the scope's
inputs and the nodes above them, so cycles cannot be written, only forward
references (reported). Per scope we check names, references (``in``, op-arg
``{ref: name}``), arity against the vocabulary, tuple values taken apart with
``getitem``, block instantiations and their parameters, and outputs. Nodes and
inputs that reach no output are warnings: an unused layer may be legitimate (an
auxiliary head kept for its weights) but is usually a slip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from .. import limits
from .._dotted import DottedTree
from ..vocab import LAYERS, OPS
from .findings import Problem, did_you_mean, listing
from .names import identifier_problem, name_problem
from .yamlio import Path

__all__ = ["MAX_BLOCK_DEPTH", "graph_problems", "node_kind", "node_inputs", "walk_placeholders"]

# Blocks inside blocks: deep enough for real nets (stage > unit > branch), shallow
# enough that a mistake cannot blow up expansion.
MAX_BLOCK_DEPTH = 8
# Block nodes whose names prefix one reference (more than one only in a spec already in error).
_MAX_OWNERS = 4
# "Did you mean" searches per spec; past them, unknown names are reported with a short listing only.
_MAX_HINTS = 200


def node_kind(node: dict[str, Any]) -> str | None:
    """'layer', 'op' or 'block' (None for a malformed node)."""
    return next((k for k in ("layer", "op", "block") if k in node), None)


def node_inputs(node: dict[str, Any], previous: str | None) -> list[str]:
    """The names a node reads: its ``in`` (one name or a list), else the previous value."""
    given = node.get("in")
    if given is None:
        return [previous] if previous is not None else []
    return [given] if isinstance(given, str) else list(given)


def _entry(kind: str, name: Any) -> Any:
    """The table entry, None for an unknown name (the schema level reports those)."""
    return (LAYERS if kind == "layer" else OPS).get(name) if isinstance(name, str) else None


def walk_placeholders(value: Any, key: str, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every ``{key: name}`` (key 'ref' or 'param') inside an argument value."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(key), str):
            yield path, value[key]
        else:
            for k, v in value.items():
                yield from walk_placeholders(v, key, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_placeholders(v, key, path + (i,))


@dataclasses.dataclass
class _Value:
    """What a name stands for in a scope: how many values it produces, and block outputs."""

    arity: int | None  # 1 tensor, n > 1 a tuple, None a tuple of unknown length
    node: str | None  # the node producing it (None for a scope input)
    outputs: dict[str, int | None] | None = None  # a block node: its outputs and their arities


@dataclasses.dataclass
class _BlockInfo:
    inputs: list[str]
    params: list[str]
    outputs: dict[str, int | None]
    size: int  # nodes after expansion
    depth: int  # 1 + deepest block used inside


class _Checker:
    """Walks the model scope and, on demand, each block scope once."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.blocks: dict[str, Any] = data.get("blocks") or {}
        self.problems: list[Problem] = []
        self.info: dict[str, _BlockInfo | None] = {}
        self.stack: list[str] = []
        self.expandable = True
        self.hints = _MAX_HINTS

    def hint(self) -> bool:
        """Whether to look for a "did you mean" (a few hundred per spec: each costs a search)."""
        self.hints -= 1
        return self.hints >= 0

    def error(self, path: Path, message: str, *, key: bool = False, warning: bool = False) -> None:
        self.problems.append(Problem(path, message, "warning" if warning else "error", key=key))

    # ------------------------------------------------------------------ blocks

    def block(self, name: str, path: Path) -> _BlockInfo | None:
        """Check block ``name`` once (in use order) and return its interface, None if unusable."""
        if name in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(name):] + [name])
            self.error(path, f"block {name!r} uses itself ({cycle}); blocks cannot recurse")
            self.expandable = False
            return None
        if name not in self.info:
            self.stack.append(name)
            self.info[name] = self._check_block(name)
            self.stack.pop()
        return self.info[name]

    def _check_block(self, name: str) -> _BlockInfo | None:
        spec = self.blocks[name]
        where: Path = ("blocks", name)
        params = list(spec.get("params") or [])
        for i, p in enumerate(params):
            self._identifier(where + ("params", i), p, "parameter")
        for i, p in enumerate(spec["inputs"]):
            self._identifier(where + ("inputs", i), p, "block input")
        scope = _Scope(self, where, list(spec["inputs"]), params,
                       [where + ("inputs", i) for i in range(len(spec["inputs"]))])
        size, depth = scope.check(spec["nodes"])
        outputs = scope.outputs(spec["outputs"], where + ("outputs",))
        if depth + 1 > MAX_BLOCK_DEPTH:
            self.error(where, f"blocks nest {depth + 1} deep, more than {MAX_BLOCK_DEPTH}")
            self.expandable = False
        if outputs is None:
            return None
        return _BlockInfo(list(spec["inputs"]), params, outputs, size, depth + 1)

    def _identifier(self, path: Path, name: str, what: str) -> None:
        problem = identifier_problem(name, what)
        if problem:
            self.error(path, problem)

    # ------------------------------------------------------------------ model

    def _sizes(self) -> None:
        """Each bounded size is a symbolic size of some input, with min <= max."""
        labels = {d for decl in (self.data.get("inputs") or {}).values() if isinstance(decl, dict)
                  for d in decl.get("shape") or () if isinstance(d, str)}
        for label, bounds in (self.data.get("sizes") or {}).items():
            if label not in labels:
                self.error(("sizes", label), f"size {label!r} is not a symbolic size of any input (they are: "
                           f"{', '.join(sorted(labels)) or 'none'})", key=True)
            elif (isinstance(bounds, dict) and isinstance(bounds.get("min"), int)
                  and isinstance(bounds.get("max"), int) and bounds["min"] > bounds["max"]):
                self.error(("sizes", label), f"min {bounds['min']} is above max {bounds['max']}")

    def run(self) -> list[Problem]:
        inputs = list(self.data.get("inputs") or {})
        for name in inputs:
            self._identifier(("inputs", name), name, "input")
        scope = _Scope(self, (), inputs, None, [("inputs", name) for name in inputs])
        size, _ = scope.check(self.data["nodes"])
        scope.outputs(self.data["outputs"], ("outputs",))
        cap = limits.current().max_nodes
        if size > cap:
            self.error(("nodes",), f"the spec expands to {size:,} nodes, more than max_nodes={cap:,}; if it is "
                       "trusted, raise it with modelpack.limits.raised(max_nodes=...)")
            self.expandable = False
        self._sizes()
        for name in self.blocks:
            if name not in self.info:
                self.error(("blocks", name), f"block {name!r} is never used (its args are not checked)",
                           key=True, warning=True)
        return self.problems


class _Scope:
    """One list of nodes with its inputs: the model, or a block definition."""

    def __init__(self, checker: _Checker, where: Path, inputs: list[str], params: list[str] | None,
                 input_paths: list[Path]) -> None:
        self.c = checker
        self.where = where
        self.params = params  # None: the model scope, where {param: ...} is not allowed
        self.values: dict[str, _Value] = {name: _Value(1, None) for name in inputs}
        self.input_paths = input_paths
        self.nodes: list[dict[str, Any]] = []
        self.later: dict[str, int] = {}
        self.deps: dict[str, set[str]] = {}
        self.used_params: set[str] = set()
        self.owners = DottedTree()  # block nodes, for `node.output` references
        self.unresolved = False  # a failed reference makes "unused" warnings mostly noise

    def check(self, nodes: list[dict[str, Any]]) -> tuple[int, int]:
        """Check every node in order; return (expanded size, deepest block nesting)."""
        self.later = {n["name"]: i for i, n in reversed(list(enumerate(nodes)))}
        previous = next(iter(self.values)) if len(self.values) == 1 else None
        size, depth = 0, 0
        for i, node in enumerate(nodes):
            n, d = self.node(i, node, previous)
            size, depth, previous = size + n, max(depth, d), node["name"]
        self.nodes = nodes
        self._check_prefixes()
        for p in sorted(set(self.params or ()) - self.used_params):
            self.c.error(self.where + ("params",), f"parameter {p!r} is never used", warning=True)
        return size, depth

    def node(self, i: int, node: dict[str, Any], previous: str | None) -> tuple[int, int]:
        path = self.where + ("nodes", i)
        name = node["name"]
        self._name(path, name)
        kind = node_kind(node)
        refs = node_inputs(node, previous)
        if not refs and "in" not in node:
            self.c.error(path, f"node {name!r} must say which inputs it reads (in: ...); the default, "
                         "the previous node, applies only after the first node or with a single input")
        inputs = [self.resolve(ref, i, path + ("in",), name) for ref in refs]
        if kind == "op":
            for sub, ref in walk_placeholders(node.get("args"), "ref"):
                self.resolve(ref, i, path + ("args",) + sub, name)
        self._placeholders(node, path)
        if kind == "block":
            return self._block_node(node, path, inputs, bool(refs))
        entry = _entry(kind or "op", node.get(kind or "op"))
        if entry is not None:
            if refs or node.get("in") == []:  # `in: []`: only for what reads nothing (Parameter, scalar)
                self._arity(path, name, entry.name, entry.inputs, inputs)
            self._tuples(path, node, inputs)
            self.values[name] = _Value(entry.outputs, name)
        else:
            self.values[name] = _Value(1, name)
        return 1, 0

    def _name(self, path: Path, name: str) -> None:
        problem = name_problem(name)
        if problem:
            self.c.error(path + ("name",), problem)
        elif name in self.values:
            first = "an input" if self.values[name].node is None else "an earlier node"
            self.c.error(path + ("name",), f"duplicate name {name!r}: {first} has it already")

    def _check_prefixes(self) -> None:
        names = DottedTree()
        for name in self.values:
            names.add(name)
        for name in self.later:
            for k, _ in names.prefixes(name):
                parent = ".".join(name.split(".")[:k])
                self.c.error(self.where + ("nodes", self.later[name], "name"),
                             f"{name!r} would be a child of {parent!r}; a name cannot also be a parent")
                break

    # ------------------------------------------------------------------ references

    def resolve(self, ref: str, i: int, path: Path, user: str | None) -> _Value | None:
        """The value ``ref`` names for node ``i``; records the dependency; None (reported) if none."""
        value = self.values.get(ref)
        if value is not None and value.outputs is not None and len(value.outputs) > 1:
            first = next(iter(value.outputs))
            self.c.error(path, f"block node {ref!r} has several outputs ({', '.join(value.outputs)}); "
                         f"name one, e.g. {ref + '.' + first!r}")
            return None
        if value is None:
            value = self._block_output(ref)
        if value is None:
            self._unresolved(ref, i, path)
            return None
        if user is not None:
            self.deps.setdefault(user, set()).add(value.node if value.node is not None else ref)
        return value

    def _block_output(self, ref: str) -> _Value | None:
        """``node.output`` of an earlier block node."""
        found = list(self.owners.prefixes(ref))  # one in a valid scope: a name cannot also be a parent
        parts = ref.split(".") if found else []
        for k, owner in reversed(found[-_MAX_OWNERS:]):
            out = ".".join(parts[k:])
            if out in owner.outputs:
                return _Value(owner.outputs[out], owner.node)
        return None

    def _unresolved(self, ref: str, i: int, path: Path) -> None:
        self.unresolved = True
        j = self.later.get(ref)
        if j == i:
            self.c.error(path, f"node {ref!r} reads itself; a node can use only inputs and nodes above it")
        elif j is not None:
            self.c.error(path, f"{ref!r} is defined later (nodes[{j}]); a node can use only inputs and nodes "
                         "above it")
        else:
            fallback = f"; known here: {listing(self.values) or 'nothing'}"
            hint = did_you_mean(ref, self.values, fallback=fallback) if self.c.hint() else fallback
            self.c.error(path, f"unknown name {ref!r}{hint}")

    def _placeholders(self, node: dict[str, Any], path: Path) -> None:
        for sub, param in walk_placeholders(node.get("args"), "param"):
            if self.params is None:
                self.c.error(path + ("args",) + sub, "{param: ...} is allowed only inside blocks")
            elif param not in self.params:
                self.c.error(path + ("args",) + sub, f"unknown block parameter {param!r} (parameters: "
                             f"{listing(self.params) or 'none'})")
            else:
                self.used_params.add(param)

    # ------------------------------------------------------------------ arity

    def _arity(self, path: Path, name: str, what: str, bounds: tuple[int, int | None],
               inputs: list[_Value | None]) -> None:
        low, high = bounds
        n = len(inputs)
        if n < low or (high is not None and n > high):
            want = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            self.c.error(path + ("in",), f"{what} takes {want} input{'s' if want != '1' else ''}, "
                         f"node {name!r} gives {n}")

    def _tuples(self, path: Path, node: dict[str, Any], inputs: list[_Value | None]) -> None:
        is_getitem = node.get("op") == "getitem"
        for value in inputs:
            if value is None or value.arity == 1:
                continue
            if not is_getitem:
                count = "several" if value.arity is None else str(value.arity)
                self.c.error(path + ("in",), f"{value.node!r} produces {count} values (a tuple); take one "
                             "with a getitem node first")
            elif value.arity is not None:
                index = (node.get("args") or {}).get("index")
                if isinstance(index, int) and not -value.arity <= index < value.arity:
                    self.c.error(path + ("args", "index"), f"index {index} is out of range: {value.node!r} "
                                 f"produces {value.arity} values")

    def _block_node(self, node: dict[str, Any], path: Path, inputs: list[_Value | None],
                    given: bool) -> tuple[int, int]:
        name, block = node["name"], node["block"]
        if block not in self.c.blocks:
            fallback = f"; blocks: {listing(self.c.blocks) or 'none defined'}"
            hint = did_you_mean(block, self.c.blocks, fallback=fallback) if self.c.hint() else fallback
            self.c.error(path + ("block",), f"unknown block {block!r}{hint}")
            self.c.expandable = False
            self.values[name] = _Value(1, name)
            return 1, 0
        info = self.c.block(block, path + ("block",))
        if info is None:
            self.values[name] = _Value(1, name)
            return 1, 0
        if given:
            self._arity(path, name, f"block {block!r}", (len(info.inputs), len(info.inputs)), inputs)
        self._tuples(path, node, inputs)
        self._block_args(node, path, info)
        arity = next(iter(info.outputs.values())) if len(info.outputs) == 1 else len(info.outputs)
        self.values[name] = _Value(arity, name, info.outputs)
        self.owners.add(name, self.values[name])
        return info.size, info.depth

    def _block_args(self, node: dict[str, Any], path: Path, info: _BlockInfo) -> None:
        args = node.get("args") or {}
        for p in info.params:
            if p not in args:
                self.c.error(path + ("args",), f"block {node['block']!r} needs parameter {p!r} "
                             f"(parameters: {', '.join(info.params)})")
        for key in args:
            if key not in info.params:
                self.c.error(path + ("args", key), f"unknown parameter {key!r} for block {node['block']!r} "
                             f"(parameters: {', '.join(info.params) or 'none'})", key=True)
        for sub, _ in walk_placeholders(args, "ref"):
            self.c.error(path + ("args",) + sub, "a block parameter is a literal; pass values through `in:`")

    # ------------------------------------------------------------------ outputs and liveness

    def outputs(self, given: Any, path: Path) -> dict[str, int | None] | None:
        """Resolve the scope's outputs, flag unused nodes; the outputs' arities (None if unresolved)."""
        pairs = list(given.items()) if isinstance(given, dict) else [(n, n) for n in given]
        arities: dict[str, int | None] = {}
        roots: set[str] = set()
        for j, (label, ref) in enumerate(pairs):
            where = path + ((label,) if isinstance(given, dict) else (j,))
            value = self.resolve(ref, len(self.later), where, None)
            if value is None:
                continue
            arities[label] = value.arity
            roots.add(value.node if value.node is not None else ref)
        if not self.unresolved:  # after a failed reference, "unused" would mostly repeat that error
            self._unused(roots)
        return None if len(arities) < len(pairs) else arities

    def _unused(self, roots: set[str]) -> None:
        live, todo = set(), list(roots)
        while todo:
            name = todo.pop()
            if name not in live:
                live.add(name)
                todo.extend(self.deps.get(name, ()))
        for i, node in enumerate(self.nodes):
            if node["name"] not in live:
                self.c.error(self.where + ("nodes", i, "name"), f"node {node['name']!r} does not contribute to "
                             "any output", warning=True)
        for name, path in zip(self.values, self.input_paths):
            if name not in live:
                self.c.problems.append(Problem(path, f"input {name!r} is never used", "warning", key=True))


def graph_problems(data: dict[str, Any]) -> tuple[list[Problem], bool]:
    """All graph problems of a schema-valid document, and whether its blocks can be expanded."""
    checker = _Checker(data)
    problems = checker.run()
    return problems, checker.expandable
