"""Fold the ATen ops of one call of a vocabulary layer back into one layer node.

torch.export records, for each node, the stack of modules it ran under
(``nn_module_stack``), and for each vocabulary layer the capture asks it to
preserve, the call's signature: which values went in (``mha(q, k, v,
need_weights=False)``: three tensors and a keyword) and which came out (a tuple
whose second item may be ``None``). The consecutive ops of one call of a module
whose exact class is a vocabulary layer (``nn.Linear``, ``nn.MultiheadAttention``,
``nn.LSTM``...) become one layer node at the module's path, taking the call's
tensor inputs and the forward keywords its row can say; each output read later
becomes a ``getitem`` of it (or, for a one-tensor layer, the node itself). A
call is left unfolded (its ops stay, exact as they are) whenever folding could
change what is computed: the module is called more than once, its tensors are
read elsewhere (tied weights) or it reads tensors it does not own or that are
not its inputs, a value leaves it that is not one of its outputs, or the call
or the module has a setting the row cannot say.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.export.graph_signature import ConstantArgument, TensorArgument

from ..errors import ExportError
from ..vocab import LAYERS
from ._export_layers import LAYER_TYPES, layer_args
from .build import arg_refs, rename_refs

__all__ = ["LayerCall", "fold_layers", "foldable_paths", "layer_calls"]

_STATE = ("Parameter", "Buffer")
# the capture's SymInt nodes (sizes and their arithmetic): not tensors a layer takes or gives, so a
# layer call may read them from outside, and the ones computed inside stay for whoever reads them
_SIZE_OPS = frozenset({"size", "scalar", "add", "sub", "mul", "div", "neg", "pow"})
_LITERALS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class _Value:
    """A tensor of the call, by its spec name (None: a value the spec has no name for)."""

    name: str | None


@dataclasses.dataclass
class LayerCall:
    """One call of a layer as torch.export recorded it: arguments (tensors as ``_Value``s) and outputs."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[tuple[tuple[int, ...], str | None]] | None  # (index path, spec name); None: not a tuple tree
    single: bool  # forward returns one tensor, not a tuple


@dataclasses.dataclass
class _Fold:
    removed: list[str]  # the call's nodes the fold replaces
    nodes: list[dict[str, Any]]  # the layer node, then a getitem per output read later
    renames: dict[str, str]  # a one-tensor layer's output value -> the layer node
    state: set[str]  # the Parameter/Buffer nodes it reads (all its own)


def foldable_paths(model: nn.Module) -> tuple[str, ...]:
    """The modules whose calls may fold: exact vocabulary layer classes (their call signatures are kept)."""
    return tuple(path for path, m in model.named_modules() if path and _is_layer(m))


def _is_layer(module: nn.Module | None) -> bool:
    """Whether the module's exact class is a vocabulary layer that computes (not Parameter/Buffer)."""
    return type(module) in LAYER_TYPES and LAYER_TYPES[type(module)] not in _STATE  # type: ignore[index]


def layer_calls(program: Any, names: Mapping[str, str]) -> dict[str, LayerCall]:
    """Module path -> its recorded call, from the program's preserved call signatures (fx name -> spec
    name in ``names``); modules called more than once (``path@1``) are left out."""
    out: dict[str, LayerCall] = {}
    for entry in program.module_call_graph:
        sig = entry.signature
        if not entry.fqn or sig is None or "@" in entry.fqn:
            continue
        if len(sig.inputs) != sig.in_spec.num_leaves or len(sig.outputs) != sig.out_spec.num_leaves:
            continue  # torch recorded no signature (a call inside an inlined grad-mode region): it stays as ops
        leaves = [_leaf(a, names) for a in sig.inputs]
        args, kwargs = torch.utils._pytree.tree_unflatten(leaves, sig.in_spec)
        values = [_leaf(a, names) for a in sig.outputs]
        out[entry.fqn] = LayerCall(tuple(args), dict(kwargs), _output_paths(values, sig.out_spec),
                                   sig.out_spec.is_leaf())
    return out


def _leaf(arg: Any, names: Mapping[str, str]) -> Any:
    """A signature leaf: a tensor as a ``_Value``, a constant as itself, anything else as an unnamed value."""
    if isinstance(arg, TensorArgument):
        return _Value(names.get(arg.name))
    if isinstance(arg, ConstantArgument):
        return arg.value
    return _Value(None)


