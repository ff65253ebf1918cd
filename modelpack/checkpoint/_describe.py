"""A summary of one checkpoint file (step, sections, sizes) without loading tensors."""

from __future__ import annotations

import os
from typing import Any

from .. import api, tree
from ..errors import CheckpointError
from ._core import META_PREFIX

__all__ = ["describe_checkpoint"]


def describe_checkpoint(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """Step, format version, and per-section tensor counts and bytes of a checkpoint.

    Reads only the manifest (after modelpack's full structure check), so it is
    cheap even for huge files and never imports torch; ``verify=True`` also
    recomputes every checksum. Raises CheckpointError for a .mpk that is not
    a checkpoint.
    """
    with api.open(path) as pack:
        if verify:
            pack.verify()
        meta = pack.metadata
        if META_PREFIX + "step" not in meta:
            raise CheckpointError("a .mpk file, but not a modelpack checkpoint", source=os.fspath(path))
        body = pack.manifest["tree"]
        sections = {
            name: _section(sub, pack.entries)
            for name, sub in (body.items() if isinstance(body, dict) else ())
            if name not in ("format", "version", "step")
        }
        return {
            "path": os.fspath(path),
            "step": int(meta[META_PREFIX + "step"]),
            "format_version": int(meta.get(META_PREFIX + "format", "0")),
            "sections": sections,
            "tensors": len(pack.entries),
            "tensor_bytes": sum(e["nbytes"] for e in pack.entries.values()),
            "file_bytes": os.stat(path).st_size,
            "metadata": {k: v for k, v in meta.items() if not k.startswith(META_PREFIX)},
        }


def _section(sub: Any, entries: dict[str, dict[str, Any]]) -> dict[str, int]:
    names = set(tree.iter_refs(sub))
    return {"tensors": len(names), "bytes": sum(entries[n]["nbytes"] for n in names)}
