"""Level 3: shapes, checked by a checker the caller passes in (the spec layer never imports torch).

The contract: a ``ShapeChecker`` takes the *expanded* spec (``expand_blocks``:
flat nodes, explicit ``in``), runs the declared input shapes through it, and
returns a ``ShapeError`` per problem whose ``where`` is the expanded node name,
e.g. ``ShapeError("Linear expects in_features=256, got input [batch, 128]",
where="output")``. We print it as ``node 'output'`` at the line where that node
(or its block node) is written. A checker that raises ImportError (torch is
missing) turns into one warning saying shapes were not checked.
``modelpack.validate`` and ``modelpack validate --shapes`` pass torch's checker
(``modelpack.checks.torch_shape_checker``).

Calls are checked here too, without torch: ``input_rules`` (once per model) and
``check_inputs`` (per call: rank, fixed dims, ``sizes`` bounds), used by the
rebuilt model's forward and by ``modelpack run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import ShapeError, SpecError
from .blocks import Origin
from .findings import Problem

__all__ = ["ShapeChecker", "shape_problems", "Bound", "InputRules", "input_rules", "check_inputs"]

# (input, dim, size name, min, max): one input dimension whose symbolic size the spec bounds
Bound = tuple[str, int, str, int, "int | None"]


class InputRules(NamedTuple):
    """What a call's input shapes must satisfy, computed once per model: checked on every call."""

    shapes: tuple[tuple[str, tuple[Any, ...], tuple[tuple[int, int], ...]], ...]  # (input, declared, fixed dims)
    bounds: tuple[Bound, ...]  # symbolic sizes the spec's ``sizes`` bounds


def input_rules(spec: Mapping[str, Any]) -> InputRules:
    """Each input's rank and fixed (int) dims, and the bounded symbolic ones, from the spec's ``inputs``."""
    sizes = spec.get("sizes") or {}
    inputs = spec["inputs"]
    shapes = tuple((name, tuple(decl["shape"]), tuple((d, s) for d, s in enumerate(decl["shape"])
                                                      if isinstance(s, int)))
                   for name, decl in inputs.items())
    bounds = tuple((name, d, label, int(sizes[label].get("min", 0)), sizes[label].get("max"))
                   for name, decl in inputs.items() for d, label in enumerate(decl["shape"])
                   if isinstance(label, str) and label in sizes)
    return InputRules(shapes, bounds)


def check_inputs(rules: InputRules, values: Mapping[str, Any]) -> None:
    """A ShapeError naming the input when a value's rank, a fixed dim or a bounded size breaks the spec.

    ``values`` maps input names to anything whose ``shape`` is a tuple (tensors, arrays); others
    (tracer proxies, Python scalars) are skipped, as are missing inputs (reported where inputs are
    bound). A declared int is a fixed size: a graph captured at that size may bake sizes derived
    from it (reshapes, window partitions), so another size could run and give wrong numbers.
    """
    for name, declared, fixed in rules.shapes:
        shape = getattr(values.get(name), "shape", None)
        if not isinstance(shape, tuple):
            continue
        if len(shape) != len(declared):
            raise ShapeError(f"expected shape {_fmt(declared)} (rank {len(declared)}), got {list(shape)} (rank "
                             f"{len(shape)})", where=f"input {name!r}")
        for d, size in fixed:
            if shape[d] != size:
                raise ShapeError(f"dim {d} is {int(shape[d])}; the spec declares {size} ({_fix_hint(size)})",
                                 where=f"input {name!r}")
    for name, d, label, low, high in rules.bounds:
        shape = getattr(values.get(name), "shape", None)
        if not isinstance(shape, tuple):
            continue
        size = int(shape[d])
        if size < low or (high is not None and size > high):
            span = f"{low} <= {label} <= {high}" if high is not None else f"{label} >= {low}"
            raise ShapeError(f"dim {d} ({label!r}) is {size}; the model was exported for {span} (the spec's "
                             "sizes: what torch.export found the model supports)", where=f"input {name!r}")


def _fix_hint(size: int) -> str:
    """How to get a file that runs other sizes of a dim the spec fixes."""
    if size in (0, 1):  # torch.export specializes these whatever dynamic_shapes says
        return ("a fixed size: torch.export fixes a dim whose example size is 0 or 1; export with an example "
                "of 2 or more in that dim to run other sizes")
    return "a fixed size: export with that dim dynamic — dynamic_dims / dynamic_shapes — to run other sizes"


def _fmt(dims: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


ShapeChecker = Callable[[dict[str, Any]], Iterable[SpecError]]


def shape_problems(expanded: dict[str, Any], origins: dict[str, Origin], checker: ShapeChecker) -> Iterator[Problem]:
    """Problems found by ``checker``, or one warning saying why shapes were not checked."""
    try:
        errors = list(checker(expanded))
    except ImportError as e:
        yield Problem((), f"not checked: {_why(e)}", "warning", label="shapes")
        return
    for err in errors:
        origin = origins.get(err.where or "")
        path = origin.path if origin else ()
        label = f"node {err.where!r}" if err.where else None
        yield Problem(path, err.message, label=label, error_type=type(err) if isinstance(err, SpecError)
                      else SpecError)


def _why(e: ImportError) -> str:
    if e.name == "torch" or (e.name or "").startswith("torch."):
        return "torch is not installed (pip install 'modelpack[torch]')"
    return f"this modelpack has no shape checker ({e.name or e})"
