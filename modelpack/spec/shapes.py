"""Level 3: shapes, delegated to ``modelpack.torch.shapes`` (the only torch import of spec/).

The contract with the torch package: ``modelpack.torch.shapes.check_shapes(spec)``
takes the *expanded* spec (``expand_blocks``: flat nodes, explicit ``in``), runs the
declared input shapes through it on the meta device, and yields a ``ShapeError``
per problem whose ``where`` is the expanded node name, e.g. ``ShapeError("Linear
expects in_features=256, got input [batch, 128]", where="output")``. We print it
as ``node 'output'`` at the line where that node (or its block node) is written.
When torch or that module is missing, shapes are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import SpecError
from .blocks import Origin
from .findings import Problem

__all__ = ["shape_problems"]


def shape_problems(expanded: dict[str, Any], origins: dict[str, Origin]) -> Iterator[Problem]:
    """Problems found by the torch shape checker, or one warning saying why shapes were not checked."""
    try:
        from ..torch.shapes import check_shapes
    except ImportError as e:
        yield Problem((), f"not checked: {_why(e)}", "warning", label="shapes")
        return
    for err in check_shapes(expanded):
        origin = origins.get(err.where or "")
        path = origin.path if origin else ()
        label = f"node {err.where!r}" if err.where else None
        yield Problem(path, err.message, label=label, error_type=type(err) if isinstance(err, SpecError)
                      else SpecError)


def _why(e: ImportError) -> str:
    if e.name == "torch" or (e.name or "").startswith("torch."):
        return "torch is not installed (pip install 'modelpack[torch]')"
    return f"this modelpack has no shape checker ({e.name or e})"
