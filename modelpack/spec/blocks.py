"""Block expansion: a spec with ``blocks`` -> the same model as one flat list of nodes.

A node ``{name: layer1.0, block: basic, in: x, args: {channels: 64}}`` becomes the
block's nodes named ``layer1.0.<inner>``, in block order, with ``{param: channels}``
replaced by 64 and the block's inputs replaced by the values given in ``in``.
References to the block node then mean its output (``layer1.0``, one output) or
one of its outputs (``layer1.0.<output>``). Every expanded node gets an explicit
``in`` list. Expansion is deterministic: same document, same flat spec.

Each expanded node also gets an ``Origin`` telling where it was written and where
each substituted parameter value was written, so errors found after expansion
point at the right line of the document.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .. import limits
from ..errors import SpecError
from .graph import node_inputs, node_kind
from .yamlio import Path, format_path

__all__ = ["Origin", "expand_blocks", "expand_with_origins"]


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where an expanded node was written, and where its substituted values came from."""

    path: Path  # the node in the document: ("nodes", 3) or ("blocks", "basic", "nodes", 1)
    substituted: dict[Path, Path]  # path inside args -> path of the literal that replaced {param: ...}

    def locate(self, args_path: Path) -> Path:
        """The document path an error at ``args`` + ``args_path`` of the expanded node belongs to."""
        for k in range(len(args_path), 0, -1):
            source = self.substituted.get(tuple(args_path[:k]))
            if source is not None:
                return source + tuple(args_path[k:])
        return self.path + ("args",) + tuple(args_path)


# parameter name -> (value, where the value was written, how many values it holds). A literal is
# shared by the nodes that use it, never copied, and counted once per use against max_spec_values.
Params = dict[str, tuple[Any, Path, int]]


class _Expander:
    def __init__(self, blocks: dict[str, Any]) -> None:
        self.blocks = blocks
        self.nodes: list[dict[str, Any]] = []
        self.origins: dict[str, Origin] = {}
        self.values = 0  # values in the expanded nodes' args so far
        self.plain: dict[int, int] = {}  # id -> size of document values holding no placeholder

    def scope(self, nodes: list[dict[str, Any]], env: dict[str, str], prefix: str, params: Params,
              where: Path) -> dict[str, str]:
        """Expand one scope's nodes into self.nodes; ``env`` maps local names to expanded names."""
        previous = next(iter(env)) if len(env) == 1 else None
        for i, node in enumerate(nodes):
            path = where + ("nodes", i)
            inputs = [env.get(ref, ref) for ref in node_inputs(node, previous)]
            if node_kind(node) == "block":
                self.block(node, path, inputs, env, prefix, params)
            else:
                self.leaf(node, path, inputs, env, prefix, params)
            previous = node["name"]
        return env

    def leaf(self, node: dict[str, Any], path: Path, inputs: list[str], env: dict[str, str], prefix: str,
             params: Params) -> None:
        kind = "layer" if "layer" in node else "op"
        name = prefix + node["name"]
        substituted: dict[Path, Path] = {}
        out: dict[str, Any] = {"name": name, kind: node[kind]}
        if "args" in node:
            out["args"], size = _substitute(node["args"], params, env, (), substituted, self.plain)
            self.values += size
            limits.check("max_spec_values", self.values, where=format_path(path + ("args",)),
                         what="values in the args of the expanded nodes")
        out["in"] = inputs
        self.nodes.append(out)
        self.origins[name] = Origin(path, substituted)
        env[node["name"]] = name

    def block(self, node: dict[str, Any], path: Path, inputs: list[str], env: dict[str, str], prefix: str,
              params: Params) -> None:
        block = self.blocks.get(node["block"])
        if block is None:
            raise SpecError(f"unknown block {node['block']!r}; validate the spec before expanding it")
        inner: Params = {}
        for key, value in (node.get("args") or {}).items():
            sources: dict[Path, Path] = {}
            literal, size = _substitute(value, params, env, (), sources, self.plain)
            inner[key] = (literal, sources.get((), path + ("args", key)), size)
        inner_env = dict(zip(block["inputs"], inputs))
        name = prefix + node["name"]
        inner_env = self.scope(block["nodes"], inner_env, name + ".", inner, ("blocks", node["block"]))
        outputs = {out: inner_env.get(out, out) for out in block["outputs"]}
        for out, expanded in outputs.items():
            env[node["name"] + "." + out] = expanded
        if len(outputs) == 1:
            env[node["name"]] = next(iter(outputs.values()))


def _substitute(value: Any, params: Params, env: dict[str, str], path: Path,
                substituted: dict[Path, Path], plain: dict[int, int]) -> tuple[Any, int]:
    """An argument value with {param: p} replaced (by the shared literal) and {ref: name} renamed,
    and how many values it holds (a container counts as one, plus its items).

    A container with no placeholder inside comes back as itself, and is remembered in ``plain``
    (by id: the document outlives the expansion), so each block instance costs O(1) for it.
    """
    size = plain.get(id(value)) if isinstance(value, (dict, list)) else None
    if size is not None:
        return value, size
    out, size = _substitute_new(value, params, env, path, substituted, plain)
    if out is value and isinstance(value, (dict, list)):
        plain[id(value)] = size
    return out, size


def _substitute_new(value: Any, params: Params, env: dict[str, str], path: Path,
                    substituted: dict[Path, Path], plain: dict[int, int]) -> tuple[Any, int]:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("param"), str) and value["param"] in params:
            literal, source, size = params[value["param"]]
            substituted[path] = source
            return literal, size
        if len(value) == 1 and isinstance(value.get("ref"), str):
            return {"ref": env.get(value["ref"], value["ref"])}, 1
        out, total = {}, 1
        for k, v in value.items():
            out[k], size = _substitute(v, params, env, path + (k,), substituted, plain)
            total += size
        return _same_or(value, out, out.values()), total
    if isinstance(value, list):
        items, total = [], 1
        for i, v in enumerate(value):
            item, size = _substitute(v, params, env, path + (i,), substituted, plain)
            items.append(item)
            total += size
        return _same_or(value, items, items), total
    return value, 1


def _same_or(value: Any, new: Any, items: Any) -> Any:
    """``value`` itself when nothing inside it changed: a literal in a block body is shared by
    every instance, like a parameter's (so memory stays that of the document)."""
    olds = value.values() if isinstance(value, dict) else value
    return value if all(a is b for a, b in zip(items, olds)) else new


def expand_with_origins(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Origin]]:
    """The flat spec and, per expanded node name, where it was written."""
    expander = _Expander(data.get("blocks") or {})
    env = expander.scope(data["nodes"], {name: name for name in data.get("inputs") or {}}, "", {}, ())
    out = {k: copy.deepcopy(v) for k, v in data.items() if k not in ("blocks", "nodes", "outputs")}
    out["nodes"] = expander.nodes
    given = data["outputs"]
    out["outputs"] = ({k: env.get(v, v) for k, v in given.items()} if isinstance(given, dict)
                      else [env.get(v, v) for v in given])
    return out, expander.origins


def expand_blocks(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every block instantiated: no ``blocks`` key, explicit ``in`` on every node.

    Expects a valid spec (``validate`` it first); a spec without blocks comes back
    with only ``in`` made explicit. Argument values are shared with ``spec``, not
    copied (a block literal used by N nodes is one object): copy before mutating.
    """
    return expand_with_origins(spec)[0]
