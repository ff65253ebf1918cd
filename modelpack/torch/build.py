"""Spec -> ``nn.Module``: the layers at their node names, and a forward that interprets the nodes.

The forward never generates or execs code (no ``torch.fx.GraphModule``): it walks
a tuple of :class:`Step` records, plain immutable data fixed at build time, with
a dict of values. That keeps it readable to ``torch.compile`` and ``torch.export``
(the loop unrolls over constants) and keeps the submodule tree exactly the
spec's names, so ``state_dict()`` keys equal the exported model's.

Layers are looked up by name on every call rather than cached in the steps, so
``model.fc = nn.Linear(...)`` (swapping a head to fine-tune) takes effect.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import limits
from ..errors import BuildError, ModelPackError
from ..spec.shapes import check_inputs, input_rules
from ..vocab import LAYERS, OPS, REQUIRED
from ..vocab.types import _Entry
from ._aten import aten_kwargs, allocates, device_mode, guarded
from .bindings import LAYER_BINDINGS, OP_BINDINGS, POSITIONAL_ARGS

__all__ = ["build", "build_validated", "SpecModule", "Namespace", "Step", "prepare", "subgraph", "needed_nodes",
           "release_plan", "held_tensors", "registered", "follow_key_order"]

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")
# ops that read the module's train/eval mode (vocabulary rows with training=True)
_TRAINING_OPS = frozenset(name for name, entry in OPS.items() if entry.training)
# modelpack-implemented ops whose bodies branch on their arguments: kept whole when traced
_WHOLE_OPS = frozenset({"dropout", "stochastic_depth", "shifted_window_attention", "relative_position_bias",
                        "patch_merging_pad"})
# layers that are one tensor, registered at the node name (its state_dict key), never called
_STATE_LAYERS = frozenset({"Parameter", "Buffer"})
# In-place twins that give bit-identical values (the same kernels), used in inference when the
# input is a value nobody else can see (see inplace_plan). "unary": F.<op>(x, inplace=True).
_INPLACE_UNARY = frozenset({"relu", "relu6", "leaky_relu", "elu", "silu", "mish", "hardswish", "hardsigmoid"})
_INPLACE_METHOD: dict[str, Any] = {
    "sigmoid": "sigmoid_", "tanh": "tanh_", "exp": "exp_", "sqrt": "sqrt_", "rsqrt": "rsqrt_", "abs": "abs_",
    "add": "add_", "sub": "sub_", "mul": "mul_",
    # ATen rows (the torch.export IR): the Tensor method, or the in-place overload, with the same arguments;
    # only for floating first inputs (see _run_inplace)
    "aten.add.Tensor": "add_", "aten.sub.Tensor": "sub_", "aten.mul.Tensor": "mul_", "aten.div.Tensor": "div_",
    "aten.pow.Tensor_Scalar": "pow_", "aten.neg": "neg_", "aten.rsqrt": "rsqrt_", "aten.sqrt": "sqrt_",
    "aten.exp": "exp_", "aten.sigmoid": "sigmoid_", "aten.tanh": "tanh_", "aten.relu": "relu_", "aten.abs": "abs_",
    "aten.silu": torch.ops.aten.silu_.default, "aten.gelu": torch.ops.aten.gelu_.default}
# two-input rows whose inputs may trade places (the in-place write then goes into the second; see inplace_plan)
_COMMUTATIVE = frozenset({"add", "mul", "aten.add.Tensor", "aten.mul.Tensor"})
# producers whose output is always new memory (never a view of an input, a parameter or a cache);
# MultiheadAttention: a tuple of new tensors (out_proj's output, the weights), read through getitem
_FRESH_LAYERS = frozenset({"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                           "Linear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
                           "Embedding", "MultiheadAttention"})
_FRESH_OPS = frozenset({*_INPLACE_UNARY, *_INPLACE_METHOD, "gelu", "matmul", "linear", "cat", "softmax",
                        "log_softmax", "aten.mm", "aten.bmm", "aten.matmul", "aten.linear", "aten.cat",
                        "aten.mean.dim", "aten.softmax.int", "aten.scaled_dot_product_attention", "aten.cos",
                        "aten.sin", "aten.layer_norm", "aten.embedding"})
# outputs that alias their first input or part of it (views, in-place activations, eval-mode dropout, getitem)
_PASSTHROUGH_LAYERS = frozenset({"ReLU", "ReLU6", "LeakyReLU", "ELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid",
                                 "Dropout", "Dropout2d", "Identity", "Flatten", "Unflatten"})
_PASSTHROUGH_OPS = frozenset({"getitem", "reshape", "flatten", "permute", "transpose", "unsqueeze", "squeeze",
                              "dropout",
                              "aten.view", "aten.reshape", "aten._unsafe_view", "aten.transpose.int",
                              "aten.unsqueeze", "aten.squeeze.dim", "aten.permute", "aten.flatten.using_ints"})


class Step(NamedTuple):
    """One node, as the forward runs it (everything resolved at build time)."""

    name: str  # the node name: the key of its value, and of its module for layers
    kind: str  # "layer" or "op"
    what: str  # the vocabulary name (for messages)
    path: tuple[str, ...]  # layers: the submodule path (name split at dots); ops: ()
    fn: Any  # ops: the bound torch callable; layers: None (the module is looked up)
    inputs: tuple[str, ...]  # names of the values passed positionally
    variadic: bool  # pass the inputs as one tuple (torch.cat(tensors, dim))
    extra: tuple[Any, ...]  # arguments passed positionally after the inputs (getitem index)
    kwargs: Mapping[str, Any]  # arguments passed by keyword
    has_refs: bool  # extra/kwargs hold {ref: name} values to resolve per call
    device: str = ""  # ATen rows: "factory"/"input" when torch needs a device the file never stores


Guard = tuple[tuple[tuple[str, ...], type], ...]  # the producing layers (path, class) an in-place claim relies on


class Namespace(nn.Module):
    """An intermediate level of a dotted node name (``layer1`` of ``layer1.0.conv1``).

    It only holds children, so the state_dict keys nest like the original
    model's; it is never called. ``ns[0]`` reads a digit child like ``nn.Sequential``.
    """

    def __getitem__(self, key: int | str) -> nn.Module:
        return self._modules[str(key)]  # type: ignore[return-value]


class _Interpreter:
    """What SpecModule's forward reads besides its children (see ``SpecModule.__init__``)."""

    __slots__ = ("spec", "input_names", "steps", "output_keys", "output_refs", "release", "inplace", "rules",
                 "plain")

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)


