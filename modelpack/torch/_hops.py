"""Higher-order ops in an exported graph: grad-mode regions inlined, every other one refused by name.

torch.export writes ``with torch.no_grad():`` (or ``torch.set_grad_enabled``)
inside forward as ``wrap_with_set_grad_enabled(enabled, submod, *args)``, the
region's ops in a subgraph read with ``get_attr``. The spec has no subgraphs,
so the region's ops are copied into the main graph: the values are the same
ops on the same inputs. What the region changes is autograd: its outputs do
not require grad, so an ``aten.detach`` (a vocabulary row) marks each output of
a grad-disabled region, and the rebuilt model sends no gradient into it, as the
original does. ``torch.autocast`` regions change dtypes inside forward, which
inlining would lose, so they are refused unless disabled; control flow
(``cond``, ``while_loop``, ``map``...) has no spec form and is refused by name.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ..errors import ExportError

__all__ = ["inline_grad_regions"]

_SET_GRAD = "wrap_with_set_grad_enabled"
_AUTOCAST = "wrap_with_autocast"
_TRACEPOINT = "_export_tracepoint"  # torch.export's marker of a preserved module call: an identity


def inline_grad_regions(gm: fx.GraphModule) -> None:
    """Inline every grad-mode (and disabled autocast) region of ``gm``, innermost first; refuse other HOPs."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, torch._ops.HigherOrderOperator):
            continue
        name = node.target.name()
        if name == _TRACEPOINT:
            _drop_tracepoint(node)
        elif name == _SET_GRAD:
            _inline(gm, node, node.args[1], node.args[2:], detach=not node.args[0])
        elif name == _AUTOCAST and not _autocast_enabled(node):
            _inline(gm, node, node.args[4], node.args[5:], detach=False)
        elif name == _AUTOCAST:
            raise ExportError("torch.autocast inside forward is not supported by the spec (the region computes "
                              "in another dtype; inlining it would change the numbers): export with autocast "
                              "disabled, or cast the model's weights (model.to(dtype)) instead",
                              where=_module_path(node))
        else:
            raise ExportError(f"the exported graph calls the higher-order op {name!r} (torch.{name}), which a "
                              "spec cannot express: it has no subgraphs or control flow; only grad-mode regions "
                              "(torch.no_grad, torch.enable_grad, torch.set_grad_enabled) are inlined",
                              where=_module_path(node))
    gm.graph.lint()
    gm.recompile()


def _drop_tracepoint(node: fx.Node) -> None:
    """A call-signature marker torch left inside a region (it collects only the top graph's): each ``marker[i]`` reads arg i.

    Only the layer calls inside the region lose their recorded signature, so they stay as ops.
    """
    for user in list(node.users):
        if user.op != "call_function" or user.target is not operator.getitem or not isinstance(user.args[1], int):
            raise ExportError(f"{node.name}: torch.export's call marker is used whole by {user.name}")
        user.replace_all_uses_with(node.args[user.args[1]])
        node.graph.erase_node(user)
    node.graph.erase_node(node)


def _autocast_enabled(node: fx.Node) -> bool:
    """``wrap_with_autocast(device_type, dtype, enabled, cache_enabled, submod, *args)``'s ``enabled``."""
    return bool(node.args[2])


def _inline(gm: fx.GraphModule, call: fx.Node, submod: Any, args: tuple[Any, ...], detach: bool) -> None:
    """Copy the region's ops before ``call``; its tuple's getitem users read the copies (detached if asked)."""
    if kwargs := call.kwargs:
        raise ExportError(f"{call.name}: a grad-mode region called with keyword arguments {sorted(kwargs)}")
    sub = _subgraph(gm, submod, call)
    inline_grad_regions(sub)  # nested regions first: their subgraphs live on `sub`, not on `gm`
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(args):
        raise ExportError(f"{call.name}: the region takes {len(placeholders)} values but is given {len(args)}")
    env: dict[fx.Node, Any] = dict(zip(placeholders, args))
    outputs: list[Any] = []
    with gm.graph.inserting_before(call):
        for node in sub.graph.nodes:
            if node.op == "output":
                outputs = [_mapped(v, env) for v in _flat(node.args[0])]
            elif node.op == "get_attr":
                raise ExportError(f"{call.name}: the region reads {node.target!r} from its subgraph, "
                                  "which modelpack cannot carry")
            elif node.op != "placeholder":
                env[node] = gm.graph.node_copy(node, lambda n: env[n])
        outputs = [_detached(gm, v, call) if detach and v not in args else v for v in outputs]
    _replace_uses(call, outputs)


def _subgraph(gm: fx.GraphModule, submod: Any, call: fx.Node) -> fx.GraphModule:
    if isinstance(submod, fx.Node) and submod.op == "get_attr":
        sub = getattr(gm, str(submod.target), None)
        if isinstance(sub, fx.GraphModule):
            return sub
    raise ExportError(f"{call.name}: a grad-mode region whose body is not a subgraph ({submod!r})")


def _flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _mapped(value: Any, env: dict[fx.Node, Any]) -> Any:
    return env[value] if isinstance(value, fx.Node) else value


def _detached(gm: fx.GraphModule, value: Any, call: fx.Node) -> Any:
    """``aten.detach(value)`` for a tensor computed in a grad-disabled region; other values as they are."""
    if not isinstance(value, fx.Node) or not isinstance(value.meta.get("val"), torch.Tensor):
        return value
    out = gm.graph.call_function(torch.ops.aten.detach.default, (value,))
    out.meta.update(value.meta)
    out.meta["nn_module_stack"] = dict(call.meta.get("nn_module_stack") or value.meta.get("nn_module_stack") or {})
    return out


def _replace_uses(call: fx.Node, outputs: list[Any]) -> None:
    """Each ``call[i]`` reads output i; the call (and its subgraph's get_attr) then go."""
    for user in list(call.users):
        if user.op != "call_function" or user.target is not operator.getitem or not isinstance(user.args[1], int):
            raise ExportError(f"{call.name}: a grad-mode region's result is used whole by {user.name}, "
                              "not output by output")
        value = outputs[user.args[1]]
        if isinstance(value, fx.Node):
            user.replace_all_uses_with(value)
        else:
            raise ExportError(f"{call.name}: the region returns the constant {value!r}; a spec's values are "
                              "tensors or sizes")
        call.graph.erase_node(user)
    submod = call.args[1] if call.target.name() == _SET_GRAD else call.args[4]
    call.graph.erase_node(call)
    if isinstance(submod, fx.Node) and not submod.users:
        call.graph.erase_node(submod)


def _module_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return (list(stack.values())[-1][0] or None) if stack else None
