"""Repeated module calls -> spec blocks, so an exported transformer reads as its modules, not a flat list.

Each spec node of a captured graph belongs to the module calls it ran under
(``nn_module_stack``). The calls of one module class whose nodes are the same
once named relative to the call (op nodes by position, state tensors and layers
by their key below the module, values read from outside as ordered block inputs)
become instances of one block; literals that differ between them become block
parameters. Innermost classes go first, so an outer class's body may hold inner
block instances. Expansion gives back exactly the nodes, in the same order, and
every state_dict key (instance path + relative name); a class whose calls do
not line up (called twice, interleaved, another structure) stays flat.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..spec.graph import MAX_BLOCK_DEPTH
from ..spec.names import name_problem
from ._spec_text import same_data
from .build import arg_refs, rename_refs

__all__ = ["Owners", "blockify"]

Owners = dict[str, tuple[str, ...]]  # node name -> the module paths of the calls it ran in, outer first
_STATE = ("Parameter", "Buffer")
_MIN_BODY = 2  # a one-node body would only rename the node
_MAX_TRIES = 1000  # numbered op names tried before a call is left flat


@dataclasses.dataclass
class _Instance:
    path: str
    members: list[dict[str, Any]]
    inputs: list[str]  # outside names read, in first-read order
    outputs: list[str]  # member names read outside, in body order
    body: list[dict[str, Any]]  # relative form
    rel: dict[str, str]  # member value name -> relative name


def blockify(nodes: list[dict[str, Any]], outputs: Any, owners: Owners, classes: Mapping[str, str],
             inputs: set[str], reserved: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """(blocks, nodes, outputs): ``nodes`` with repeated module calls as block instances.

    ``classes`` maps a module path to its class name, ``inputs`` are the model's input
    names, ``reserved`` names no expanded node may take (state keys, module paths and
    their prefixes). No block found: ``({}, nodes, outputs)`` unchanged.
    """
    work = _hoisted_sizes(nodes, inputs)
    owners = {**owners, **{n["name"]: () for n in work if _is_input_size(n, inputs)}}
    blocks: dict[str, Any] = {}
    for cls in _classes_inner_first(owners, classes):
        paths = [p for p in _called_paths(owners) if classes.get(p) == cls]
        if len(paths) < 2:
            continue
        work, outputs = _make_blocks(cls, paths, work, outputs, owners, blocks, reserved | inputs)
    if not blocks:
        return {}, nodes, outputs
    return blocks, work, outputs


def _is_input_size(node: Mapping[str, Any], inputs: set[str]) -> bool:
    return node.get("op") == "size" and len(node.get("in", [])) == 1 and node["in"][0] in inputs


def _hoisted_sizes(nodes: list[dict[str, Any]], inputs: set[str]) -> list[dict[str, Any]]:
    """The sizes of model inputs first: shared by every call, they belong to none (same values, ints)."""
    sizes = [n for n in nodes if _is_input_size(n, inputs)]
    return sizes + [n for n in nodes if not _is_input_size(n, inputs)]


def _called_paths(owners: Owners) -> list[str]:
    seen: dict[str, None] = {}
    for chain in owners.values():
        for p in chain:
            seen.setdefault(p, None)
    return list(seen)


def _classes_inner_first(owners: Owners, classes: Mapping[str, str]) -> list[str]:
    """Class names ordered by how deep the calls under their instances nest (innermost first)."""
    height: dict[str, int] = {}
    for chain in owners.values():
        for i, p in enumerate(chain):
            height[p] = max(height.get(p, 0), len(chain) - 1 - i)
    by_class: dict[str, int] = {}
    for p, h in height.items():
        if p in classes:
            by_class[classes[p]] = max(by_class.get(classes[p], 0), h)
    return sorted(by_class, key=lambda c: (by_class[c], c))


def _make_blocks(cls: str, paths: list[str], nodes: list[dict[str, Any]], outputs: Any, owners: Owners,
                 blocks: dict[str, Any], reserved: set[str]) -> tuple[list[dict[str, Any]], Any]:
    """Blocks (one per distinct body shape with >= 2 calls) for the calls of ``cls``; the rewritten graph."""
    graph = _Graph(nodes, outputs, owners)
    found = [inst for p in paths if not any(q != p and p.startswith(q + ".") for q in paths)
             for inst in [_instance(p, graph, reserved, blocks)] if inst is not None]
    groups: dict[str, list[_Instance]] = {}
    for inst in found:
        groups.setdefault(_shape_key(inst), []).append(inst)
    chosen: list[tuple[str, list[_Instance]]] = []
    for group in groups.values():
        if len(group) >= 2 and _depth(group[0].body, blocks) < MAX_BLOCK_DEPTH:
            name = _block_name(cls, blocks)
            blocks[name] = _definition(group)
            chosen.append((name, group))
    if not chosen:
        return nodes, outputs
    return _replace(chosen, blocks, nodes, outputs, owners)


def _depth(body: list[dict[str, Any]], blocks: Mapping[str, Any]) -> int:
    """How deep the blocks used in ``body`` nest (0: none); the format allows MAX_BLOCK_DEPTH in all."""
    return max((1 + _depth(blocks[n["block"]]["nodes"], blocks) for n in body if "block" in n), default=0)


def _block_name(cls: str, blocks: Mapping[str, Any]) -> str:
    base = re.sub(r"\W", "_", cls) or "block"
    if not base[0].isalpha():
        base = "b_" + base
    name, i = base, 1
    while name in blocks:
        name, i = f"{base}_{i}", i + 1
    return name


def _reads_outside(nodes: list[dict[str, Any]], outputs: Any) -> dict[str, set[str]]:
    """name -> the names of the nodes reading it ("" for the model's outputs)."""
    readers: dict[str, set[str]] = {}
    for node in nodes:
        for ref in _node_reads(node):
            readers.setdefault(ref, set()).add(node["name"])
    for out in (outputs.values() if isinstance(outputs, dict) else outputs):
        readers.setdefault(out, set()).add("")
    return readers


def _node_reads(node: Mapping[str, Any]) -> list[str]:
    return [*node.get("in", []), *arg_refs(node.get("args"))]


class _Graph:
    """The current nodes, indexed once per class: by module call, by dotted prefix, by reader."""

    def __init__(self, nodes: list[dict[str, Any]], outputs: Any, owners: Owners) -> None:
        self.nodes = nodes
        self.names = {n["name"] for n in nodes}
        self.readers = _reads_outside(nodes, outputs)
        self.calls: dict[str, list[int]] = {}
        self.under: dict[str, int] = {}  # dotted prefix -> how many node names lie below it
        for i, node in enumerate(nodes):
            for p in owners.get(node["name"], ()):
                self.calls.setdefault(p, []).append(i)
            parts = node["name"].split(".")
            for k in range(1, len(parts)):
                prefix = ".".join(parts[:k])
                self.under[prefix] = self.under.get(prefix, 0) + 1


def _instance(path: str, graph: _Graph, reserved: set[str], blocks: Mapping[str, Any]) -> _Instance | None:
    """The call at ``path`` in relative form, or None when it cannot be a block instance."""
    index = graph.calls.get(path, [])
    if len(index) < _MIN_BODY or index != list(range(index[0], index[-1] + 1)):
        return None  # too small, or interleaved with other calls' nodes
    members = [graph.nodes[i] for i in index]
    member_names = {n["name"] for n in members}
    inside = sum(1 for n in member_names if n.startswith(path + "."))
    if path in graph.names or graph.under.get(path, 0) != inside:
        return None  # the instance's name is taken, or a node outside the call lies below it
    rel = _relative_names(path, members, lambda r: not _taken(f"{path}.{r}", graph, reserved))
    if rel is None:
        return None
    readers = graph.readers
    values = {v: rel[n["name"]] + v[len(n["name"]):] for n in members for v in _values(n, blocks)}
    ins: list[str] = []
    for node in members:
        for ref in _node_reads(node):
            if ref not in values and ref not in ins:
                ins.append(ref)
    outs = [v for v in values if readers.get(v, set()) - member_names]
    if not ins or not outs:
        return None
    local = dict(values)
    local.update(zip(ins, _input_names(len(ins), set(rel.values()))))
    body = [_relative(node, local) for node in members]
    return _Instance(path, members, ins, outs, body, values)


def _values(node: Mapping[str, Any], blocks: Mapping[str, Any]) -> list[str]:
    """The names a node's values go by: its own, or ``node.<output>`` for a block with several."""
    outs = blocks[node["block"]]["outputs"] if "block" in node else []
    return [f"{node['name']}.{o}" for o in outs] if len(outs) > 1 else [node["name"]]


def _taken(name: str, graph: _Graph, reserved: set[str]) -> bool:
    """Whether an op's expanded name collides with a node, a state key or module path, or a name's parent."""
    return name in graph.names or name in reserved or name in graph.under or bool(name_problem(name))


def _relative_names(path: str, members: list[dict[str, Any]], free: Callable[[str], bool]) -> dict[str, str] | None:
    """Member name -> name in the block: keys below ``path`` keep their suffix; ops are named by kind,
    numbered past the names ``free`` refuses (the expanded name would collide)."""
    rel: dict[str, str] = {}
    used: set[str] = set()
    for node in members:
        name = node["name"]
        if name.startswith(path + "."):
            rel[name] = name[len(path) + 1:]
        elif node.get("layer") in _STATE or "layer" in node:
            return None  # a state key or layer elsewhere: its name must come back as it is
        else:
            continue
        used.add(rel[name])
    for node in members:
        if node["name"] not in rel:
            base = _op_base(node)
            name, i = base, 1
            while name in used or any(u.startswith(name + ".") for u in used) or not free(name):
                if i > _MAX_TRIES:
                    return None
                name, i = f"{base}_{i}", i + 1
            rel[node["name"]] = name
            used.add(name)
    return rel


def _op_base(node: Mapping[str, Any]) -> str:
    kind = node.get("op") or node.get("block") or "node"
    parts = kind.split(".")
    base = parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[0]
    base = re.sub(r"\W", "_", base).lower() or "node"
    return base + "_op" if name_problem(base) else base


def _input_names(n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = "x" if i == 0 else f"x{i}"
        if name not in taken:
            out.append(name)
        i += 1
    return out


def _relative(node: dict[str, Any], local: Mapping[str, str]) -> dict[str, Any]:
    out = {k: v for k, v in node.items()}
    out["name"] = local[node["name"]]
    out["in"] = [local[r] for r in node.get("in", [])]
    if "args" in node:
        out["args"] = rename_refs(node["args"], local)
    return out


def _shape_key(inst: _Instance) -> str:
    """What must match between instances of one block: the body without argument literals."""
    nodes = [{k: (_skeleton(v) if k == "args" else v) for k, v in n.items()} for n in inst.body]
    return repr((nodes, len(inst.inputs)))


def _skeleton(args: Mapping[str, Any]) -> Any:
    """Args with literals blanked: keys stay (a default left out is another shape); refs stay."""
    return {k: (v if _has_ref(v) else "?") for k, v in args.items()}


def _has_ref(value: Any) -> bool:
    if isinstance(value, dict):
        return "ref" in value or any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False


def _definition(group: list[_Instance]) -> dict[str, Any]:
    """The block: the first instance's body with each literal that differs as a ``{param: ...}``."""
    first = group[0]
    params: list[str] = []
    nodes = []
    for i, node in enumerate(first.body):
        out = {k: v for k, v in node.items()}
        if "args" in node:
            args = dict(node["args"])
            for key, value in node["args"].items():
                if any(not same_data(inst.body[i]["args"][key], value) for inst in group[1:]):
                    param = _identifier(f"{node['name']}_{key}", params)
                    args[key] = {"param": param}
                    params.append(param)
            out["args"] = args
        nodes.append(_ordered(out))
    outs = _union_outputs(group)
    block: dict[str, Any] = {}
    if params:
        block["params"] = params
    block["inputs"] = _input_names(len(first.inputs), {n["name"] for n in first.body})
    block["nodes"] = nodes
    block["outputs"] = outs
    return block


def _identifier(text: str, taken: list[str]) -> str:
    """A parameter name from a node's name and argument: an identifier, unique in the block."""
    base = re.sub(r"\W", "_", text)
    base = base if base[:1].isalpha() else "p_" + base
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    keys = ["name", "op", "layer", "block", "in", "args"]
    return {k: node[k] for k in keys if k in node} | {k: v for k, v in node.items() if k not in keys}


def _union_outputs(group: list[_Instance]) -> list[str]:
    wanted = {inst.rel[o] for inst in group for o in inst.outputs}
    return [v for v in group[0].rel.values() if v in wanted]


def _replace(chosen: list[tuple[str, list[_Instance]]], blocks: Mapping[str, Any], nodes: list[dict[str, Any]],
             outputs: Any, owners: Owners) -> tuple[list[dict[str, Any]], Any]:
    """Each instance's nodes -> one block node; later readers of its outputs read the block node.
    All groups at once: an instance may read another group's output."""
    renames: dict[str, str] = {}
    at: dict[str, dict[str, Any]] = {}
    gone: set[str] = set()
    for name, group in chosen:
        block = blocks[name]
        single = len(block["outputs"]) == 1
        for inst in group:
            for member, rel in inst.rel.items():
                if rel in block["outputs"]:
                    renames[member] = inst.path if single else f"{inst.path}.{rel}"
            gone.update(n["name"] for n in inst.members)
            at[inst.members[0]["name"]] = _block_node(name, inst, block)
            owners[inst.path] = tuple(p for p in owners[inst.members[0]["name"]] if p != inst.path
                                      and inst.path.startswith(p + "."))
    out: list[dict[str, Any]] = []
    for node in nodes:
        if node["name"] in at:
            out.append(_renamed_node(at[node["name"]], renames))
        elif node["name"] not in gone:
            out.append(_renamed_node(node, renames))
    if isinstance(outputs, dict):
        outputs = {k: renames.get(v, v) for k, v in outputs.items()}
    else:
        outputs = [renames.get(v, v) for v in outputs]
    return out, outputs


def _block_node(name: str, inst: _Instance, block: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"name": inst.path, "block": name, "in": list(inst.inputs)}
    params = block.get("params", [])
    if params:
        values = {}
        for bnode, inode in zip(block["nodes"], inst.body):
            for key, value in bnode.get("args", {}).items():
                if isinstance(value, dict) and set(value) == {"param"}:
                    values[value["param"]] = inode["args"][key]
        node["args"] = {p: values[p] for p in params}
    return node


def _renamed_node(node: dict[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    reads = _node_reads(node)
    if not any(r in renames for r in reads):
        return node
    out = dict(node)
    if "in" in node:
        out["in"] = [renames.get(r, r) for r in node["in"]]
    if "args" in node:
        out["args"] = rename_refs(node["args"], renames)
    return out