class SpecModule(nn.Module):
    """A model rebuilt from a spec: submodules at the node names, forward interprets the nodes.

    ``forward(*inputs, **named_inputs)`` takes the spec's inputs by position (in
    declared order) or by name; it returns the single output, a tuple for a list
    of several outputs, or a dict for named outputs. ``spec`` holds the expanded,
    validated spec it was built from.
    """

    def __init__(self, spec: dict[str, Any], steps: tuple[Step, ...]) -> None:
        super().__init__()
        outputs = spec["outputs"]
        refs = tuple(outputs.values() if isinstance(outputs, dict) else outputs)
        # The interpreter's state, under one key no node name can take (dunder parts are not names):
        # children live in the registries, so no node name can shadow, or be shadowed by, this state,
        # not even when torch's setattr (load_state_dict(assign=True)) re-registers a child.
        self.__modelpack__ = _Interpreter(
            spec, tuple(spec["inputs"]), steps, tuple(outputs) if isinstance(outputs, dict) else None, refs,
            # names whose value is dead after each step: freed at once, so activations reuse warm
            # memory and the peak is the live set, not the sum of every intermediate value
            release_plan(steps, refs), inplace_plan(steps, refs),
            input_rules(spec),  # ranks, fixed dims and bounded sizes, checked per call
            tuple(_plain(step) for step in steps))  # the eager loop's shortcut (see _run_eager)

    # read through the reserved key (class-level properties: an instance attribute cannot hide them)
    spec = property(lambda self: self.__modelpack__.spec, doc="the expanded, validated spec")
    input_names = property(lambda self: self.__modelpack__.input_names, doc="the inputs, in declared order")
    _steps = property(lambda self: self.__modelpack__.steps)
    _output_keys = property(lambda self: self.__modelpack__.output_keys)
    _output_refs = property(lambda self: self.__modelpack__.output_refs)
    _inplace = property(lambda self: self.__modelpack__.inplace)

    @property
    def _release(self) -> tuple[tuple[str, ...], ...]:
        return self.__modelpack__.release

    @_release.setter
    def _release(self, plan: tuple[tuple[str, ...], ...]) -> None:  # tests turn the plan off
        self.__modelpack__.release = plan

    def forward(self, *inputs: Any, **named_inputs: Any) -> Any:
        env = self._bind_inputs(inputs, named_inputs)
        if torch.compiler.is_compiling():  # traced: a check here would pin the sizes being traced
            for step, dead in zip(self._steps, self._release):
                env[step.name] = self._run(step, env)
                for name in dead:
                    del env[name]
        else:
            check_inputs(self.__modelpack__.rules, env)
            self._run_eager(env)
        return self._collect(env)

    def _run_eager(self, env: dict[str, Any]) -> None:
        """Like the compiled loop, but a failure says which node it came from (an exception note).

        Steps that need none of ``_run``'s cases (refs, training flag, device, tracing, state) are
        called right here: the same callable with the same arguments, less Python per step.
        """
        step = None
        try:
            inplace = self._inplace if not torch.is_grad_enabled() else {}
            state = self.__modelpack__
            for step, dead, plain in zip(state.steps, state.release, state.plain):
                claim = inplace.get(step.name) if inplace else None
                if claim is not None and self._owned(claim[1], env[step.inputs[claim[0]]]):
                    env[step.name] = _run_inplace(step, env, claim[0])
                elif plain == "op":
                    env[step.name] = step.fn(*[env[name] for name in step.inputs], *step.extra, **step.kwargs)
                elif plain == "layer":
                    module: nn.Module = self
                    for part in step.path:
                        module = module._modules[part]  # type: ignore[assignment]
                    env[step.name] = module(*[env[name] for name in step.inputs], **step.kwargs)
                else:
                    env[step.name] = self._run(step, env)
                for name in dead:
                    del env[name]
        except Exception as e:
            if step is not None and hasattr(e, "add_note"):  # Python 3.11+
                e.add_note(f"modelpack: while running node {step.name!r} ({step.kind} {step.what})")
            raise

    def _run(self, step: Step, env: dict[str, Any]) -> Any:
        args = [env[name] for name in step.inputs]
        if step.variadic:
            args = [tuple(args)]
        extra, kwargs = step.extra, step.kwargs
        if step.has_refs:
            extra, kwargs = _resolve(extra, env), _resolve(kwargs, env)
        if step.kind == "layer":
            if step.what in _STATE_LAYERS:
                return self._state(step.path)
            return self._layer(step.path)(*args, **kwargs)
        if step.what in _TRAINING_OPS:
            kwargs = {**kwargs, "training": self.training}
        if step.device:
            kwargs = {**kwargs, "device": self._device_for(step, args, env)}
        if step.what in _WHOLE_OPS and args and isinstance(args[0], torch.fx.Proxy):
            # traced (re-export): one node, not the Python inside modelpack's implementation
            return args[0].tracer.create_proxy("call_function", step.fn, (*args, *extra), kwargs)
        return step.fn(*args, *extra, **kwargs)

    def _device_for(self, step: Step, args: list[Any], env: dict[str, Any]) -> torch.device:
        """Where a created tensor goes: the first input's device, else the model's (never the file's)."""
        if step.device == "input" and isinstance(args[0], torch.Tensor):
            return args[0].device
        for name in self.input_names:
            value = env.get(name)
            if isinstance(value, torch.Tensor):
                return value.device
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def _owned(self, guard: Guard, value: Any) -> bool:
        """The in-place plan still holds: the layers it relied on were not swapped, the value is a plain tensor."""
        if not isinstance(value, torch.Tensor) or value.requires_grad:
            return False
        return all(type(self._layer(path)) is cls for path, cls in guard)

    def _layer(self, path: tuple[str, ...]) -> nn.Module:
        """The registered child at ``path`` (``_modules`` only: a name never reaches other attributes)."""
        module: nn.Module = self
        for part in path:
            module = module._modules[part]  # type: ignore[assignment]
        return module

    def _state(self, path: tuple[str, ...]) -> torch.Tensor:
        """The tensor of a Parameter/Buffer node: registered at ``path`` itself (its state_dict key)."""
        parent, leaf = self._layer(path[:-1]), path[-1]
        if leaf not in parent._parameters and leaf not in parent._buffers:
            raise KeyError(leaf)
        # nn.Module.__getattr__ reads the registries only (a property or method of the same name cannot
        # answer), and torch.fx, which patches it while tracing, records a get_attr on re-export
        return nn.Module.__getattr__(parent, leaf)  # type: ignore[return-value]

    def _bind_inputs(self, inputs: tuple[Any, ...], named: dict[str, Any]) -> dict[str, Any]:
        names = self.input_names
        if len(inputs) > len(names):
            raise TypeError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}")
        env = dict(zip(names, inputs))
        for key, value in named.items():
            if key not in names:
                raise TypeError(f"unknown input {key!r}; the model's inputs are: {', '.join(names)}")
            if key in env:
                raise TypeError(f"input {key!r} given both by position and by name")
            env[key] = value
        missing = [n for n in names if n not in env]
        if missing:
            raise TypeError(f"missing input(s) {', '.join(map(repr, missing))}; the model's inputs are: "
                            f"{', '.join(names)}")
        return env

    def _collect(self, env: dict[str, Any]) -> Any:
        if self._output_keys is not None:
            return {key: env[ref] for key, ref in zip(self._output_keys, self._output_refs)}
        if len(self._output_refs) == 1:
            return env[self._output_refs[0]]
        return tuple(env[ref] for ref in self._output_refs)


