"""Writing a .mpk: one file atomically, a writable file object, or a split pack (shards, then the index).

Every path runs the reader's limit checks as a writer first (so every file written loads),
then writes tensor bytes once, straight from the caller's memory, one tensor at a time.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import _fs, limits, manifest, split, tree
from ._gc import paused_gc
from ._zipwrite import ZipWriter
from .codec import CopiedArray, DType, RawArray, nbytes_of, npy_header, numpy_payload
from .errors import FormatError, LimitError, ModelPackError, UnsupportedObjectError

__all__ = ["write_pack", "Progress", "limits_at_save"]

_Payload = tuple[tree.Leaf, DType, tuple[int, ...], "memoryview | CopiedArray | Callable[[], memoryview]"]


class Progress:
    """A tqdm bar that appears only after ~1 s, only on a terminal unless forced."""

    def __init__(self, total: int, desc: str, enabled: bool | None) -> None:
        self._bar = None
        show = enabled if enabled is not None else sys.stderr.isatty()
        if show and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, delay=1.0, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _payload(leaf: tree.Leaf) -> tuple[DType, tuple[int, ...], "memoryview | CopiedArray"]:
    """One leaf's dtype row, shape and bytes (a view, no copy); refuses unsavable kinds with its path."""
    where = leaf.where or leaf.name
    if isinstance(leaf.value, CopiedArray):  # byte ranges of other files, copied by the kernel when written
        return leaf.value.dtype, leaf.value.shape, leaf.value
    if isinstance(leaf.value, RawArray):  # bytes already in stored form (converters): written as they are
        return leaf.value.dtype, leaf.value.shape, leaf.value.data
    if leaf.kind == "torch":
        from .torch.tensors import torch_payload

        return torch_payload(leaf.value, where=where)
    return numpy_payload(leaf.value, where=where)


def _payloads(leaves: list[tree.Leaf]) -> list[_Payload]:
    """Each leaf's dtype row, shape and bytes; refuses unsavable kinds with their path before any write.

    Bytes are views of the caller's memory (or a converter's stored bytes); a torch
    tensor that needs a copy (on a GPU, non-contiguous...) gets a function that
    makes it when the tensor is written, so at most one copy is in flight.
    """
    if not any(leaf.kind == "torch" and not isinstance(leaf.value, (RawArray, CopiedArray)) for leaf in leaves):
        return [(leaf, *_payload(leaf)) for leaf in leaves]  # no torch import (converters stay torch-free)
    from .torch.tensors import torch_payload, torch_plan_view  # imported once, not per tensor

    out: list[_Payload] = []
    for leaf in leaves:
        if leaf.kind != "torch" or isinstance(leaf.value, (RawArray, CopiedArray)):
            out.append((leaf, *_payload(leaf)))
            continue
        try:
            row, shape, view = torch_plan_view(leaf.value)
        except ModelPackError as e:  # the object's path, built only now
            raise e.with_context(where=leaf.where or leaf.name)
        if view is None:
            where = leaf.where or leaf.name
            out.append((leaf, row, shape, functools.partial(_copied, torch_payload, leaf.value, where)))
        else:
            out.append((leaf, row, shape, view))
    return out


def _copied(torch_payload: Callable[..., Any], t: Any, where: str) -> memoryview:
    return torch_payload(t, where=where)[2]  # type: ignore[no-any-return]


def _nbytes(p: _Payload) -> int:
    data = p[3]
    return data.nbytes if isinstance(data, (memoryview, CopiedArray)) else nbytes_of(p[2], p[1].itemsize)


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UnsupportedObjectError(f"metadata must map str to str; got {k!r}: {type(v).__name__}")
    return meta


_TREE_WHERE = f"{manifest.MANIFEST}.tree"
_COPY_SETTLE = 1 << 20  # a copied tensor this big is in the file before the writer moves on


@contextlib.contextmanager
def limits_at_save() -> Iterator[None]:
    """Run the reader's limit checks as a writer: errors say why and name the object's path."""
    try:
        with limits.saving():
            yield
    except LimitError as e:
        if e.where and e.where.startswith(_TREE_WHERE):  # the reader's tree location is the saved object's path
            raise LimitError(e.message, where="obj" + e.where[len(_TREE_WHERE):]) from e
        raise


