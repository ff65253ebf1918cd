"""``modelpack validate``: check spec files and the specs inside .mpk files, print like a linter.

Text output, one line per finding (nothing for a clean file)::

    path:line:col: where: message
    path:line:col: warning: where: message

``--format json`` prints one JSON list of ``{path, severity, line, column, where,
message}``. Exit status: 0 when every file is valid (warnings allowed), 1 when
any file is invalid or cannot be read (a missing file is reported like an
invalid one, so a CI log shows every problem at once); argparse's usage errors
are 2. A directory is searched for ``*.yaml``, ``*.yml``, ``*.json`` and ``*.mpk``
(hidden files and folders such as ``.venv`` or ``.git`` are skipped); one with
none of them is an error ("no specs found"), so a mistyped folder never passes.
Without ``--shapes`` nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path as FsPath
from typing import Any, TextIO

from .._text import printable
from ..errors import ModelPackError, SpecError
from .findings import Finding
from .validate import Shapes, check_spec
from .yamlio import Spec, load_spec

__all__ = ["SPEC_SUFFIXES", "validate_paths", "findings_for_path"]

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
_SEARCHED = SPEC_SUFFIXES + (".mpk",)


def validate_paths(paths: Iterable[str], *, shapes: Shapes = False, fmt: str = "text", out: TextIO) -> int:
    """Validate every path; print findings to ``out``; return the exit status."""
    records: list[dict[str, Any]] = []
    invalid = False
    for path in _expand(paths):
        findings = findings_for_path(path, shapes=shapes)
        invalid |= any(f.severity == "error" for f in findings)
        records += [_record(path, f) for f in findings]
    if fmt == "json":
        out.write(json.dumps(records, indent=2) + "\n")
    else:
        out.writelines(_line(r) + "\n" for r in records)
    return 1 if invalid else 0


def _expand(paths: Iterable[str]) -> Iterator[str]:
    """Files as given; directories searched (sorted) for spec and .mpk files, hidden ones skipped."""
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        root, empty = FsPath(path), True
        for found in sorted(root.rglob("*")):
            hidden = any(part.startswith(".") for part in found.relative_to(root).parts)
            if found.suffix in _SEARCHED and not hidden and found.is_file():
                empty = False
                yield str(found)
        if empty:  # the folder itself: findings_for_path reports it, so a wrong path never passes as valid
            yield path


def findings_for_path(path: str, *, shapes: Shapes = False) -> list[Finding]:
    """Every finding for one file; a file that cannot be read is one error finding."""
    if os.path.isdir(path):
        return [Finding("error", SpecError(f"no specs found in this folder (searched for "
                                           f"{', '.join('*' + s for s in _SEARCHED)}; hidden ones skipped)",
                                           source=path))]
    try:
        spec = _load(path)
        if spec is None:
            return [Finding("warning", SpecError("no spec inside (weights only); nothing to validate",
                                                 source=path))]
        return check_spec(spec, shapes=shapes)[1]
    except SpecError as e:
        e.with_context(source=path)
        return [Finding("error", e)]
    except ModelPackError as e:  # the .mpk container could not be read
        return [Finding("error", SpecError(e.message, where=e.where, source=path))]
    except OSError as e:
        return [Finding("error", SpecError(e.strerror or str(e), source=path))]


def _load(path: str) -> Spec | None:
    """The spec in a spec file, or in a .mpk file (None when the .mpk holds none)."""
    if not path.endswith(".mpk"):
        return load_spec(FsPath(path))
    try:
        from ..api import read_spec_text
    except ImportError as e:
        raise SpecError(f"cannot read .mpk files here: {e}", source=path) from e
    text = read_spec_text(path)
    if text is None:
        return None
    return load_spec(text.encode("utf-8"), name=f"{path}:spec.yaml")  # lines count within the member


def _record(path: str, finding: Finding) -> dict[str, Any]:
    e = finding.error
    return {"path": e.source or path, "severity": finding.severity, "line": e.line, "column": e.column,
            "where": e.where, "message": e.message}


def _line(r: dict[str, Any]) -> str:
    loc = r["path"]
    if r["line"] is not None:
        loc += f":{r['line']}:{r['column']}"
    parts = [loc] + (["warning"] if r["severity"] == "warning" else []) + ([r["where"]] if r["where"] else [])
    return printable(": ".join(parts + [r["message"]]))  # one line per finding, whatever the file holds
