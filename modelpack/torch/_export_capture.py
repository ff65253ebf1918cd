"""The torch.export path of ``modelpack.export``: example call -> program -> spec pieces and tensors.

Which sizes may vary: by default every dimension of every input is
``Dim.AUTO`` (torch.export keeps symbolic what the model allows, and
specializes the rest); ``dynamic_dims`` ({input: {dim: label}}) or torch's own
``dynamic_shapes`` narrow that. Keeping every size symbolic can make
torch.export fail (its sympy solver gives up on some size arithmetic) or take
minutes (window partitioning, padding to multiples); the default then falls
back to fewer symbolic sizes, with a warning (:func:`capture_program`). The
spec's input shapes name each symbolic size (``batch`` for a leading one, else
``<input>_<dim>``; one name per symbol, so ``input_ids`` and ``attention_mask``
share theirs).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from ..errors import ExportError
from ..spec.names import identifier_problem
from ._budget import CaptureTimeout, time_limit
from ._capture import ExportWarning, capture, program_to_spec
from ._export_graph import GraphSpec
from ._trace import InputSlot
from .tensors import dtype_row

__all__ = ["CaptureResult", "capture_program", "capture_spec", "state_for"]


@dataclasses.dataclass
class CaptureResult:
    graph: GraphSpec
    inputs: dict[str, dict[str, Any]]  # the spec's input declarations
    extra: dict[str, torch.Tensor]  # tensors outside the state_dict (lifted constants...) by node name
    sizes: dict[str, dict[str, int]]  # size name -> {min, max}: the bounds torch.export recorded, where real


def capture_program(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    tensors: Mapping[str, torch.Tensor], dynamic_dims: Mapping[str, Mapping[int, str]] | None,
                    dynamic_shapes: Any, timeout: float | None = None) -> ExportedProgram:
    """torch.export's program for the example (InputSlots in args/kwargs stand for ``tensors``).

    Sizes the caller chose (``dynamic_dims``, ``dynamic_shapes``) are captured
    as asked. The default, every size ``Dim.AUTO``, falls back when torch.export
    fails or takes more than ``timeout`` seconds: first only each input's leading
    (batch) dim stays symbolic, then none; an ExportWarning names the sizes fixed.
    """
    real_args = tuple(_fill(a, tensors) for a in args)
    real_kwargs = {k: _fill(v, tensors) for k, v in kwargs.items()}
    if dynamic_shapes is not None or dynamic_dims is not None:
        shapes = dynamic_shapes if dynamic_shapes is not None else _shapes(model, args, kwargs, tensors, dynamic_dims)
        return capture(model, real_args, real_kwargs, shapes)
    failures: list[str] = []
    plans = _plans(tensors)
    for i, dims in enumerate(plans):
        shapes = _shapes(model, args, kwargs, tensors, None, auto=dims)
        try:
            with time_limit(timeout if i == 0 else None) as deadline:
                program = capture(model, real_args, real_kwargs, shapes)
        except (ExportError, CaptureTimeout) as e:  # the limit may strike in capture's decompositions too
            reason = _over_time(timeout) if deadline.expired else str(getattr(e, "message", e))
            if i + 1 == len(plans) or (failures and reason == failures[-1]):
                raise _failed(e if isinstance(e, ExportError) else ExportError(reason), failures) from e
            failures.append(reason)
            continue
        if failures:
            _warn_fixed(tensors, plans[0], dims, failures[0])
        _warn_leading_one(tensors)
        return program
    raise AssertionError("unreachable: the last plan returns or raises")


def capture_spec(program: ExportedProgram, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                 tensors: Mapping[str, torch.Tensor], dynamic_dims: Mapping[str, Mapping[int, str]] | None,
                 dynamic_shapes: Any, fold: bool = True) -> CaptureResult:
    """The spec pieces of a captured ``program``; ``fold=False`` keeps every layer call as its ATen ops."""
    leaves = torch.utils._pytree.tree_leaves((args, kwargs), is_leaf=lambda v: isinstance(v, InputSlot))
    names = [leaf.name if isinstance(leaf, InputSlot) else None for leaf in leaves]
    captured = program_to_spec(program, model, names, fold=fold)
    labels, symbols = _labels(program, names, dynamic_dims or _dim_names(dynamic_shapes))
    inputs = {name: _declaration(name, tensors[name], shape) for name, shape in labels.items()}
    return CaptureResult(captured.graph, inputs, captured.extra_state, _bounds(program, symbols))


# ----------------------------------------------------------------------------- the default's fallback

Dims = frozenset[tuple[str, int]]  # (input, dim) pairs left to torch.export as Dim.AUTO


def _plans(tensors: Mapping[str, torch.Tensor]) -> list[Dims]:
    """Which dims are AUTO, try by try: all, then each input's leading one, then none.

    A try that differs from the one before only in dims of size 0 or 1 (which
    torch.export specializes anyway) would capture the same program: skipped.
    """
    every = [(name, d) for name, t in tensors.items() for d in range(t.dim())]
    plans = [frozenset(every), frozenset(p for p in every if p[1] == 0), frozenset()]
    return [p for i, p in enumerate(plans) if i == 0 or _varying(p, tensors) != _varying(plans[i - 1], tensors)]


def _varying(dims: Dims, tensors: Mapping[str, torch.Tensor]) -> Dims:
    """The dims that can stay symbolic: torch.export specializes a size of 0 or 1."""
    return frozenset((name, d) for name, d in dims if tensors[name].shape[d] > 1)


def _over_time(timeout: float | None) -> str:
    return f"it took more than dynamic_timeout={timeout:g} s"


def _failed(error: ExportError, failures: list[str]) -> ExportError:
    """The last try's error; the first try's reason beside it when that one differed."""
    if failures and failures[0] != error.message:
        error.message += f" (with every size symbolic it failed first: {failures[0]})"
        error.args = (error._render(),)
    return error


def _warn_fixed(tensors: Mapping[str, torch.Tensor], wanted: Dims, kept: Dims, reason: str) -> None:
    fixed: dict[str, list[int]] = {}
    for name, d in sorted(_varying(wanted - kept, tensors), key=lambda p: (list(tensors).index(p[0]), p[1])):
        fixed.setdefault(name, []).append(d)
    what = "; ".join(f"input {name!r} dim{'s' if len(ds) > 1 else ''} {', '.join(map(str, ds))} fixed at "
                     f"{', '.join(str(tensors[name].shape[d]) for d in ds)}" for name, ds in fixed.items())
    still = "only the leading (batch) dims symbolic" if _varying(kept, tensors) else "every size fixed"
    warnings.warn(f"export: torch.export could not keep every size symbolic ({reason}); captured again with "
                  f"{still}: {what}. The spec declares those sizes fixed; pass dynamic_dims= (or "
                  "dynamic_shapes=) to choose the sizes that may vary, or dynamic_timeout=None to wait longer",
                  ExportWarning, stacklevel=7)


def _warn_leading_one(tensors: Mapping[str, torch.Tensor]) -> None:
    """Say so when an input's leading (batch) dim is 0 or 1 in the example: torch.export fixes it."""
    ones = [name for name, t in tensors.items() if t.dim() and t.shape[0] < 2]
    if ones:
        warnings.warn(f"export: the leading dim of input{'s' if len(ones) > 1 else ''} "
                      f"{', '.join(repr(n) for n in ones)} is {tensors[ones[0]].shape[0]} in the example; "
                      "torch.export fixes sizes 0 and 1, so the file runs only at that size there. Export with an "
                      "example of 2 or more in that dim to keep it free", ExportWarning, stacklevel=7)


