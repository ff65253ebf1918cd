"""Content digests of a .mpk: one SHA-256 per part (structure, spec, each tensor) and one for the whole pack.

The parts are what a pack *means*, not how its bytes are laid out: the
structure (format, metadata, tree, and each tensor's dtype, shape and kind),
the spec text, and each tensor's bytes. Member order, alignment padding, .npy
headers and how a pack is split do not enter, so re-saving or re-splitting
keeps the digest. The whole-pack digest is computed as OpenSSF model-signing
computes its in-toto subject: SHA-256 over the part digests in sorted part
order, so ``modelpack digest`` prints exactly what a ``modelpack sign``
signature's subject holds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TextIO

import numpy as np

from . import api, manifest
from .errors import IntegrityError, ModelPackError

__all__ = ["content_digest", "part_digests", "root_digest", "describe_part", "digest_report",
           "STRUCTURE", "SPEC", "TENSOR_PREFIX"]

STRUCTURE = "structure.json"
SPEC = "spec.yaml"
TENSOR_PREFIX = "tensors/"


def _structure(pack: api.Pack) -> bytes:
    """Canonical JSON of what the pack holds besides the bytes (tree order kept: dict order is content)."""
    body = {
        "format": pack.manifest["format"],
        "metadata": dict(sorted(pack.manifest["metadata"].items())),
        "tree": pack.manifest["tree"],
        "tensors": {n: [e["dtype"], e["shape"], e["kind"]] for n, e in sorted(pack.entries.items())},
    }
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def part_digests(pack: api.Pack) -> dict[str, bytes]:
    """Part name -> SHA-256, recomputed from the bytes; a recorded per-tensor SHA-256 must agree."""
    parts = {STRUCTURE: hashlib.sha256(_structure(pack)).digest()}
    if pack.spec_text is not None:
        parts[SPEC] = hashlib.sha256(pack.spec_text.encode("utf-8")).digest()
    for name, entry in pack.entries.items():
        sha = hashlib.sha256(memoryview(np.ascontiguousarray(pack.array(name)).reshape(-1).view(np.uint8)))
        recorded = entry.get(manifest.SHA256)
        if recorded is not None and recorded != sha.hexdigest():
            raise IntegrityError("SHA-256 mismatch: the tensor's bytes changed", where=f"tensor {name!r}",
                                 source=pack.path)
        parts[TENSOR_PREFIX + name] = sha.digest()
    return parts


def root_digest(parts: Mapping[str, bytes]) -> str:
    """``sha256:<hex>`` over the part digests in model-signing's order (sorted as POSIX paths)."""
    h = hashlib.sha256()
    for name in sorted(parts, key=PurePosixPath):
        h.update(parts[name])
    return "sha256:" + h.hexdigest()


def content_digest(path: str | os.PathLike[str], *, progress: bool | None = None) -> str:
    """One digest for the whole pack, for lock files: ``sha256:<hex>``. Checks every CRC-32 on the way."""
    with api.Pack(path) as pack:
        pack.verify(progress=progress)
        return root_digest(part_digests(pack))


def describe_part(part: str) -> str:
    """A part name in words, for messages: ``tensor 'w'``, ``the spec``..."""
    if part.startswith(TENSOR_PREFIX):
        return f"tensor {part[len(TENSOR_PREFIX):]!r}"
    if part == SPEC:
        return "the spec (spec.yaml)"
    if part == STRUCTURE:
        return "the structure (metadata, tree, tensor dtypes, shapes or kinds)"
    return repr(part)


def digest_report(paths: Sequence[str], *, parts: bool, out: TextIO) -> int:
    """``modelpack digest``: ``sha256:<hex>  FILE`` per file (sha256sum's layout); exit 1 if any failed."""
    from .inspect import error_text

    status = 0
    for path in paths:
        try:
            with api.Pack(path) as pack:
                pack.verify()
                digests = part_digests(pack)
        except (ModelPackError, OSError) as e:
            out.write(f"{path}: FAILED: {error_text(e).removeprefix(f'{path}: ')}\n")
            status = 1
            continue
        print(f"{root_digest(digests)}  {path}", file=out)
        if parts:
            for name in sorted(digests, key=PurePosixPath):
                print(f"  {digests[name].hex()}  {name}", file=out)
    return status