def write_pack(
    path: Any,
    tree_json: Any,
    leaves: list[tree.Leaf],
    *,
    metadata: Mapping[str, str] | None = None,
    spec_text: str | None = None,
    progress: bool | None = None,
    force_zip64: bool = False,
    max_shard_size: int | str | None = None,
    sha256: bool = False,
) -> None:
    """Write a .mpk: optional spec, tensor members, then the manifest.

    ``path`` is a path (written atomically) or a writable binary file object.
    With ``max_shard_size`` a pack bigger than that is split (modelpack.split).
    What the reader would refuse under the limits in force (see modelpack.limits)
    is refused here first, with the same checks; tensor bytes come only after.
    ``sha256`` records each tensor's SHA-256, hashed in the CRC-32's pass.
    """
    with paused_gc():
        _write_pack(path, tree_json, leaves, metadata, spec_text, progress, force_zip64, max_shard_size, sha256)


def _write_pack(path: Any, tree_json: Any, leaves: list[tree.Leaf], metadata: Mapping[str, str] | None,
                spec_text: str | None, progress: bool | None, force_zip64: bool, max_shard_size: int | str | None,
                sha256: bool) -> None:
    meta = _check_metadata(metadata)
    spec = None if spec_text is None else spec_text.encode("utf-8")
    payloads = _payloads(leaves)
    with limits_at_save():
        manifest.check_plan(tree_json, [(leaf.name, shape) for leaf, _, shape, _ in payloads],
                            spec_size=None if spec is None else len(spec))
    groups = [list(range(len(payloads)))]
    if max_shard_size is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise UnsupportedObjectError("max_shard_size needs a path: shards are files beside the index")
        groups = split.plan_shards([_nbytes(p) for p in payloads], split.parse_size(max_shard_size))
    bar = Progress(sum(_nbytes(p) for p in payloads), "saving", progress)
    try:
        if len(groups) == 1:
            _write_one(path, tree_json, payloads, meta, spec, bar, force_zip64, sha256=sha256)
        else:
            _write_split(os.fspath(path), tree_json, payloads, [p[0].name for p in payloads], groups, meta, spec,
                         bar, force_zip64, sha256)
    finally:
        bar.close()


def stream_pack(
    path: Any,
    tree_json: Any,
    planned: Sequence[tuple[str, tuple[int, ...]]],
    leaves: Iterable[tree.Leaf],
    *,
    metadata: Mapping[str, str] | None = None,
    progress: bool | None = None,
    max_shard_size: int | str | None = None,
    sizes: Sequence[int] | None = None,
) -> None:
    """Write a .mpk whose tensors come one at a time from ``leaves`` (names and shapes known up front).

    A big leaf's bytes are written and dropped before the next is asked for
    (small ones wait in one gathered batch of a few MiB), so peak memory is
    about one tensor. A leaf that disagrees with ``planned`` aborts the write
    (the target is untouched). With ``max_shard_size`` the pack is split as
    ``write_pack`` splits it, planned from ``sizes`` (bytes per planned tensor).
    """
    meta = _check_metadata(metadata)
    planned = list(planned)
    with limits_at_save():
        manifest.check_plan(tree_json, planned, spec_size=None)

    def checked() -> Iterator[_Payload]:
        expected = iter(planned)
        count = 0
        for leaf in leaves:
            row, shape, data = _payload(leaf)
            if (leaf.name, shape) != tuple(next(expected, (None, None))):
                raise FormatError(f"streamed tensor {leaf.name!r} {list(shape)} is not the one planned",
                                  where=leaf.where or leaf.name)
            count += 1
            yield leaf, row, shape, data
            del leaf, data  # before the next leaf is made: peak memory stays at one tensor
        if count != len(planned):
            raise FormatError(f"{count} tensors written, {len(planned)} planned", where="archive")

    groups = [list(range(len(planned)))]
    if max_shard_size is not None:
        if not isinstance(path, (str, os.PathLike)) or sizes is None or len(sizes) != len(planned):
            raise UnsupportedObjectError("max_shard_size needs a path and the size of every planned tensor")
        groups = split.plan_shards(sizes, split.parse_size(max_shard_size))
    bar = Progress(0, "saving", progress)
    try:
        if len(groups) == 1:
            _write_one(path, tree_json, checked(), meta, None, bar, False)  # type: ignore[arg-type]
        else:
            _write_split(os.fspath(path), tree_json, checked(), [name for name, _ in planned], groups, meta, None,
                         bar, False, False)
    finally:
        bar.close()


