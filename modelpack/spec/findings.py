"""What the checks report: a Problem (a spec path + a message) becomes a located Finding.

Checks work on paths only; turning a path into ``file:line:col: where`` happens
once, here, so every level reports locations the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Literal

from ..errors import SpecError
from .yamlio import Path, Positions, format_path

__all__ = ["Severity", "Problem", "Finding", "locate", "did_you_mean"]

Severity = Literal["error", "warning"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) at ``path`` of the spec document."""

    path: Path
    message: str
    severity: Severity = "error"
    key: bool = False  # point at the mapping key rather than its value (unknown keys)
    label: str | None = None  # shown instead of the path (shape errors name the expanded node)
    error_type: type[SpecError] = SpecError


@dataclasses.dataclass(frozen=True)
class Finding:
    """A located problem: ``error`` carries where/line/column/source; warnings do not fail validation."""

    severity: Severity
    error: SpecError

    def __str__(self) -> str:
        return str(self.error)


def locate(problem: Problem, positions: Positions | None, source: str | None) -> Finding:
    """Attach the line and column of the problem's path (or of its nearest located parent)."""
    located = positions.locate(problem.path, key=problem.key) if positions and problem.path else None
    line, column = located or (None, None)
    where = problem.label or format_path(problem.path) or None
    error = problem.error_type(problem.message, where=where, source=source, line=line, column=column)
    return Finding(problem.severity, error)


def did_you_mean(name: str, known: Iterable[str], *, n: int = 3, fallback: str = "") -> str:
    """``; did you mean 'a' or 'b'?`` for the known names nearest ``name``, else ``fallback``."""
    near = difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(k) for k in near)}?" if near else fallback
