"""``modelpack.export``: a traceable nn.Module -> one .mpk holding its spec and its weights.

The steps, each a function below: run the example once in eval mode (which
materialises Lazy modules and gives the reference outputs); trace with torch.fx
(:mod:`._trace`), keeping vocabulary layers whole; map the graph to spec nodes
(:mod:`._export_graph`, with :mod:`._export_layers` and :mod:`._export_ops`);
write the spec as readable YAML (:mod:`._spec_text`) and validate it like any
hand-written spec; rebuild the model from that spec, give it the original's
weights and check it reproduces the reference outputs; only then write the file.

Reproduction policy: by default the rebuilt model must give *bit-identical*
outputs. The spec calls the same torch kernels with the same weights in the
same order, so any difference means the spec computes something else (a lost
in-place alias, a hook, a mapping bug), and a tolerance would hide exactly
that. ``atol=`` accepts a known, bounded difference; the error and the warning
state the max abs difference either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .. import tree
from ..api import write_pack
from ..errors import ExportError, ModelPackError, SpecError
from ..spec.names import identifier_problem
from ..vocab import VOCAB_VERSION
from ._capture import ExportWarning
from ._blockify import blockify
from ._export_capture import capture_program, capture_spec, state_for
from ._export_graph import GraphSpec, graph_to_spec
from ._export_layers import is_layer_type
from ._spec_text import spec_to_yaml
from ._trace import InputSlot, trace
from .build import SpecModule, build_validated, held_tensors, prepare, registered
from .compare import Mismatch, compare_tensors
from .tensors import dtype_row

__all__ = ["export", "export_spec", "ExportWarning", "ReproductionWarning"]

_BATCH = "batch"
# "auto": torch.export, then the fx tracer where torch.export gives up; "export"/"fx": that path only
_CAPTURES = ("auto", "export", "fx")
DEFAULT_CAPTURE = "auto"
# seconds torch.export may spend keeping every size symbolic (the default) before fewer are kept symbolic
DEFAULT_DYNAMIC_TIMEOUT = 60.0


class ReproductionWarning(UserWarning):
    """The rebuilt model matched within ``atol`` but not bit for bit (the message says by how much)."""


class _NotReproduced(ExportError):
    """The rebuilt model's outputs differ from the original's (beyond ``atol``)."""


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """Which sizes may vary, as the caller asked: ``dynamic_dims``, ``dynamic_shapes``, ``dynamic_timeout``."""

    dims: Mapping[str, Mapping[int, str]] | None
    shapes: Any
    timeout: float | None


@dataclasses.dataclass
class _Call:
    """The example call: arguments with tensors replaced by InputSlots, and the tensors by input name."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # spec input name -> example tensor, in placeholder order


# ----------------------------------------------------------------------------- public


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    metadata: Mapping[str, str] | None = None,
    name: str | None = None,
    dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
    dynamic_shapes: Any = None,
    capture: str | None = None,
    atol: float = 0.0,
    max_shard_size: int | str | None = None,
    dynamic_timeout: float | None = DEFAULT_DYNAMIC_TIMEOUT,
) -> None:
    """Save ``model`` -- architecture and weights -- as one .mpk that loads without its source.

    ``example_inputs`` is what the model is called with: one tensor, a tuple of
    positional arguments, or a dict of keyword arguments. Tensors become the
    spec's inputs (named after forward's parameters); other values (``None``,
    flags) are fixed at their example values. The example runs once, in eval
    mode and without gradients (materialising Lazy modules); the model's
    train/eval flags are restored afterwards.

    The model is captured with the torch.fx tracer where it can be (a
    layer-level spec that keeps mode-dependent code and the original
    state_dict keys); where fx cannot trace it (data-dependent Python, as in
    transformers) with ``torch.export`` (non-strict), whose ATen IR is written
    as is, with calls of vocabulary layers folded back into layer nodes.
    ``capture="export"`` or ``"fx"`` forces one path (default ``"auto"``).

    ``dynamic_dims`` names the sizes that may vary, per input: ``{"x": {0:
    "batch", 1: "seq"}}``; ``dynamic_shapes`` takes torch.export's own
    (``Dim``) form instead. By default torch.export keeps every size symbolic
    that the model allows (``Dim.AUTO``). Where that fails (torch's symbolic
    solver gives up on the model's size arithmetic) or takes more than
    ``dynamic_timeout`` seconds (default 60; ``None``: no limit; checked at
    each submodule call), the model is captured again with only each input's
    leading (batch) dim symbolic, then with none, and an ``ExportWarning``
    names the sizes that were fixed. Sizes you name are never fixed. ``name``
    defaults to the class name. ``metadata`` (str -> str) goes to the manifest.
    ``max_shard_size`` (``"2GB"``) splits a bigger model into shards beside
    ``path``, as :func:`modelpack.save` does.

    Raises :class:`~modelpack.ExportError` naming the module, the source line
    and what is supported when the model cannot be expressed, or when the
    rebuilt model does not reproduce the outputs within ``atol`` (default:
    bit-exact). Nothing is written then.
    """
    model = _unwrap(model)
    text, _, state = _export(model, example_inputs, name, _Sizes(dynamic_dims, dynamic_shapes, dynamic_timeout),
                             atol, capture)
    tree_json, leaves = tree.encode(state)
    write_pack(path, tree_json, leaves, spec_text=text, metadata=metadata, max_shard_size=max_shard_size)