def _write_split(path: str, tree_json: Any, payloads: Iterable[_Payload], tensor_names: list[str],
                 groups: list[list[int]], meta: dict[str, str], spec: bytes | None, bar: Progress, force_zip64: bool,
                 sha256: bool) -> None:
    """Each shard atomically, then the index binding them (a crash before it leaves the old index).

    ``payloads`` may be a stream: each shard takes the next ``len(group)`` of them.
    """
    files = split.shard_names(path, len(groups))
    folder = os.path.dirname(path)
    items = iter(payloads)
    rows = []
    for file, group in zip(files, groups):
        shard_tree = {tensor_names[i]: {"$tensor": tensor_names[i]} for i in group}
        target = os.path.join(folder, file)
        part = itertools.islice(items, len(group))
        blob = _write_one(target, shard_tree, part, {}, None, bar, force_zip64, sha256=sha256)  # type: ignore[arg-type]
        rows.append({"file": file, "size": os.stat(target).st_size, "sha256": split.manifest_digest(blob),
                     "tensors": [tensor_names[i] for i in group]})
    next(items, None)  # a stream checks its count once exhausted
    _write_one(path, tree_json, [], meta, spec, bar, force_zip64, shards=rows)


def _write_one(target: Any, tree_json: Any, payloads: list[_Payload], meta: dict[str, str], spec: bytes | None,
               bar: Progress, force_zip64: bool, shards: list[dict[str, Any]] | None = None,
               sha256: bool = False) -> bytes:
    """One .mpk to a path (atomically) or a file object; returns the manifest bytes."""
    if isinstance(target, (str, os.PathLike)):
        with _fs.atomic_write(target) as fd:
            zw = ZipWriter(fd, force_zip64=force_zip64)
            try:
                return _write_members(zw, tree_json, payloads, meta, spec, bar, shards, sha256)
            finally:
                zw.close()  # its writer thread is done before the descriptor is closed
    if not hasattr(target, "write"):
        raise UnsupportedObjectError(f"save needs a path or a writable binary file object; got "
                                     f"{type(target).__name__}")
    return _write_members(ZipWriter(target, force_zip64=force_zip64), tree_json, payloads, meta, spec, bar, shards,
                          sha256)


def _write_members(zw: ZipWriter, tree_json: Any, payloads: list[_Payload], meta: dict[str, str],
                   spec: bytes | None, bar: Progress, shards: list[dict[str, Any]] | None,
                   sha256: bool = False) -> bytes:
    if spec is not None:
        zw.add(manifest.SPEC, spec)
    entries = []
    for item in payloads:  # may be a generator (stream_pack): drop each tensor before the next is made
        entries.append(_write_tensor(zw, *item, bar, sha256, streamed=not isinstance(payloads, list)))
        del item
    blob = manifest.dumps_pack(meta, entries, tree_json, shards)
    with limits_at_save():
        manifest.check_member_size(manifest.MANIFEST, len(blob))
        manifest.check_containers(blob)
    zw.add(manifest.MANIFEST, blob)
    zw.finish()
    return blob


def _write_tensor(zw: ZipWriter, leaf: tree.Leaf, row: DType, shape: tuple[int, ...],
                  data: "memoryview | CopiedArray | Callable[[], memoryview]", bar: Progress, sha256: bool,
                  streamed: bool = False) -> str:
    """One tensor member and its manifest entry (as JSON text). A copy made here, or a streamed tensor (made for this
    write), is in the file before the next one is made when it is big: one such tensor in memory at a time.
    A CopiedArray's bytes go file to file (see ``ZipWriter.add_copied``)."""
    head = npy_header(row.descr, shape)
    if isinstance(data, CopiedArray):
        if sha256:
            raise UnsupportedObjectError("sha256 needs every byte read; copied tensors are never read",
                                         where=leaf.where or leaf.name)
        member = zw.add_copied(f"{leaf.name}.npy", head, data.ranges, align=True, progress=bar.update)
    else:
        copied = not isinstance(data, memoryview)
        if copied:
            data = data()  # type: ignore[operator]  # the one copy in flight; dropped when this returns
        member = zw.add(f"{leaf.name}.npy", head, data, align=True, progress=bar.update, sha256=sha256)
        if (copied or streamed) and data.nbytes >= _COPY_SETTLE:  # type: ignore[union-attr]
            zw.settle()  # small ones wait in one gathered batch at most
    return manifest.entry_text(leaf.name, member.name, row.name, shape, leaf.kind, member.data_offset + len(head),
                               data.nbytes, member.crc, member.sha256)
