"""Fold the ATen ops of one call of a vocabulary layer back into one layer node.

torch.export records, for each node, the stack of modules it ran under
(``nn_module_stack``). The consecutive ops of one call of a module whose exact
class is a vocabulary layer (``nn.Linear``, ``nn.Conv2d``, ``nn.LayerNorm``...)
become one layer node at the module's path, with the arguments read back from
the module, so the spec reads as layers again. A call is left unfolded (its ops
stay, exact as they are) whenever folding could change what is computed: the
module is called more than once, its tensors are read elsewhere (tied weights)
or it reads tensors it does not own, it takes more than one input or gives
more than one output, or its settings are ones the row cannot say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ExportError
from ..vocab import LAYERS
from ._export_layers import LAYER_TYPES, layer_args
from .build import arg_refs

__all__ = ["fold_layers"]

_STATE = ("Parameter", "Buffer")
# the capture's SymInt nodes (sizes and their arithmetic): not tensors a layer takes or gives, so a
# layer call may read them from outside, and the ones computed inside stay for whoever reads them
_SIZE_OPS = frozenset({"size", "add", "sub", "mul", "div", "neg", "pow"})


def fold_layers(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]], model: nn.Module,
                outputs: set[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``nodes`` with every foldable layer call replaced by its layer node (in place of the call's ops),
    and the renames (old value name -> layer path) the outputs need too."""
    modules = dict(model.named_modules())
    tensors = dict(model.state_dict(keep_vars=True))
    groups = _groups(nodes, meta, modules)
    calls: dict[str, int] = {}
    for path, _ in groups:
        calls[path] = calls.get(path, 0) + 1
    readers = _readers(nodes)
    taken = {n["name"] for n in nodes}
    by_name = {n["name"]: n for n in nodes}
    found = []
    for path, members in groups:
        ops = _foldable(members, by_name, readers, outputs)
        if ops:
            found.append((ops, _fold(path, ops, modules[path], by_name, readers, outputs, taken, calls[path],
                                     tensors)))
    folds = [(members, f) for members, f in found if f is not None]
    # a state node leaves the spec only with every call that reads it folded into a layer owning it
    # (tied weights: the embedding and the output projection each own the one tensor under their key)
    while True:
        folded = {m for members, _ in folds for m in members}
        kept = [(members, f) for members, f in folds if not any(readers.get(s, set()) - folded for s in f[2])]
        if len(kept) == len(folds):
            break
        folds = kept
    renames: dict[str, str] = {}
    replace: dict[str, dict[str, Any] | None] = {}
    for members, (layer_node, output, state) in folds:
        for name in (*members, *state):
            replace[name] = None
        replace[members[-1]] = layer_node
        renames[output] = layer_node["name"]
    out: list[dict[str, Any]] = []
    for node in nodes:
        if node["name"] in replace:
            node = replace[node["name"]]  # type: ignore[assignment]
            if node is None:
                continue
        out.append(_renamed(node, renames))
    return out, renames


def _groups(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]],
            modules: Mapping[str, nn.Module]) -> list[tuple[str, list[str]]]:
    """(module path, the names of its consecutive op nodes) per call of a vocabulary layer."""
    groups: list[tuple[str, list[str]]] = []
    current: tuple[str, str] | None = None  # (stack key, path)
    for node in nodes:
        if node.get("layer") in _STATE:
            continue  # added at first use: floats inside whichever call reads it first
        key = _layer_call(meta[node["name"]]["stack"], modules)
        if key is None:
            current = None
            continue
        if current != key:
            groups.append((key[1], []))
            current = key
        groups[-1][1].append(node["name"])
    return groups


def _foldable(members: list[str], by_name: Mapping[str, dict[str, Any]], readers: Mapping[str, set[str]],
              outputs: set[str]) -> list[str]:
    """The call's nodes that folding removes: all but the sizes read after it (and the sizes those need),
    which stay; [] when such a size is computed from one of the call's tensors (it could not stay)."""
    group = set(members)
    keep = [m for m in members if by_name[m].get("op") in _SIZE_OPS and (readers.get(m, set()) - group or m in outputs)]
    todo, kept = list(keep), set(keep)
    while todo:
        for name in _reads(by_name[todo.pop()]):
            if name in group and name not in kept:
                if by_name[name].get("op") not in _SIZE_OPS and by_name[name].get("op") != "scalar":
                    return []
                kept.add(name)
                todo.append(name)
    return [m for m in members if m not in kept]


def _layer_call(stack: Mapping[str, Any], modules: Mapping[str, nn.Module]) -> tuple[str, str] | None:
    """The outermost module in the stack whose exact class is a vocabulary layer: (stack key, path)."""
    for key, (path, _) in stack.items():
        module = modules.get(path)
        if path and module is not None and type(module) in LAYER_TYPES and LAYER_TYPES[type(module)] not in _STATE:
            return key, path
    return None


def _readers(nodes: list[dict[str, Any]]) -> dict[str, set[str]]:
    readers: dict[str, set[str]] = {}
    for node in nodes:
        for name in _reads(node):
            readers.setdefault(name, set()).add(node["name"])
    return readers


def _reads(node: Mapping[str, Any]) -> list[str]:
    return list(node.get("in", [])) + list(arg_refs(node.get("args")))


def _fold(path: str, members: list[str], module: nn.Module, by_name: Mapping[str, dict[str, Any]],
          readers: Mapping[str, set[str]], outputs: set[str], taken: set[str], calls: int,
          tensors: Mapping[str, Any]) -> tuple[dict[str, Any], str, set[str]] | None:
    """The layer node for one call, the value it replaces, the state nodes it reads; None: stay unfolded."""
    layer = LAYER_TYPES[type(module)]
    entry = LAYERS[layer]
    if calls != 1 or entry.outputs != 1 or entry.inputs != (1, 1) or path in taken:
        return None
    group = set(members)
    state = {name for m in members for name in _reads(by_name[m])
             if by_name.get(name, {}).get("layer") in _STATE}
    owned = [t for t in module.state_dict(keep_vars=True).values()]
    if any(not any(tensors.get(name) is t for t in owned) for name in state):
        return None  # reads a tensor that is not its own (under its key, or tied to it under another)
    external = {name for m in members for name in _reads(by_name[m])
                if name not in group and name not in state and by_name.get(name, {}).get("op") not in _SIZE_OPS}
    produced = [m for m in members if (readers.get(m, set()) - group) or m in outputs]
    if len(external) != 1 or len(produced) != 1:
        return None
    try:
        args = layer_args(module, layer, path)
    except ExportError:
        return None  # a setting the row cannot say: the ops stay, exact
    node: dict[str, Any] = {"name": path, "layer": layer, "in": sorted(external)}
    if args:
        node["args"] = args
    return node, produced[0], state


def _renamed(node: dict[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    if not renames:
        return node
    out = dict(node)
    out["in"] = [renames.get(n, n) for n in node.get("in", [])]
    if "args" in node:
        out["args"] = _rename_refs(node["args"], renames)
    return out


def _rename_refs(value: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("ref"), str):
            return {"ref": renames.get(value["ref"], value["ref"])}
        return {k: _rename_refs(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, renames) for v in value]
    return value