def export_spec(
    model: nn.Module,
    example_inputs: Any,
    *,
    name: str | None = None,
    dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
    dynamic_shapes: Any = None,
    capture: str | None = None,
    atol: float = 0.0,
    dynamic_timeout: float | None = DEFAULT_DYNAMIC_TIMEOUT,
) -> tuple[str, dict[str, Any]]:
    """Everything :func:`export` does except writing: the checked spec as YAML text and as data."""
    text, spec, _ = _export(_unwrap(model), example_inputs, name,
                            _Sizes(dynamic_dims, dynamic_shapes, dynamic_timeout), atol, capture)
    return text, spec


def _export(model: nn.Module, example_inputs: Any, name: str | None, sizes: "_Sizes",
            atol: float, capture: str | None) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """The fx path, else the torch.export path (``capture`` forces one): text, spec, tensors."""
    how = DEFAULT_CAPTURE if capture is None else capture
    if how not in _CAPTURES:
        raise ExportError(f"capture={how!r}; choose one of {', '.join(map(repr, _CAPTURES))}")
    _check_timeout(sizes.timeout)
    call = _example_call(model, example_inputs)
    expected = _reference_run(model, call)
    _check_materialised(model)
    objects = _object_outputs(expected)
    if objects:
        expected = {k: v for k, v in expected.items() if k not in objects}
        with _outputs_without(model, objects):
            return _export_dispatch(model, name, call, expected, sizes, atol, how)
    return _export_dispatch(model, name, call, expected, sizes, atol, how)


def _export_dispatch(model: nn.Module, name: str | None, call: _Call, expected: Any, sizes: "_Sizes",
                     atol: float, how: str) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    if how == "fx":
        return (*_export_traced(model, name, call, expected, sizes.dims, atol), model.state_dict())
    if how == "export" or sizes.shapes is not None:
        return _export_captured(model, name, call, expected, sizes, atol)
    # "auto": the fx tracer first where it captures the model, torch.export for the rest (data-dependent
    # Python such as transformers' masks); both checked bit-exact before writing. torch.export first would
    # lose, on models fx captures: mode-dependent Python beyond dropout and batch norm (stochastic depth,
    # `if self.training:`), which torch.export records in eval mode only; a batch of 1 in the example,
    # which it specializes to 1; and export -> load -> export giving the same spec (its node names and
    # specializations follow the captured program, not the spec). See docs/SPEC.md, "Capture".
    try:
        return (*_export_traced(model, name, call, expected, sizes.dims, atol), model.state_dict())
    except ExportError as traced_error:
        reason = traced_error.message
    try:
        return _export_captured(model, name, call, expected, sizes, atol)
    except ExportError as e:
        e.message += f" (the torch.fx tracer was tried first: {reason})"
        e.args = (e._render(),)
        raise


