"""What the checks report: a Problem (a spec path + a message) becomes a located Finding.

Checks work on paths only; turning a path into ``file:line:col: where`` happens
once, here, so every level reports locations the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from collections.abc import Iterable, Sized
from typing import Literal

from ..errors import SpecError
from .yamlio import Path, Positions, format_path

__all__ = ["Severity", "Problem", "Finding", "locate", "did_you_mean", "listing"]

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


# "Did you mean" compares with a bounded set of names, so that many unknown names in a scope of
# many names cost linear work, not their product: of the first _SCAN names of the scope, those
# whose length could reach difflib's cutoff, the _COMPARE most alike in first letter and length,
# while their length times the name's stays under _WORK (difflib's ratio is pure Python, up to
# that product per pair). A caller reporting many unknown names stops asking after a few hundred.
_SCAN, _COMPARE, _WORK = 2000, 64, 40_000
_LISTED = 20  # names listed when none is near


def did_you_mean(name: str, known: Iterable[str], *, n: int = 3, fallback: str = "") -> str:
    """``; did you mean 'a' or 'b'?`` for the known names nearest ``name``, else ``fallback``."""
    # ratio = 2 * matches / (len(a) + len(b)) >= 0.6 needs the shorter at least 3/7 of the longer
    low, high = len(name) * 3 / 7, len(name) * 7 / 3
    fits = [k for k in itertools.islice(known, _SCAN) if low <= len(k) <= high]
    fits.sort(key=lambda k: (k[:1] != name[:1], abs(len(k) - len(name))))
    candidates, work = [], 0
    for k in fits[:_COMPARE]:
        work += len(name) * len(k)
        if work > _WORK:
            break
        candidates.append(k)
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(k) for k in near)}?" if near else fallback


def listing(names: Iterable[str], limit: int = _LISTED) -> str:
    """``a, b, c`` for the first ``limit`` names, then how many more (a message never lists thousands)."""
    head = list(itertools.islice(names, limit + 1))
    if len(head) <= limit:
        return ", ".join(head)
    rest = len(names) - limit if isinstance(names, Sized) else None
    return ", ".join(head[:limit]) + (f" and {rest:,} more" if rest is not None else ", ...")
