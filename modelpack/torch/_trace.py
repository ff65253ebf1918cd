"""torch.fx tracing for export: vocabulary layers stay whole, errors say where and why.

The tracer keeps every module the vocabulary knows as one ``call_module`` node
(its arguments are read back later) and traces through everything else, so a
user's own blocks dissolve into layers and ops. Built-in torch.nn modules the
vocabulary lacks are kept whole too, so the refusal names the module
(``nn.TransformerDecoderLayer``) rather than some function deep inside it.

When tracing fails (Python control flow on a tensor, ``len(x)``, iterating a
tensor...) the error names the module being traced, the source line of the
model that did it, the construct, and what to do instead.
"""

from __future__ import annotations

import linecache
import os
import sys
import traceback
from types import FrameType
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from ..errors import ExportError
from ._export_layers import is_layer_type

__all__ = ["SOURCE_KEY", "InputSlot", "ExportTracer", "trace", "node_source", "node_module"]

SOURCE_KEY = "modelpack_source"  # node.meta key: where in the model's code the node was made

_TORCH_DIR = os.path.dirname(torch.__file__)
_MODELPACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Built-in containers are traced through like user modules.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _is_library_module(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.") and not isinstance(m, _CONTAINERS)


class InputSlot(NamedTuple):
    """Stands for one tensor input in the call template; becomes a placeholder named ``name``."""

    name: str


class ExportTracer(fx.Tracer):
    """Layers of the vocabulary and other built-in torch modules are leaves; the rest is traced.

    The root is called exactly as the example was: ``args``/``kwargs`` with each
    tensor replaced by an :class:`InputSlot`, so placeholders get the spec's
    input names, non-tensor arguments keep their example values, and a forward
    taking ``*inputs`` (a rebuilt SpecModule) traces like any other.
    """

    # fx's own stack traces symbolise through torch._dynamo (seconds of imports on first use);
    # create_node records the one frame an error message needs instead.
    record_stack_traces = False
    # Buffers read in forward become get_attr nodes (Buffer nodes named by their state_dict key)
    # instead of tensors baked into the trace (MaxViT's relative_position_index.view(-1)).
    proxy_buffer_attributes = True

    def __init__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        self.call_args = args
        self.call_kwargs = dict(kwargs)
        self.path_stack: list[str] = []
        self.failed_in: list[str] | None = None
        self.grad_mode = torch.is_grad_enabled()  # a node recorded under another mode: forward switched it

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> tuple[Any, list[Any]]:
        def fill(value: Any) -> Any:
            return self.create_proxy("placeholder", value.name, (), {}) if isinstance(value, InputSlot) else value

        args = [fill(a) for a in self.call_args]
        kwargs = {k: fill(v) for k, v in self.call_kwargs.items()}

        def call(root: nn.Module) -> Any:
            return root_fn(root, *args, **kwargs)

        return call, [self.root]

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        if torch.is_grad_enabled() != self.grad_mode:
            # fx runs `with torch.no_grad():` while tracing and records nothing of it: the spec would
            # let gradients into the region; the torch.export path carries it (aten.detach)
            where = f" in module {self.path_stack[-1]!r}" if self.path_stack and self.path_stack[-1] else ""
            raise ExportError(f"forward switches autograd mode (torch.no_grad, torch.set_grad_enabled){where}, "
                              "which the torch.fx tracer cannot record; capture='export' carries it")
        node = super().create_node(*args, **kwargs)
        frame = _innermost_user_frame(sys._getframe(1))
        if frame is not None:
            node.meta[SOURCE_KEY] = frame
        return node

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_layer_type(m) or _is_library_module(m)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        path = self.path_of_module(m)
        self.path_stack.append(path)
        try:
            if isinstance(m, nn.TransformerEncoder) and len(args) == 1 and not kwargs:
                return self._encoder_stack(m, args[0])
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module, recorded once while unwinding
                self.failed_in = list(self.path_stack)
            raise
        finally:
            self.path_stack.pop()


    def _encoder_stack(self, m: nn.TransformerEncoder, x: Any) -> Any:
        """nn.TransformerEncoder without masks is its layers in turn, then its norm.

        Its own forward branches on the input (mask checks, the nested-tensor fast path),
        which tracing cannot follow; without masks those branches all compute this.
        """
        for layer in m.layers:
            x = layer(x)
        return m.norm(x) if m.norm is not None else x


def trace(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> fx.Graph:
    """Trace ``model`` called with ``args``/``kwargs`` (tensors as InputSlots); ExportError when fx cannot."""
    tracer = ExportTracer(args, kwargs)
    try:
        return tracer.trace(model)
    except ExportError:
        raise
    except Exception as e:  # fx raises TraceError, RuntimeError, TypeError... for untraceable code
        path = (tracer.failed_in or [""])[-1]
        raise _trace_failure(e, path, type(model).__name__) from e


# ----------------------------------------------------------------------------- failures

_CONSTRUCTS = (
    ("cannot be used as inputs to control flow",
     "Python control flow on a tensor value (`if`, `while`, `and`/`or`, `bool(...)`)",
     "a spec is a fixed graph and cannot branch on data: compute both branches and combine them with "
     "tensor ops, or move the decision out of forward (a constructor flag)"),
    ("cannot be iterated",
     "iteration over a tensor (`for row in x`, unpacking a tensor of unknown length)",
     "index explicitly (x[0], x[1]) or use tensor ops such as chunk"),
    ("not 'Proxy'",
     "a traced tensor used as a Python value (int(), float(), .item(), .tolist(), a range bound)",
     "keep the value a tensor and use tensor ops, or make it a constant of the model"),
    ("'len' is not supported",
     "len() of a tensor",
     "use a fixed size, or a vocabulary op that works on whole dimensions"),
)


def _trace_failure(e: Exception, path: str, model_name: str) -> ExportError:
    where = path or f"{model_name} (the top-level module)"
    line = _user_frame(e)
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    for needle, construct, advice in _CONSTRUCTS:
        if needle in message:
            return ExportError(f"{construct} at {line}: cannot be traced into a spec; {advice}", where=where)
    return ExportError(f"torch.fx could not trace this module at {line}: {type(e).__name__}: {message}. "
                       "Only code that always runs the same tensor operations can become a spec; "
                       "restructure that piece, or keep it out of the exported model", where=where)


def _user_frame(e: BaseException) -> str:
    """``file:line `code``` of the innermost frame in the model's own code."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user_file(f.filename)]
    if not frames:
        return "an unknown line"
    f = frames[-1]
    return f"{f.filename}:{f.lineno} `{(f.line or '').strip()}`"


def _is_user_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    return not (path.startswith(_TORCH_DIR) or path.startswith(_MODELPACK_DIR) or filename.startswith("<"))


# ----------------------------------------------------------------------------- node locations


def _innermost_user_frame(frame: FrameType | None) -> str | None:
    """``file:line `code``` of the nearest calling frame in the model's own code."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if _is_user_file(filename):
            code = linecache.getline(filename, frame.f_lineno).strip()
            return f"{filename}:{frame.f_lineno} `{code}`"
        frame = frame.f_back
    return None


def node_source(node: fx.Node) -> str | None:
    """``file:line `code``` of the model source that produced ``node`` (innermost user frame)."""
    source = node.meta.get(SOURCE_KEY)
    return source if isinstance(source, str) else None


def node_module(node: fx.Node) -> str | None:
    """The qualified path of the innermost module whose forward made ``node`` (None: the top)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, _cls = list(stack.values())[-1]
    return str(path) or None
