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

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import SpecError
from .blocks import Origin
from .findings import Problem

__all__ = ["ShapeChecker", "shape_problems"]

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
