"""Checks that span layers, so they live above ``api`` and ``torch``: a file against its model, a spec
against its shapes.

``verify`` is the container's checksums and structure and the spec (``api.verify``)
plus, when torch is installed, every tensor against what the spec implies
(``torch.load.cross_check``). ``validate`` is the spec layer's validation with
torch's shape checker plugged in when ``shapes=True``. The lower layers never
reach up for these: the spec layer takes the shape checker as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from . import api
from .errors import SpecError

__all__ = ["verify", "validate", "torch_shape_checker"]


def verify(path: str | os.PathLike[str], *, progress: bool | None = None) -> None:
    """Check structure, every checksum, the spec, and the spec against the weights; raise on any problem.

    A distributed checkpoint folder is checked whole: metadata, chunk coverage, every shard.
    """
    from .dcp import _layout as dcp_layout

    if dcp_layout.is_dcp_folder(path):
        dcp_layout.verify(path)
        return
    with api.Pack(path) as pack:
        pack.verify(progress=progress)
        spec = api.checked_spec(pack)
        if spec is None:
            return
        try:
            from .torch.load import cross_check
        except ImportError:  # torch (or the model package) is absent: container + spec checks only
            return
        cross_check(spec, pack)


def torch_shape_checker(expanded: dict[str, Any]) -> Iterable[SpecError]:
    """The spec layer's shape checker, from torch; ImportError (a warning there) without torch."""
    from .torch.shapes import check_shapes

    return check_shapes(expanded)


def validate(spec: Any, *, shapes: bool = False, source: str | None = None) -> dict[str, Any]:
    """:func:`modelpack.spec.validate`, with torch's shape checker when ``shapes`` (skipped with a warning
    when torch is missing)."""
    from .spec import validate as validate_spec

    return validate_spec(spec, shapes=torch_shape_checker if shapes else False, source=source)
