"""The validation pipeline: plain data -> version -> schema -> graph -> args -> (shapes).

Every level reports all it finds. A later level runs only on what the earlier
ones guarantee: the graph checks need a structurally valid document (an unknown
layer name does not stop them), argument checks run on the expanded nodes (so a
block parameter is checked where it is used, and reported where it was written),
and shapes run only on an otherwise valid spec, and only when asked.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import SpecError
from ..vocab import LAYERS, OPS, Kind
from .blocks import Origin, expand_with_origins
from .findings import Finding, Problem, locate
from .graph import graph_problems
from .migrations import migrate, version_problem
from .schemacheck import args_messages, blocks_later_levels, skeleton_problems
from .shapes import ShapeChecker, shape_problems
from .yamlio import Positions, Spec, check_plain, load_spec

__all__ = ["check_spec", "iter_findings", "iter_errors", "validate"]

SpecInput = Spec | dict[str, Any] | str | bytes | os.PathLike[str]
Shapes = bool | ShapeChecker  # False, or the checker to run (True only where one is known: modelpack.validate)


def _checker(shapes: Shapes) -> ShapeChecker | None:
    if shapes is True:
        raise TypeError("the spec layer has no shape checker of its own (it never imports torch): call "
                        "modelpack.validate(spec, shapes=True), which uses torch's, or pass shapes=<a checker>")
    return shapes or None


def _problems(data: Any, *, shapes: Shapes) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The migrated document (None if it could not be read) and every problem found."""
    checker = _checker(shapes)
    plain = [Problem(path, message) for path, message in check_plain(data)]
    if plain:
        return None, plain
    version = version_problem(data)
    if version:
        return None, [Problem(("modelpack",), version)]
    declared = data["modelpack"] if isinstance(data, dict) else 0
    data = migrate(data) if isinstance(data, dict) else data
    problems = skeleton_problems(data)
    if any(blocks_later_levels(p) for p in problems):
        return data, problems
    graph, expandable = graph_problems(data)
    problems += graph
    if not expandable:
        return data, problems
    expanded, origins = expand_with_origins(data)
    problems += _args_problems(expanded, origins, declared)
    if checker is not None and not any(p.severity == "error" for p in problems):
        problems += shape_problems(expanded, origins, checker)
    return data, problems


def _args_problems(expanded: dict[str, Any], origins: dict[str, Origin], version: int) -> list[Problem]:
    """Each layer/op node's args against its table entry, reported where the values were written."""
    out: dict[tuple[Any, ...], Problem] = {}
    # Block instances share their argument values (see blocks.py): one check per distinct set of
    # value objects, so a literal used by N nodes is not serialised N times. (Ids are stable here:
    # ``expanded`` holds every value.)
    seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for node in expanded["nodes"]:
        kind: Kind = "layer" if "layer" in node else "op"
        name = node[kind]
        entry = (LAYERS if kind == "layer" else OPS).get(name) if isinstance(name, str) else None
        if entry is None:
            continue  # reported by the schema level
        origin = origins[node["name"]]
        if entry.since > version:
            msg = f"{kind} {name!r} needs spec version {entry.since}; this spec declares {version}"
            out.setdefault((origin.path, msg), Problem(origin.path + (kind,), msg))
        args = node.get("args", {})
        same = (kind, name, tuple((k, id(v)) for k, v in args.items()) if isinstance(args, dict) else id(args))
        if same not in seen:
            seen[same] = args_messages(kind, name, args)
        for sub, message, key in seen[same]:
            path = origin.locate(sub)
            out.setdefault((path, message), Problem(path, message, key=key))
    return list(out.values())


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.error.line or 0, f.error.column or 0))


def check_spec(spec: SpecInput, *, shapes: Shapes = False,
               source: str | None = None) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Load (if needed) and check a spec: the migrated document and every finding, in document order.

    ``source`` names a spec given as text or dict in the messages (default ``<string>``).
    """
    loaded = _as_spec(spec, source)
    data, problems = _problems(loaded.data, shapes=shapes)
    findings = [locate(p, loaded.positions, loaded.source) for p in problems]
    return data, _sorted(findings)


def iter_findings(data: Any, positions: Positions | None = None, *, source: str | None = None,
                  shapes: Shapes = False) -> Iterator[Finding]:
    """Every error and warning of an already loaded document, in document order."""
    _, problems = _problems(data, shapes=shapes)
    yield from _sorted([locate(p, positions, source) for p in problems])


def iter_errors(data: Any, positions: Positions | None = None, *, source: str | None = None) -> Iterator[SpecError]:
    """Every error (warnings left out) of an already loaded document, in document order."""
    for finding in iter_findings(data, positions, source=source):
        if finding.severity == "error":
            yield finding.error


def validate(spec: SpecInput, *, shapes: Shapes = False, source: str | None = None) -> dict[str, Any]:
    """Check a spec (path, text, dict or Spec) and return its data, migrated to the current version.

    Raises the first error in document order as a SpecError whose ``errors``
    attribute lists them all. ``shapes`` is a shape checker to run too (see
    :mod:`modelpack.spec.shapes`; ``modelpack.validate(spec, shapes=True)`` passes
    torch's); if it cannot run (no torch), a RuntimeWarning says so. ``source``
    names the spec in messages (``model.mpk:spec.yaml``).
    """
    data, findings = check_spec(spec, shapes=shapes, source=source)
    errors = [f.error for f in findings if f.severity == "error"]
    if errors:
        raise _summary(errors)
    for f in findings:
        if f.error.where == "shapes":
            warnings.warn(str(f.error), RuntimeWarning, stacklevel=2)
    assert data is not None
    return data


def _summary(errors: list[SpecError]) -> SpecError:
    first = errors[0]
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    summary = type(first)(first.message + more, where=first.where, source=first.source, line=first.line,
                          column=first.column)
    summary.errors = errors  # type: ignore[attr-defined]
    return summary


def _as_spec(spec: SpecInput, source: str | None) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return Spec(spec, Positions(), source)
    return load_spec(spec, name=source)
