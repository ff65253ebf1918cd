"""Spec format versions: the one current version and the explicit steps up to it.

An older spec is never read by a laxer code path: it is rewritten, one version
at a time, by the function registered for its version, and the result is then
validated as a current spec. ``MIGRATIONS`` maps a version ``v`` to the function
turning a version-``v`` document into a version-``v + 1`` one; each step gets a
test with a real old document.

1 -> 2: version 2 adds the generated ATen op rows (``op: aten.linear``...); every
version-1 row is unchanged, so a version-1 document only changes its number.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ..errors import SpecError
from ..vocab import VOCAB_VERSION

__all__ = ["CURRENT_VERSION", "MIGRATIONS", "Migration", "supported_versions", "version_problem", "migrate"]

CURRENT_VERSION = VOCAB_VERSION

Migration = Callable[[dict[str, Any]], dict[str, Any]]



def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 only adds rows: the document is the same, under the new number."""
    return {**data, "modelpack": 2}


MIGRATIONS: Mapping[int, Migration] = MappingProxyType({1: _v1_to_v2})


def supported_versions(migrations: Mapping[int, Migration] = MIGRATIONS,
                       current: int = CURRENT_VERSION) -> list[int]:
    """The versions a reader accepts: the current one and every one with a chain of steps up to it."""
    versions = [current]
    while versions[0] - 1 in migrations:
        versions.insert(0, versions[0] - 1)
    return versions


def version_problem(data: Any, migrations: Mapping[int, Migration] = MIGRATIONS,
                    current: int = CURRENT_VERSION) -> str | None:
    """Why the document's ``modelpack`` version cannot be read (None when it can)."""
    supported = supported_versions(migrations, current)
    listed = ", ".join(map(str, supported))
    if not isinstance(data, dict):
        return None  # the schema reports "not an object"
    if "modelpack" not in data:
        return f"missing the format version: start the spec with `modelpack: {current}` (supported: {listed})"
    version = data["modelpack"]
    if isinstance(version, bool) or not isinstance(version, int):
        return f"the format version must be an integer, got {version!r} (supported: {listed})"
    if version > current:
        return (f"spec version {version} is newer than this modelpack supports (supported: {listed}); "
                "upgrade modelpack")
    if version not in supported:
        return f"spec version {version} is not a known version (supported: {listed})"
    return None


def migrate(data: dict[str, Any], *, migrations: Mapping[int, Migration] = MIGRATIONS,
            current: int = CURRENT_VERSION) -> dict[str, Any]:
    """A copy of ``data`` brought up to ``current``, one registered step at a time."""
    problem = version_problem(data, migrations, current)
    if problem:
        raise SpecError(problem, where="modelpack")
    version = data["modelpack"]
    if version == current:
        return data
    out = copy.deepcopy(data)
    while version < current:
        out = migrations[version](out)
        version += 1
        if out.get("modelpack") != version:
            raise AssertionError(f"migration from version {version - 1} must set modelpack: {version}")
    return out
