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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ShapeError, SpecError
from .blocks import Origin
from .findings import Problem

__all__ = ["ShapeChecker", "shape_problems", "Bound", "size_bounds", "check_size_bounds"]

# (input, dim, size name, min, max): one input dimension whose symbolic size the spec bounds
Bound = tuple[str, int, str, int, "int | None"]


def size_bounds(spec: Mapping[str, Any]) -> tuple[Bound, ...]:
    """Every input dimension named by a size that ``sizes`` bounds (computed once per model)."""
    sizes = spec.get("sizes") or {}
    return tuple((name, d, label, int(sizes[label].get("min", 0)), sizes[label].get("max"))
                 for name, decl in spec["inputs"].items() for d, label in enumerate(decl["shape"])
                 if isinstance(label, str) and label in sizes)


def check_size_bounds(bounds: Sequence[Bound], shapes: Mapping[str, Sequence[int]]) -> None:
    """A ShapeError naming the input and the size when a real input's size is outside its bounds."""
    for name, d, label, low, high in bounds:
        shape = shapes.get(name)
        if shape is None or d >= len(shape):
            continue  # a missing input or a wrong rank is reported where inputs are bound
        size = int(shape[d])
        if size < low or (high is not None and size > high):
            span = f"{low} <= {label} <= {high}" if high is not None else f"{label} >= {low}"
            raise ShapeError(f"dim {d} ({label!r}) is {size}; the model was exported for {span} (the spec's "
                             "sizes: what torch.export found the model supports)", where=f"input {name!r}")

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