def _dim_names(dynamic_shapes: Any) -> dict[str, dict[int, str]] | None:
    """``{input: {dim: name}}`` from torch's ``dynamic_shapes`` by input name, for the named ``Dim``s in it."""
    if not isinstance(dynamic_shapes, Mapping):
        return None
    out: dict[str, dict[int, str]] = {}
    for name, dims in dynamic_shapes.items():
        if isinstance(dims, Mapping):
            named = {d: v.__name__ for d, v in dims.items()
                     if isinstance(d, int) and isinstance(getattr(v, "__name__", None), str)
                     and not identifier_problem(v.__name__, "size")}
            if named:
                out[str(name)] = named
    return out or None


def _bounds(program: Any, symbols: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """The range constraints of the named sizes that say something: a finite max, or a min above 2.

    torch.export's lower bound of 2 comes from its 0/1 specialization, which
    its own ``module()`` does not enforce at run time (batch 1 runs), so it is
    not kept; a bound from ``Dim(min=, max=)`` or from the model's own checks is.
    """
    import sympy  # torch's own dependency; only export reads range constraints

    out: dict[str, dict[str, int]] = {}
    for symbol, vr in program.range_constraints.items():
        label = symbols.get(str(symbol))
        if label is None:
            continue
        bounds: dict[str, int] = {}
        low, high = vr.lower, vr.upper  # sympy integers, or torch's int_oo (not a sympy Integer)
        if isinstance(high, sympy.Integer):
            bounds["max"] = int(high)
        if isinstance(low, sympy.Integer) and int(low) > 2:
            bounds["min"] = int(low)
        if bounds:
            out[label] = bounds
    return out


def _fill(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    return tensors[value.name] if isinstance(value, InputSlot) else value


def _shapes(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], tensors: Mapping[str, torch.Tensor],
            dynamic_dims: Mapping[str, Mapping[int, str]] | None, auto: Dims = frozenset()) -> Any:
    """torch.export's dynamic_shapes for the call: Dims named by ``dynamic_dims``, else AUTO on the ``auto`` dims."""
    dims: dict[str, Any] = {}

    def spec_of(value: Any) -> Any:
        if not isinstance(value, InputSlot):
            return None
        t = tensors[value.name]
        if dynamic_dims is None:
            return {d: torch.export.Dim.AUTO for d in range(t.dim()) if (value.name, d) in auto} or None
        given = dynamic_dims.get(value.name, {})
        for d, label in given.items():
            if not isinstance(d, int) or not -t.dim() <= d < t.dim():
                raise ExportError(f"dynamic_dims: dim {d!r} of input {value.name!r} is out of range "
                                  f"(it has {t.dim()} dims)")
            if t.shape[d] < 2:
                raise ExportError(f"dynamic_dims: dim {d} ({label!r}) of input {value.name!r} is {t.shape[d]} in "
                                  "the example, and torch.export fixes sizes 0 and 1; give an example of 2 or "
                                  "more in that dim")
            problem = identifier_problem(str(label), "size")
            if problem:
                raise ExportError(f"dynamic_dims for input {value.name!r}: {problem}")
        return {d % t.dim(): dims.setdefault(label, torch.export.Dim(label)) for d, label in given.items()} or None

    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    out: dict[str, Any] = {}
    for pname, value in bound.arguments.items():
        kind = bound.signature.parameters[pname].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out[pname] = tuple(spec_of(v) for v in value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out[pname] = {k: spec_of(v) for k, v in value.items()}
        else:
            out[pname] = spec_of(value)
    return out


def _labels(program: Any, names: list[str | None], dynamic_dims: Mapping[str, Mapping[int, str]] | None
            ) -> tuple[dict[str, list[int | str]], dict[str, str]]:
    """Each input's shape as the spec writes it (ints, and a name per symbolic size); symbol -> name."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    symbols: dict[str, str] = {}
    out: dict[str, list[int | str]] = {}
    for spec, name in zip(user, names):
        if name is None:
            continue
        val = placeholders[spec.arg.name].meta["val"]
        shape: list[int | str] = []
        for d, size in enumerate(val.shape):
            if isinstance(size, int) or size.node.expr.is_number:  # static, or specialized by torch.export
                shape.append(int(size))
                continue
            expr = str(size.node.expr)
            if expr not in symbols:
                given = (dynamic_dims or {}).get(name, {})
                label = given.get(d) or given.get(d - val.dim()) or ("batch" if d == 0 else f"{name}_{d}")
                if label in symbols.values():
                    label = f"{label}_{len(symbols)}"
                problem = identifier_problem(label, "size")
                if problem or not expr.isidentifier():
                    raise ExportError(f"input {name!r} dim {d} has the size {expr}, which a spec cannot name")
                symbols[expr] = label
            shape.append(symbols[expr])
        out[name] = shape
    return out, symbols


def _declaration(name: str, tensor: torch.Tensor, shape: list[int | str]) -> dict[str, Any]:
    return {"shape": shape, "dtype": dtype_row(tensor.dtype, where=f"input {name!r}").name}


def state_for(model: nn.Module, keys: list[str], extra: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the rebuilt model's state_dict ``keys``: the original's, then the captured extras."""
    own = model.state_dict()
    missing = [k for k in keys if k not in own and k not in extra]
    if missing:
        raise ExportError(f"the captured program reads tensors the model does not hold: {', '.join(missing[:5])}")
    return {k: own[k] if k in own else extra[k] for k in keys}
