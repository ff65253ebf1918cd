"""The closed, versioned vocabulary of layers and ops (torch-free).

``LAYERS`` and ``OPS`` are read-only mappings built from the one table in
``vocab/table.py``. Names are never resolved any other way: an unknown name is
answered with the nearest known ones, never looked up on a module.
"""

from __future__ import annotations

import difflib
from typing import Literal

from ..errors import SpecError
from .table import LAYERS, OPS, VOCAB_VERSION
from .types import REQUIRED, Arg, LayerDef, OpDef

__all__ = [
    "VOCAB_VERSION",
    "LAYERS",
    "OPS",
    "REQUIRED",
    "Arg",
    "LayerDef",
    "OpDef",
    "Kind",
    "lookup",
    "suggest",
    "unknown_name_message",
]

Kind = Literal["layer", "op"]


def _table(kind: Kind) -> "dict[str, LayerDef] | dict[str, OpDef]":
    return LAYERS if kind == "layer" else OPS  # type: ignore[return-value]


def suggest(name: str, kind: Kind, *, n: int = 3) -> list[str]:
    """The known names of ``kind`` closest to ``name`` (case-insensitive first)."""
    names = list(_table(kind))
    folded = [k for k in names if k.lower() == name.lower()]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    close_folded = difflib.get_close_matches(name.lower(), [k.lower() for k in names], n=n, cutoff=0.6)
    by_lower = {k.lower(): k for k in names}
    ordered = folded + close + [by_lower[k] for k in close_folded]
    return list(dict.fromkeys(ordered))[:n]


def unknown_name_message(name: object, kind: Kind) -> str:
    """One message for an unknown layer/op name: what was given, what is near, what exists."""
    other: Kind = "op" if kind == "layer" else "layer"
    text = f"unknown {kind} {name!r}"
    if not isinstance(name, str):
        return f"{text}; the name must be a string"
    if name in _table(other):
        article = "an" if other == "op" else "a"
        return f"{text}: {name!r} is {article} {other}, write `{other}: {name}`"
    near = suggest(name, kind)
    if near:
        return f"{text}; did you mean {' or '.join(repr(n) for n in near)}?"
    return f"{text}; known {kind}s: {', '.join(_table(kind))}"


def lookup(name: str, kind: Kind) -> LayerDef | OpDef:
    """The entry for ``name``; SpecError naming the nearest known entries if there is none."""
    table = _table(kind)
    if isinstance(name, str) and name in table:
        return table[name]
    raise SpecError(unknown_name_message(name, kind))