def _output_paths(values: list[Any], out_spec: Any) -> list[tuple[tuple[int, ...], str | None]] | None:
    """(index path, spec name) per output leaf; None when the output is not tuples of tensors."""
    tree = torch.utils._pytree.tree_unflatten(list(range(len(values))), out_spec)
    out = []
    for keys, i in torch.utils._pytree.tree_flatten_with_path(tree)[0]:
        if not all(hasattr(k, "idx") for k in keys):
            return None
        value = values[i]
        out.append((tuple(k.idx for k in keys), value.name if isinstance(value, _Value) else None))
    return out


def fold_layers(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]], model: nn.Module,
                outputs: set[str], calls: Mapping[str, LayerCall]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``nodes`` with every foldable layer call replaced by its layer node (in place of the call's ops),
    and the renames (old value name -> layer path) the outputs need too."""
    modules = dict(model.named_modules())
    tensors = dict(model.state_dict(keep_vars=True))
    readers = _readers(nodes)
    by_name = {n["name"]: n for n in nodes}
    skip: set[str] = set()  # layers whose calls cannot fold: the vocabulary layers inside them may
    while True:
        groups = _groups(nodes, meta, modules, skip)
        counts: dict[str, int] = {}
        for path, _ in groups:
            counts[path] = counts.get(path, 0) + 1
        taken = {n["name"] for n in nodes} | set(modules) | set(tensors)
        folds, failed = [], set()
        for path, members in groups:
            ops = _foldable(members, by_name, readers, outputs)
            fold = None
            if ops and counts[path] == 1 and path in calls and path not in by_name:
                fold = _fold(path, ops, modules[path], calls[path], by_name, readers, outputs, tensors, taken)
            if fold is None:
                failed.add(path)
            else:
                folds.append(fold)
        if failed <= skip:
            break
        skip |= failed
    folds = _owning(folds, readers)
    renames: dict[str, str] = {}
    replace: dict[str, list[dict[str, Any]]] = {}
    for fold in folds:
        for name in (*fold.removed, *fold.state):
            replace[name] = []
        replace[fold.removed[-1]] = fold.nodes
        renames.update(fold.renames)
    out: list[dict[str, Any]] = []
    for node in nodes:
        for kept in replace.get(node["name"], [node]):
            out.append(_renamed(kept, renames))
    return _without_unread_sizes(out, {renames.get(o, o) for o in outputs}), renames


def _without_unread_sizes(nodes: list[dict[str, Any]], outputs: set[str]) -> list[dict[str, Any]]:
    """Drop the size nodes only folded ops read (a layer node computes its sizes itself)."""
    read = set(outputs)
    kept = []
    for node in reversed(nodes):
        if node.get("op") in _SIZE_OPS and node["name"] not in read:
            continue
        read.update(_reads(node))
        kept.append(node)
    return kept[::-1]


def _owning(folds: list[_Fold], readers: Mapping[str, set[str]]) -> list[_Fold]:
    """The folds whose state nodes no unfolded node reads: a state node leaves the spec only with every
    call that reads it folded into a layer owning it (tied weights: the embedding and the output
    projection each own the one tensor under their key)."""
    while True:
        folded = {m for fold in folds for m in fold.removed}
        kept = [f for f in folds if not any(readers.get(s, set()) - folded for s in f.state)]
        if len(kept) == len(folds):
            return folds
        folds = kept


def _groups(nodes: list[dict[str, Any]], meta: Mapping[str, dict[str, Any]], modules: Mapping[str, nn.Module],
            skip: set[str]) -> list[tuple[str, list[str]]]:
    """(module path, the names of its consecutive op nodes) per call of the outermost vocabulary layer
    not in ``skip``."""
    groups: list[tuple[str, list[str]]] = []
    current: tuple[str, str] | None = None  # (stack key, path)
    for node in nodes:
        if node.get("layer") in _STATE:
            continue  # added at first use: floats inside whichever call reads it first
        key = _layer_call(meta[node["name"]]["stack"], modules, skip)
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


def _layer_call(stack: Mapping[str, Any], modules: Mapping[str, nn.Module],
                skip: set[str]) -> tuple[str, str] | None:
    """The outermost module in the stack whose exact class is a vocabulary layer: (stack key, path)."""
    for key, (path, _) in stack.items():
        module = modules.get(path)
        if path and path not in skip and _is_layer(module):
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


def _fold(path: str, members: list[str], module: nn.Module, call: LayerCall, by_name: Mapping[str, dict[str, Any]],
          readers: Mapping[str, set[str]], outputs: set[str], tensors: Mapping[str, Any],
          taken: set[str]) -> _Fold | None:
    """The fold of one call; None: it stays unfolded."""
    layer = LAYER_TYPES[type(module)]
    bound = _bind(module, LAYERS[layer], call)
    if bound is None or call.outputs is None:
        return None
    inputs, said = bound
    # ops recorded under the call that compute its input (the getitem of a split made outside it) stay
    before = _ancestors(inputs, members, by_name)
    removed = [m for m in members if m not in before]
    group = set(removed)
    state = {name for m in removed for name in _reads(by_name[m]) if by_name.get(name, {}).get("layer") in _STATE}
    owned = list(module.state_dict(keep_vars=True).values())
    if not removed or any(not any(tensors.get(name) is t for t in owned) for name in state):
        return None  # reads a tensor that is not its own (under its key, or tied to it under another)
    external = {name for m in removed for name in _reads(by_name[m])
                if name not in group and name not in state and by_name.get(name, {}).get("op") not in _SIZE_OPS}
    leaves = {name: index for index, name in call.outputs if name is not None}
    produced = [m for m in removed if (readers.get(m, set()) - group) or m in outputs]
    if not external <= set(inputs) or any(m not in leaves for m in produced):
        return None
    try:
        args = {**layer_args(module, layer, path), **said}
    except ExportError:
        return None  # a setting the row cannot say: the ops stay, exact
    node: dict[str, Any] = {"name": path, "layer": layer, "in": inputs, **({"args": args} if args else {})}
    if call.single:
        return _Fold(removed, [node], {m: path for m in produced}, state)
    items, renames = _getitems(path, [(leaves[m], m) for m in produced], taken - group)
    taken.update(renames.values())
    return _Fold(removed, [node, *items], renames, state)


def _bind(module: nn.Module, entry: Any, call: LayerCall) -> tuple[list[str], dict[str, Any]] | None:
    """The call's tensor inputs (leading positional tensors, as many as the row takes) and the forward
    keywords the row can say that differ from their defaults; None when the call passes anything else."""
    signature = inspect.signature(module.forward)
    try:
        bound = signature.bind(*call.args, **call.kwargs).arguments
    except TypeError:
        return None
    keywords = {a.name: a for a in entry.args if a.call}
    low, high = entry.inputs
    inputs: list[str] = []
    said: dict[str, Any] = {}
    for position, (name, param) in enumerate(signature.parameters.items()):
        value = bound.get(name, param.default)
        if isinstance(value, _Value):
            if value.name is None or position != len(inputs) or (high is not None and position >= high):
                return None
            inputs.append(value.name)
        elif name in keywords and isinstance(value, _LITERALS):
            if not _same(value, keywords[name].default):
                said[name] = value
        elif not _same(value, param.default):
            return None
    return (inputs, said) if len(inputs) >= low else None


def _same(value: Any, default: Any) -> bool:
    return value is default or (type(value) is type(default) and isinstance(value, _LITERALS) and value == default)


def _ancestors(inputs: list[str], members: list[str], by_name: Mapping[str, dict[str, Any]]) -> set[str]:
    """The members that are, or compute, one of the call's inputs."""
    group = set(members)
    todo = [i for i in inputs if i in group]
    found = set(todo)
    while todo:
        for name in _reads(by_name[todo.pop()]):
            if name in group and name not in found:
                found.add(name)
                todo.append(name)
    return found


def _getitems(path: str, wanted: list[tuple[tuple[int, ...], str]],
              taken: set[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``getitem`` nodes reading the outputs at their index paths from the layer node (``mha_0``; LSTM's
    ``(h_n, c_n)`` is ``lstm_1``, its items ``lstm_1_0``, ``lstm_1_1``), and the renames of the values."""
    nodes: list[dict[str, Any]] = []
    names: dict[tuple[int, ...], str] = {(): path}
    base = path.replace(".", "_")
    for index, value in sorted(wanted):
        for depth in range(1, len(index) + 1):
            prefix = index[:depth]
            if prefix not in names:
                names[prefix] = _fresh(f"{base}_{'_'.join(map(str, prefix))}", taken)
                nodes.append(_getitem(names[prefix], names[prefix[:-1]], prefix[-1]))
    return nodes, {value: names[index] for index, value in wanted}


def _getitem(name: str, source: str, index: int) -> dict[str, Any]:
    return {"name": name, "op": "getitem", "in": [source], "args": {"index": index}}


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _renamed(node: dict[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    if not renames:
        return node
    out = dict(node)
    out["in"] = [renames.get(n, n) for n in node.get("in", [])]
    if "args" in node:
        out["args"] = rename_refs(node["args"], renames)
    return out