def _export_captured(model: nn.Module, name: str | None, call: _Call, expected: Any, sizes: "_Sizes",
                     atol: float) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Capture once; convert with layers folded, else (folding changed the outputs) with every op kept."""
    with _eval_mode(model):
        program = capture_program(model, call.args, call.kwargs, call.tensors, sizes.dims, sizes.shapes,
                                  sizes.timeout)
    try:
        return _export_program(model, name, call, expected, program, sizes, atol, fold=True)
    except _NotReproduced as folded:
        # a layer called with arguments its row cannot say (mha(..., need_weights=False)) computes
        # differently once folded: keep every call as its exact ops rather than approximate it
        try:
            return _export_program(model, name, call, expected, program, sizes, atol, fold=False)
        except _NotReproduced:
            raise folded from None


def _export_program(model: nn.Module, name: str | None, call: _Call, expected: Any, program: Any,
                    sizes: "_Sizes", atol: float, fold: bool) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    captured = capture_spec(program, model, call.args, call.kwargs, call.tensors, sizes.dims, sizes.shapes, fold)
    spec = {"modelpack": VOCAB_VERSION, "name": name or _model_name(model), "inputs": captured.inputs,
            **({"sizes": captured.sizes} if captured.sizes else {}),
            "nodes": captured.graph.nodes, "outputs": captured.graph.outputs}
    blocked = _with_blocks(spec, captured.graph, model)
    if blocked is not None:
        try:
            return _checked_spec(model, call, expected, blocked, captured, atol)
        except ModelPackError:
            pass  # blocks the format, a limit or the rebuilt model cannot take: the flat spec says the same
    return _checked_spec(model, call, expected, spec, captured, atol)


def _with_blocks(spec: dict[str, Any], graph: GraphSpec, model: nn.Module) -> dict[str, Any] | None:
    """``spec`` with repeated module calls as blocks (``_blockify``), None when no class repeats."""
    if not graph.owners:
        return None
    keys = [*model.state_dict(), *(p for p, _ in model.named_modules() if p)]
    reserved = {".".join(parts[:i]) for key in keys for parts in [key.split(".")] for i in range(1, len(parts) + 1)}
    classes = {p: type(m).__name__ for p, m in model.named_modules() if p}
    blocks, nodes, outputs = blockify(graph.nodes, graph.outputs, dict(graph.owners), classes,
                                      set(spec["inputs"]), reserved)
    if not blocks:
        return None
    top = {k: v for k, v in spec.items() if k not in ("nodes", "outputs")}
    return {**top, "blocks": blocks, "nodes": nodes, "outputs": outputs}


def _checked_spec(model: nn.Module, call: _Call, expected: Any, spec: dict[str, Any], captured: Any,
                  atol: float) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """The spec's text, once it validates and its rebuilt model reproduces the original."""
    text = spec_to_yaml(spec)
    prepared = _validated(text, captured.graph)
    keys = list(held_tensors(build_validated(prepared, device="meta")))
    state = _original_order(model, state_for(model, keys, captured.extra))
    _check_reproduces(model, prepared, call, expected, atol, state=state)
    return text, spec, state