def _plain(step: Step) -> str | None:
    """How the eager loop may call the step directly ("op" or "layer"), or None to go through ``_run``.

    Direct means what ``_run`` does for the step when none of its special cases applies: no refs
    to resolve, no training flag, no device, no traced whole op, no Parameter/Buffer read.
    """
    if step.has_refs or step.variadic or step.device:
        return None
    if step.kind == "layer":
        return None if step.what in _STATE_LAYERS or step.extra else "layer"
    if step.what in _TRAINING_OPS or step.what in _WHOLE_OPS:
        return None
    return "op"


def release_plan(steps: Sequence[Step], outputs: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """For each step, the values no later step (nor the outputs) reads: safe to drop right after it.

    Computed once at build time from the steps' inputs and ``{ref:}`` arguments.
    A value nobody reads (an unused input, a dead node) is dropped right after it
    appears; outputs are never dropped.
    """
    keep = set(outputs)
    last: dict[str, int] = {}
    for i, step in enumerate(steps):
        last[step.name] = i  # defined here: dead at once unless read later
        for name in step.inputs:
            last[name] = i
        if step.has_refs:
            for name in arg_refs([step.extra, dict(step.kwargs)]):
                last[name] = i
    plan: list[list[str]] = [[] for _ in steps]
    for name, i in last.items():
        if name not in keep:
            plan[i].append(name)
    return tuple(tuple(names) for names in plan)


def inplace_plan(steps: Sequence[Step], outputs: Iterable[str]) -> dict[str, tuple[int, Guard]]:
    """Op steps that may overwrite an input: {step name: (which input, the layers that claim relies on)}.

    An op may run in place when its first input is a value no one else can
    observe: made fresh by its producer (or by a chain of views/in-place steps
    over a fresh value), read by this step alone, and not an output. A
    commutative op (``add`` without ``alpha``, ``mul``) may instead write into
    its second input when that one qualifies (the residual ``x + f(x)``): IEEE
    addition and multiplication give the same bits either way round. Only used
    without autograd; the returned guard lists the producing layers and their
    classes, re-checked per call, so swapping a layer (``model.fc = nn.Identity()``)
    turns the claim off instead of overwriting someone's tensor.
    """
    keep = set(outputs)
    readers: dict[str, int] = {}
    for step in steps:
        names = list(step.inputs) + (list(arg_refs([step.extra, dict(step.kwargs)])) if step.has_refs else [])
        for name in names:
            readers[name] = readers.get(name, 0) + 1
    owned: dict[str, Guard] = {}  # exclusively owned value -> its guard

    def sole(name: str | None) -> bool:
        return name in owned and readers.get(name, 0) == 1 and name not in keep

    plan: dict[str, tuple[int, Guard]] = {}
    for step in steps:
        first = step.inputs[0] if step.inputs and not step.variadic else None
        if step.kind == "layer":
            cls = LAYER_BINDINGS.get(step.what)
            mine = ((step.path, cls),) if isinstance(cls, type) else None
            if mine is not None and step.what in _FRESH_LAYERS:
                owned[step.name] = mine
            elif mine is not None and step.what in _PASSTHROUGH_LAYERS and sole(first):
                owned[step.name] = owned[first] + mine  # type: ignore[index]
        elif step.what in _INPLACE_UNARY or step.what in _INPLACE_METHOD:
            which = 0 if sole(first) else 1 if _swappable(step) and sole(step.inputs[1]) else None
            if which is not None and not step.has_refs:
                plan[step.name] = (which, owned[step.inputs[which]])
                owned[step.name] = owned[step.inputs[which]]
            else:
                owned[step.name] = ()
        elif step.what in _FRESH_OPS:
            owned[step.name] = ()
        elif step.what in _PASSTHROUGH_OPS and sole(first):
            owned[step.name] = owned[first]  # type: ignore[index]
    return plan


def _swappable(step: Step) -> bool:
    """A two-input op whose inputs may trade places: same value, same bits (commutative in IEEE arithmetic)."""
    return step.what in _COMMUTATIVE and len(step.inputs) == 2 and step.kwargs.get("alpha", 1) == 1


def _run_inplace(step: Step, env: dict[str, Any], which: int = 0) -> Any:
    """The step computed into its (dead, unshared) input ``which``; same kernels, same values."""
    target = env[step.inputs[which]]
    rest = [env[name] for i, name in enumerate(step.inputs) if i != which]
    if which and not (isinstance(rest[0], torch.Tensor) and rest[0].dtype == target.dtype
                      and rest[0].device == target.device):
        return step.fn(*[env[name] for name in step.inputs], *step.extra, **step.kwargs)
    if step.what in _INPLACE_UNARY:
        return step.fn(target, *rest, *step.extra, **step.kwargs, inplace=True)
    if step.what.startswith("aten.") and not target.is_floating_point():  # rsqrt(int) is a float: not in place
        return step.fn(*[env[name] for name in step.inputs], *step.extra, **step.kwargs)
    if rest:
        other = rest[0]
        shape = other.shape if isinstance(other, torch.Tensor) else ()
        if (not _broadcasts_into(shape, target.shape) or torch.result_type(target, other) != target.dtype
                or not _same_layout(target, other)):
            return step.fn(*[env[name] for name in step.inputs], *step.extra, **step.kwargs)
    how = _INPLACE_METHOD[step.what]
    if isinstance(how, str):
        return getattr(target, how)(*rest, *step.extra, **step.kwargs)
    return how(target, *rest, *step.extra, **step.kwargs)


def _same_layout(target: torch.Tensor, other: Any) -> bool:
    """The in-place result keeps ``target``'s strides, the out-of-place one takes the operands' layout
    (a permuted view's): only when both are contiguous are they the same, and so is every later
    stride-sensitive kernel (a reduction, a matmul) reading it."""
    return target.is_contiguous() and (not isinstance(other, torch.Tensor) or other.is_contiguous())


def _broadcasts_into(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Broadcasting ``shape`` against ``target`` gives ``target``. (Not torch.broadcast_shapes: its Python
    reference imports sympy, most of a second, on a process's first call.)"""
    return len(shape) <= len(target) and all(d in (1, t) for d, t in zip(reversed(shape), reversed(target)))


def _resolve(value: Any, env: dict[str, Any]) -> Any:
    """A copy of an argument with every ``{ref: name}`` replaced by that value (lists recursively)."""
    if isinstance(value, dict):
        if len(value) == 1 and "ref" in value:
            return env[value["ref"]]
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_resolve(v, env) for v in value)
    return value


# --------------------------------------------------------------------------- spec handling


def prepare(spec: Any, *, source: str | None = None) -> dict[str, Any]:
    """Validate ``spec`` (path, YAML/JSON text or dict) and expand its blocks: the form build uses.

    Every entry point goes through here, so nothing unvalidated is ever built.
    ``source`` names the spec in error messages (e.g. ``model.mpk:spec.yaml``).
    """
    from ..spec import validate
    from ..spec.blocks import expand_blocks

    if isinstance(spec, (str, os.PathLike)) and _looks_like_path(spec):
        path = os.fspath(spec)
        if path.endswith(".mpk"):
            raise BuildError(f"{path} is a model file; open it with modelpack.load_model(path), "
                             "build() takes a spec (.yaml, .yml, .json, text or dict)")
    return expand_blocks(validate(spec, source=source))


def _looks_like_path(spec: str | os.PathLike[str]) -> bool:
    if not isinstance(spec, str):
        return True
    return "\n" not in spec and spec.rstrip().endswith((*_SPEC_SUFFIXES, ".mpk"))


def needed_nodes(spec: dict[str, Any], outputs: Iterable[str]) -> list[str]:
    """Names of the nodes (in spec order) that the given values depend on, themselves included."""
    by_name = {node["name"]: node for node in spec["nodes"]}
    keep: set[str] = set()
    todo = [name for name in outputs]
    while todo:
        name = todo.pop()
        if name in keep or name not in by_name:
            continue
        keep.add(name)
        node = by_name[name]
        todo.extend(node["in"])
        todo.extend(arg_refs(node.get("args")))
    return [n["name"] for n in spec["nodes"] if n["name"] in keep]


def arg_refs(value: Any) -> Iterable[str]:
    """Every node name that ``{ref: name}`` values inside node arguments point at (nested dicts, lists, tuples)."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("ref"), str):
            yield value["ref"]
        else:
            for v in value.values():
                yield from arg_refs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from arg_refs(v)


def rename_refs(value: Any, renames: Mapping[str, str]) -> Any:
    """``value`` with each ``{ref: name}`` inside pointing at ``renames[name]`` (names not in it kept)."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("ref"), str):
            return {"ref": renames.get(value["ref"], value["ref"])}
        return {k: rename_refs(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [rename_refs(v, renames) for v in value]
    return value


def subgraph(spec: dict[str, Any], outputs: Sequence[str]) -> dict[str, Any]:
    """The part of an expanded spec that computes ``outputs`` (node or input names): a valid spec.

    Only the nodes those outputs need are kept (so only their parameters), and
    only the inputs they read, in declared order. The result is validated again.
    """
    from ..spec import validate
    from ..spec.blocks import expand_blocks

    known = {n["name"] for n in spec["nodes"]} | set(spec["inputs"])
    unknown = [o for o in outputs if o not in known]
    if not outputs or unknown:
        raise BuildError(f"cannot cut the graph at {', '.join(map(repr, unknown)) or 'no outputs'}: "
                         f"outputs must name nodes or inputs of the spec (nodes: {_preview(spec)})")
    names = set(needed_nodes(spec, outputs))
    nodes = [n for n in spec["nodes"] if n["name"] in names]
    reads = {ref for n in nodes for ref in (*n["in"], *arg_refs(n.get("args")))} | set(outputs)
    cut = {k: v for k, v in spec.items() if k not in ("nodes", "outputs", "inputs")}
    cut["inputs"] = {k: v for k, v in spec["inputs"].items() if k in reads}
    cut["nodes"] = nodes
    cut["outputs"] = list(outputs)
    return expand_blocks(validate(cut))


def _preview(spec: dict[str, Any], n: int = 8) -> str:
    names = [node["name"] for node in spec["nodes"]]
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# --------------------------------------------------------------------------- building


def build(spec: Any, *, device: Any = None) -> SpecModule:
    """A fresh ``nn.Module`` from a spec: a path (.yaml/.yml/.json), YAML/JSON text or a dict.

    The spec is validated first; parameter bytes are counted on the meta device
    and checked against ``limits.max_param_bytes`` before anything is allocated.
    Layers are initialised by their torch constructors (seed torch for
    reproducible weights). ``device="meta"`` allocates nothing at all. For a
    .mpk file use :func:`modelpack.load_model`.
    """
    return build_validated(prepare(spec), device=device)


def build_validated(spec: dict[str, Any], *, device: Any = None) -> SpecModule:
    """:func:`build` for a spec that went through :func:`prepare` (validated, blocks expanded)."""
    from ..spec.cost import check_cost

    check_cost(spec)  # closed form from the arguments: nothing is built past the limits
    meta = _build_on(spec, torch.device("meta"))
    if device is not None and torch.device(device).type == "meta":
        return meta
    return _build_on(spec, device)


def _build_on(spec: dict[str, Any], device: Any) -> SpecModule:
    steps: list[Step] = []
    layers: list[tuple[str, nn.Module]] = []
    transient: set[str] = set()  # non-persistent buffers: kept out of state_dict(), as torch does
    total = 0
    for node in spec["nodes"]:
        step, module = _node(node, device)
        steps.append(step)
        if node.get("layer") == "Buffer" and (node.get("args") or {}).get("persistent") is False:
            transient.add(step.name)
        if module is not None:
            layers.append((step.name, module))
            total += _state_bytes(module)
            limits.check("max_param_bytes", total, where=f"node {step.name!r}",
                         what="parameter and buffer bytes implied by the spec")
    root = SpecModule(spec, tuple(steps))
    for name, module in layers:
        _attach(root, name, module, persistent=name not in transient)
    return root


def _node(node: dict[str, Any], device: Any) -> tuple[Step, nn.Module | None]:
    """The step of one node, and its module for a layer (built under ``device``)."""
    kind = "layer" if "layer" in node else "op"
    what = node[kind]
    name = node["name"]
    try:
        entry = _entry(kind, what)
        args = _arguments(entry, node.get("args") or {}, allow_refs=kind == "op")
        if kind == "layer":
            calls = {a.name for a in entry.args if a.call}
            call = {k: v for k, v in args.items() if k in calls and v != entry.arg(k).default}
            built = _construct(what, {k: v for k, v in args.items() if k not in calls}, device)
            return _layer_step(name, what, node["in"], call), built
        return _op_step(name, entry, node["in"], args), None
    except ModelPackError as e:
        raise BuildError(f"while building node {name!r} ({kind} {what}): {e}") from e
    except Exception as e:  # torch refused the arguments: say which node, keep the cause
        raise BuildError(f"while building node {name!r} ({kind} {what}): {type(e).__name__}: {e}") from e


def _entry(kind: str, what: str) -> _Entry:
    table, bindings = (LAYERS, LAYER_BINDINGS) if kind == "layer" else (OPS, OP_BINDINGS)
    if what not in table or what not in bindings:
        raise BuildError(f"unknown {kind} {what!r}; known: {', '.join(table)}")
    return table[what]  # type: ignore[no-any-return]


def _arguments(entry: _Entry, given: Mapping[str, Any], *, allow_refs: bool) -> dict[str, Any]:
    """Exactly the vocabulary's arguments: the spec's values, defaults for the rest."""
    known = [a.name for a in entry.args]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise BuildError(f"unexpected argument(s) {', '.join(unknown)}; {entry.name} takes: "
                         f"{', '.join(known) or 'no arguments'}")
    out: dict[str, Any] = {}
    for arg in entry.args:
        if arg.name in given:
            out[arg.name] = _freeze(given[arg.name], allow_refs, arg.name)
        elif arg.default is REQUIRED:
            raise BuildError(f"missing required argument {arg.name!r}")
        else:
            out[arg.name] = arg.default
    return out


def _freeze(value: Any, allow_refs: bool, where: str) -> Any:
    """Lists become tuples (immutable step data, and never mutated by a callee)."""
    if isinstance(value, list):
        return tuple(_freeze(v, allow_refs, where) for v in value)
    if isinstance(value, dict):
        if allow_refs and len(value) == 1 and isinstance(value.get("ref"), str):
            return {"ref": value["ref"]}
        raise BuildError(f"argument {where!r}: {value!r} is not a literal"
                         + ("" if allow_refs else " (layer arguments cannot be {ref: ...})"))
    return value


def _layer_step(name: str, what: str, inputs: Sequence[str], call: Mapping[str, Any] | None = None) -> Step:
    """A layer call: the module at the node's path, with the row's forward keywords (``call``) the node sets."""
    return Step(name, "layer", what, tuple(name.split(".")), None, tuple(inputs), False, (), dict(call or {}), False)


def _op_step(name: str, entry: _Entry, inputs: Sequence[str], args: dict[str, Any]) -> Step:
    positional = POSITIONAL_ARGS.get(entry.name, ())
    extra = tuple(args[k] for k in positional)
    kwargs = {k: v for k, v in args.items() if k not in positional}
    has_refs = any(True for _ in arg_refs(list(args.values())))
    variadic = entry.inputs[1] is None
    fn, device = OP_BINDINGS[entry.name], ""
    if entry.impl == "aten":
        kwargs, device = aten_kwargs(entry, kwargs), device_mode(entry)
    if allocates(entry):
        fn = guarded(name, fn, device == "factory")
    return Step(name, "op", entry.name, (), fn, tuple(inputs), variadic, extra, kwargs, has_refs, device)


def _construct(what: str, args: dict[str, Any], device: Any) -> nn.Module:
    cls = LAYER_BINDINGS[what]
    if device is None:
        return cls(**args)
    if torch.device(device).type == "meta":
        with torch.device(device), _SkipInitOnMeta():
            return cls(**args)
    with torch.device(device):
        return cls(**args)


# in-place initialisers a constructor calls on its fresh parameters: the functions of torch.nn.init (they
# dispatch __torch_function__ themselves) and the Tensor methods that reset_parameters calls directly
_INIT_METHODS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_})


class _SkipInitOnMeta(torch.overrides.TorchFunctionMode):
    """Constructors' initialisers do nothing to meta tensors: there are no values to fill.

    Not only saved work: torch's meta ``normal_`` (``nn.Embedding``'s init) imports
    ``torch._dynamo`` on first use, about a second of a process's first ``load_model``.
    """

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if (func in _INIT_METHODS or getattr(func, "__module__", None) == "torch.nn.init") and \
                isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def _state_bytes(module: nn.Module | torch.Tensor) -> int:
    if isinstance(module, torch.Tensor):
        return module.numel() * module.element_size()
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def held_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a .mpk stores for ``module``: its state_dict (keep_vars), then its non-persistent buffers.

    A non-persistent buffer (a RoPE table torch.export read) stays out of
    ``state_dict()``, as in the original model, but the rebuilt model still needs
    its values, so the file holds it under its dotted name all the same.
    """
    held = dict(module.state_dict(keep_vars=True))
    for name, tensor in module.named_buffers(remove_duplicate=False):
        held.setdefault(name, tensor)
    return held


def registered(module: nn.Module, dotted: str) -> nn.Module:
    """The registered submodule at ``dotted`` (``_modules`` only, unlike ``get_submodule``'s getattr,
    which a method or attribute of the same name would answer: a node may be named ``_run``)."""
    for part in dotted.split(".") if dotted else ():
        module = module._modules[part]  # type: ignore[assignment]
    return module


def follow_key_order(root: nn.Module, keys: Iterable[str]) -> None:
    """Re-register children, parameters and buffers so ``state_dict()`` lists ``keys`` in their order.

    A spec's nodes run in execution order, which is not always the order the original registered its
    modules in (a pre-norm block runs its norm first); the file's tensors keep the original's order,
    and the rebuilt model follows it. Names ``keys`` does not hold keep their place, after the others.
    """
    rank: dict[str, int] = {}
    for i, key in enumerate(keys):
        parts = key.split(".")
        for j in range(1, len(parts) + 1):
            rank.setdefault(".".join(parts[:j]), i)
    last = len(rank) + 1
    for prefix, module in list(root.named_modules()):
        for registry in (module._parameters, module._buffers, module._modules):
            items = sorted(registry.items(), key=lambda kv: rank.get(f"{prefix}.{kv[0]}" if prefix else kv[0], last))
            registry.clear()
            registry.update(items)


def _attach(root: nn.Module, name: str, module: nn.Module, persistent: bool = True) -> None:
    """Register ``module`` at the dotted ``name``, creating Namespace levels on the way.

    Straight into ``_modules``/``_parameters``/``_buffers``, not through ``add_module``/``setattr``:
    children live in those registries and the interpreter's own state in plain attributes, two
    namespaces that cannot collide, so a node named ``spec`` or ``_steps`` is just a child (the
    interpreter reads children from the registries only). The spec's name rules already keep
    node names off torch's own ``nn.Module`` attributes (``training``, ``forward``...).
    """
    *parents, leaf = name.split(".")
    parent = root
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = parent._modules[part] = Namespace()
        parent = child
    if isinstance(module, nn.Parameter):
        parent._parameters[leaf] = module
    elif isinstance(module, torch.Tensor):
        parent._buffers[leaf] = module
        if not persistent:
            parent._non_persistent_buffers_set.add(leaf)
    else:
        parent._modules[leaf] = module
