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

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from ..errors import ExportError
from ..vocab import LAYERS
from ._export_layers import LAYER_TYPES, layer_args
from .build import arg_refs

__all__ = ["fold_layers"]

_STATE = ("Parameter", "Buffer")


def fold_layers(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]], model: nn.Module,
                outputs: set[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``nodes`` with every foldable layer call replaced by its layer node (in place of the call's ops),
    and the renames (old value name -> layer path) the outputs need too."""
    modules = dict(model.named_modules())
    groups = _groups(nodes, meta, modules)
    calls: dict[str, int] = {}
    for path, _ in groups:
        calls[path] = calls.get(path, 0) + 1
    readers = _readers(nodes)
    taken = {n["name"] for n in nodes}
    renames: dict[str, str] = {}
    replace: dict[str, dict[str, Any] | None] = {}
    for path, members in groups:
        folded = _fold(path, members, modules[path], nodes, readers, outputs, taken, calls[path])
        if folded is None:
            continue
        layer_node, output, removed = folded
        for name in removed:
            replace[name] = None
        replace[members[-1]] = layer_node
        renames[output] = path
        taken.add(path)
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


def _fold(path: str, members: list[str], module: nn.Module, nodes: list[dict[str, Any]],
          readers: Mapping[str, set[str]], outputs: set[str], taken: set[str],
          calls: int) -> tuple[dict[str, Any], str, list[str]] | None:
    """The layer node for one call, the value it replaces, the nodes it removes; None: stay unfolded."""
    layer = LAYER_TYPES[type(module)]
    entry = LAYERS[layer]
    if calls != 1 or entry.outputs != 1 or entry.inputs != (1, 1) or path in taken:
        return None
    group = set(members)
    by_name = {n["name"]: n for n in nodes}
    state = {name for m in members for name in _reads(by_name[m])
             if by_name.get(name, {}).get("layer") in _STATE}
    own = {name for name in state if name.startswith(path + ".")}
    if own != state or any(readers.get(name, set()) - group for name in own):
        return None  # reads another module's tensor, or its own are read elsewhere (tied)
    external = {name for m in members for name in _reads(by_name[m]) if name not in group and name not in own}
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
    return node, produced[0], [*members, *own]


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