def _original_order(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in the original's state_dict order (tensors it lacks last): the order the file keeps and
    ``load_model`` rebuilds in, where the spec's nodes follow execution order."""
    rank = {k: i for i, k in enumerate(model.state_dict())}
    return dict(sorted(state.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _export_traced(model: nn.Module, name: str | None, call: _Call, expected: Any,
                   dynamic_dims: Mapping[str, Mapping[int, str]] | None, atol: float) -> tuple[str, dict[str, Any]]:
    graph = trace(model, call.args, call.kwargs)
    converted = graph_to_spec(graph, model, list(call.tensors))
    spec = _document(model, name, call, converted, dynamic_dims)
    text = spec_to_yaml(spec)
    prepared = _validated(text, converted)
    try:
        _check_reproduces(model, prepared, call, expected, atol)
    except ExportError as e:
        raise _with_suspects(e, model, graph)
    return text, spec


# ----------------------------------------------------------------------------- the example


def _check_timeout(timeout: Any) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ExportError(f"dynamic_timeout={timeout!r}; give a number of seconds > 0, or None for no limit")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module itself, not a torch.compile wrapper (whose state_dict keys gain ``_orig_mod.``)."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"export takes an nn.Module; got {type(model).__name__}")
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        model = inner
    if is_layer_type(model):
        raise ExportError(f"the model is a single {type(model).__name__}, whose tensors have no node name to "
                          f"live under; export nn.Sequential(model) instead (state_dict keys gain '0.')")
    return model


def _example_call(model: nn.Module, example: Any) -> _Call:
    """Bind the example to forward's parameters; name each tensor input after its parameter."""
    example = _spec_module_positional(model, example)
    if isinstance(example, Mapping):
        args, kwargs = (), dict(example)
    elif isinstance(example, (tuple, list)):
        args, kwargs = tuple(example), {}
    else:
        args, kwargs = (example,), {}
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except TypeError as e:
        raise ExportError(f"the example inputs do not fit {type(model).__name__}.forward: {e}") from e
    tensors: dict[str, torch.Tensor] = {}
    slot_args = [_slot(v, n, tensors) for v, n in zip(args, _positional_names(model, bound, len(args)))]
    slot_kwargs = {k: _slot(v, k, tensors) for k, v in kwargs.items()}
    if not tensors:
        raise ExportError("the example inputs hold no tensor; pass the tensors the model is called with")
    return _Call(tuple(slot_args), slot_kwargs, tensors)


def _spec_module_positional(model: nn.Module, example: Any) -> Any:
    """A rebuilt model's inputs by keyword, as a tuple in its declared order (else ``example`` as given).

    SpecModule.forward takes ``**named_inputs``, and torch.export pairs keyword values
    that land in ``**kwargs`` with ``dynamic_shapes`` wrongly (its range-constraint step
    sees them twice); given positionally, re-exporting a loaded model captures.
    """
    if not isinstance(model, SpecModule) or not isinstance(example, Mapping):
        return example
    declared = list(model.input_names)
    if list(example) != declared[:len(example)] and set(example) != set(declared):
        return example
    return tuple(example[n] for n in declared if n in example)


def _positional_names(model: nn.Module, bound: inspect.BoundArguments, n: int) -> list[str]:
    """Names for positional values: the parameter's; for ``*args``, a SpecModule's input names or ``<args>_<i>``."""
    names: list[str] = []
    for pname, value in bound.arguments.items():
        param = bound.signature.parameters[pname]
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            declared = list(model.input_names) if isinstance(model, SpecModule) else []
            names += [declared[i] if i < len(declared) else f"{pname}_{i}" for i in range(len(value))]
        elif param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(pname)
    return names[:n]


def _slot(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        problem = identifier_problem(name, "input")
        if problem:
            raise ExportError(f"{problem}; rename forward's parameter")
        tensors[name] = value
        return InputSlot(name)
    if isinstance(value, (tuple, list, dict)) and _holds_tensor(value):
        raise ExportError(f"input {name!r} is a {type(value).__name__} of tensors; the spec's inputs are "
                          "single tensors: pass them as separate arguments")
    return value  # a flag or None: fixed at its example value while tracing


def _holds_tensor(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, torch.Tensor) or (isinstance(v, (tuple, list, dict)) and _holds_tensor(v))
               for v in items)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; every module's own train/eval flag restored after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _call_values(model: nn.Module, call: _Call, tensors: Mapping[str, torch.Tensor]) -> Any:
    def fill(v: Any) -> Any:
        return tensors[v.name] if isinstance(v, InputSlot) else v

    return model(*[fill(a) for a in call.args], **{k: fill(v) for k, v in call.kwargs.items()})


def _reference_run(model: nn.Module, call: _Call) -> Any:
    """The original's outputs on the example (eval mode, no grad); materialises Lazy modules."""
    with _eval_mode(model), torch.no_grad():
        try:
            return _call_values(model, call, call.tensors)
        except Exception as e:
            raise ExportError(f"the model failed on the example inputs: {type(e).__name__}: {e}") from e


_PLAIN_OUTPUTS = (torch.Tensor, tuple, list, dict, int, float, bool, str, type(None))


def _object_outputs(expected: Any) -> list[str]:
    """Named outputs that are Python objects rather than tensors (a transformers KV cache), with a warning.

    A spec returns tensors; an object returned beside them is state for the
    caller's next call (``past_key_values``), not a result. Such outputs are left
    out of the spec rather than failing the whole export; everything else the
    model returns is kept and checked bit for bit.
    """
    if not isinstance(expected, Mapping):
        return []
    objects = [k for k, v in expected.items() if not isinstance(v, _PLAIN_OUTPUTS)]
    if objects:
        kinds = ", ".join(f"{k!r} ({type(expected[k]).__name__})" for k in objects)
        warnings.warn(f"export: the output {kinds} is a Python object, not a tensor, and is left out of the "
                      f"spec; the rebuilt model returns {', '.join(repr(k) for k in expected if k not in objects)}",
                      ExportWarning, stacklevel=4)
    return objects


@contextlib.contextmanager
def _outputs_without(model: nn.Module, drop: list[str]) -> Iterator[None]:
    """Call ``model`` with the named outputs ``drop`` removed (its own forward, on this instance only)."""
    original = model.forward

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        return {k: v for k, v in out.items() if k not in drop} if isinstance(out, Mapping) else out

    had = "forward" in vars(model)
    model.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had:
            model.forward = original  # type: ignore[method-assign]
        else:
            del model.forward


def _check_materialised(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ExportError(f"{type(m).__name__} was never called by the example run, so its sizes are "
                              "unknown; pass example inputs that reach it", where=path or None)


# ----------------------------------------------------------------------------- the document


def _document(model: nn.Module, name: str | None, call: _Call, converted: GraphSpec,
              dynamic_dims: Mapping[str, Mapping[int, str]] | None) -> dict[str, Any]:
    return {
        "modelpack": VOCAB_VERSION,
        "name": name or _model_name(model),
        "inputs": {k: _input_decl(k, t, dynamic_dims) for k, t in call.tensors.items()},
        "nodes": converted.nodes,
        "outputs": converted.outputs,
    }


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)  # a rebuilt SpecModule keeps the name it was exported with
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"]
    return type(model).__name__


def _input_decl(name: str, t: torch.Tensor, dynamic_dims: Mapping[str, Mapping[int, str]] | None) -> dict[str, Any]:
    dims = ({0: _BATCH} if t.dim() else {}) if dynamic_dims is None else dict(dynamic_dims.get(name, {}))
    shape: list[int | str] = list(t.shape)
    for dim, label in dims.items():
        if not isinstance(dim, int) or not -t.dim() <= dim < t.dim():
            raise ExportError(f"dynamic_dims: dim {dim!r} of input {name!r} is out of range (it has {t.dim()} dims)")
        problem = identifier_problem(str(label), "size")
        if problem:
            raise ExportError(f"dynamic_dims for input {name!r}: {problem}")
        shape[dim] = label
    return {"shape": shape, "dtype": dtype_row(t.dtype, where=f"input {name!r}").name}


def _validated(text: str, converted: GraphSpec) -> dict[str, Any]:
    """Validate the text like any spec (then expand blocks); a failure names the model's node."""
    try:
        return prepare(text)
    except SpecError as e:
        raise ExportError(f"the exported spec is not valid: {e.message}{_node_origin(e, converted)}",
                          where=e.where) from e


def _node_origin(e: SpecError, converted: GraphSpec) -> str:
    where = e.where or ""
    if where.startswith("nodes["):
        index = int(where[len("nodes["):].split("]")[0])
        if index < len(converted.nodes):
            name = converted.nodes[index]["name"]
            return f" (node {name!r}: {converted.sources.get(name, 'source unknown')})"
    return ""


# ----------------------------------------------------------------------------- reproduction


def _check_reproduces(model: nn.Module, spec: dict[str, Any], call: _Call, expected: Any, atol: float,
                      state: dict[str, torch.Tensor] | None = None) -> None:
    """Rebuild from the spec on the meta device, give it the original's tensors, compare outputs."""
    rebuilt = build_validated(spec, device="meta")
    _adopt_weights(rebuilt, model, state)
    with torch.no_grad():
        try:
            got = rebuilt.eval()(*call.tensors.values())
        except RuntimeError as e:  # torch's own shape checks: a folded layer given the wrong tensor
            raise _NotReproduced(f"the model rebuilt from the spec does not run on the example: "
                                 f"{str(e).splitlines()[0]}") from e
    _compare(expected, got, atol)


def _adopt_weights(rebuilt: nn.Module, model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> None:
    """The original's tensors themselves (no copy) in the rebuilt model; mismatched keys refused."""
    state = model.state_dict() if state is None else state
    want = held_tensors(rebuilt)
    extra = [k for k in state if k not in want]
    missing = [k for k in want if k not in state]
    if extra or missing:
        raise ExportError(_key_mismatch(extra, missing))
    persistent = rebuilt.state_dict(keep_vars=True)
    try:
        rebuilt.load_state_dict({k: v for k, v in state.items() if k in persistent}, strict=True, assign=True)
    except RuntimeError as e:
        raise ExportError(f"the spec's layers do not fit the model's tensors: {e}") from e
    for key in want.keys() - persistent.keys():  # non-persistent buffers: load_state_dict skips them
        owner, _, leaf = key.rpartition(".")
        registered(rebuilt, owner)._buffers[leaf] = state[key]


def _key_mismatch(extra: list[str], missing: list[str]) -> str:
    parts = []
    if extra:
        owners = sorted({k.rpartition(".")[0] or k for k in extra})
        parts.append(f"the model has tensors no spec node owns: {_few(extra)} -- module(s) {_few(owners)} are "
                     "never called by forward (delete them before exporting), or their tensors are used "
                     "without calling them")
    if missing:
        parts.append(f"the spec implies tensors the model's state_dict lacks: {_few(missing)}")
    return "; ".join(parts)


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _with_suspects(e: ExportError, model: nn.Module, graph: torch.fx.Graph) -> ExportError:
    """Name what a spec cannot carry and the trace does not show: hooks and in-place calls."""
    hooked = [p or type(model).__name__ for p, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    in_place = [n.name for n in graph.nodes if n.kwargs.get("inplace") is True and n.op == "call_function"]
    notes = []
    if hooked:
        notes.append(f"forward hooks are not part of a spec, and these modules have some: {_few(hooked)}")
    if in_place:
        notes.append(f"in-place calls run out of place in a spec; the model's values may depend on their "
                     f"aliasing: {_few(in_place)}")
    if notes:
        e.message += " (" + "; ".join(notes) + ")"
        e.args = (e._render(),)
    return e


def _leaves(value: Any, path: str = "output") -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs in a stable order; lists and tuples are both sequences here."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}[{k!r}]")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _structure(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_structure(v) for v in value]
    return "tensor" if isinstance(value, torch.Tensor) else type(value).__name__


def _compare(expected: Any, got: Any, atol: float) -> None:
    if _structure(expected) != _structure(got):
        raise ExportError(f"the rebuilt model returns {_structure(got)!r} where the original returns "
                          f"{_structure(expected)!r}; a spec returns one tensor as itself, several as a tuple, "
                          "named ones as a dict -- return one of those")
    found = [m for (where, a), (_, b) in zip(_leaves(expected), _leaves(got)) if (m := _mismatch(where, a, b))]
    if not found:
        return
    worst = max(m.max_abs for m in found)
    report = "; ".join(str(m) for m in found[:3]) + (f"; ... ({len(found)} outputs differ)" if len(found) > 3 else "")
    if worst > atol or atol == 0:
        hint = "pass atol= to accept it, if the difference is expected" if atol == 0 else "raise atol to accept it"
        size = f"max abs difference {worst:.3g} > atol={atol:g}" if worst > atol else "the bits differ"
        raise _NotReproduced(f"the model rebuilt from the spec does not reproduce the original: {size}; {hint} "
                          f"({report})")
    warnings.warn(f"the rebuilt model matches within atol={atol:g} but not bit for bit: max abs "
                  f"difference {worst:.3g} ({report})", ReproductionWarning, stacklevel=4)


def _mismatch(where: str, a: Any, b: Any) -> Mismatch | None:
    """How two output leaves differ (None when identical); another dtype or shape is an ExportError."""
    if not isinstance(a, torch.Tensor):
        return None if a == b else Mismatch(where, "values", count=1, numel=1, first=((), repr(a), repr(b)),
                                             max_at=((), repr(a), repr(b)))
    found = compare_tensors(a, b, where=where)
    if found is not None and found.kind != "values":
        raise ExportError(f"{where}: the rebuilt model gives {list(b.shape)} {b.dtype}, the original "
                          f"{list(a.shape)} {a.dtype}")
    return found
