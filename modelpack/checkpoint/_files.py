"""The run folder: checkpoint file names, listing, retention and leftover temp files.

A checkpoint's step lives in its file name (``ckpt-000000001200.mpk``), so the
newest checkpoint is found by listing the folder. There is no "latest" pointer
file: a listing only ever shows files that ``os.replace`` published whole, so
it cannot point at a half-written checkpoint, and there is no second file to
fall out of step with the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import _fs
from .. import api
from ..dcp import METADATA_FILE as DCP_METADATA

__all__ = [
    "CheckpointFile",
    "file_name",
    "list_checkpoints",
    "steps_to_keep",
    "prune",
    "sweep_temps",
    "ensure_folder",
    "write_file",
    "STEP_DIGITS",
    "MAX_STEP",
]

STEP_DIGITS = 12  # zero padding, so names sort like steps up to 10**12 in `ls`
MAX_STEP = 10**18 - 1  # keeps every step an int64 for other readers of the manifest
PREFIX_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")


@dataclasses.dataclass(frozen=True, order=True)
class CheckpointFile:
    """One published checkpoint in a run folder: its step and where it is (a file, or a DCP folder)."""

    step: int
    path: Path


def file_name(prefix: str, step: int) -> str:
    """``ckpt-000000001200.mpk``: the only name a checkpoint for ``step`` gets."""
    return f"{prefix}-{step:0{STEP_DIGITS}d}.mpk"


def _name_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-([0-9]{{{STEP_DIGITS},18}})\.(mpk|dcp)", re.ASCII)


def _published(entry: os.DirEntry[str], kind: str) -> bool:
    """A .mpk file, or a distributed checkpoint folder whose metadata pack (its commit) is there."""
    if kind == "mpk":
        return entry.is_file(follow_symlinks=False)
    return entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, DCP_METADATA))


def list_checkpoints(folder: Path, prefix: str) -> list[CheckpointFile]:
    """Published checkpoints, oldest step first; temp files and other names are ignored."""
    pattern = _name_re(prefix)
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m and _published(entry, m.group(2)):
            found.append(CheckpointFile(int(m.group(1)), folder / entry.name))
    return sorted(found)


def steps_to_keep(
    steps: Iterable[int], keep_last: int | None, keep_every: int | None, pinned: Iterable[int] = ()
) -> set[int]:
    """The retention policy: the newest ``keep_last``, every ``keep_every``-th, and ``pinned``."""
    ordered = sorted(set(steps))
    keep = set(ordered if keep_last is None else ordered[-keep_last:])
    if keep_every:
        keep.update(s for s in ordered if s % keep_every == 0)
    keep.update(s for s in pinned if s in ordered)
    return keep


def prune(
    folder: Path, prefix: str, keep_last: int | None, keep_every: int | None, pinned: Iterable[int] = ()
) -> list[Path]:
    """Delete checkpoints outside the policy, then fsync the folder so the deletes stick.

    Callers run this only once the newest checkpoint is durable, so the set of
    files on disk never drops below what the policy promises.
    """
    files = list_checkpoints(folder, prefix)
    keep = steps_to_keep((f.step for f in files), keep_last, keep_every, pinned)
    removed = []
    for f in files:
        if f.step not in keep:
            with contextlib.suppress(FileNotFoundError):  # another writer pruned it first
                _remove(f.path)
                removed.append(f.path)
    if removed:
        _fs.fsync_dir(folder)
    return removed


def _remove(path: Path) -> None:
    """A file, or a distributed checkpoint folder: its metadata pack first (uncommitting it), then the rest."""
    if not path.is_dir():
        path.unlink()
        return
    (path / DCP_METADATA).unlink()
    shutil.rmtree(path, ignore_errors=True)


def sweep_temps(folder: Path, prefix: str) -> list[Path]:
    """Remove temp files of checkpoints whose writer has died (any step, not just the next).

    ``_fs.remove_stale_temps`` removes a temp file only if it can take the
    lock its writer holds for the whole write, so a live writer's temp file
    (another process, container or host on a shared folder) is left alone.
    """
    pattern = re.compile(rf"\.({re.escape(prefix)}-[0-9]+\.mpk)\.[0-9]+\.[0-9a-f]+\.mpk-tmp", re.ASCII)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    targets = {m.group(1) for m in map(pattern.fullmatch, names) if m}
    removed: list[Path] = []
    for target in sorted(targets):
        removed += _fs.remove_stale_temps(folder / target)
    return removed


def ensure_folder(folder: Path) -> None:
    """Create the run folder (and parents); fsync each new folder's parent so it survives a crash."""
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fs.fsync_dir(created.parent)


def write_file(
    encoded: tuple[Any, list[Any]], path: Path, *, metadata: Mapping[str, str], progress: bool
) -> None:
    """Write one checkpoint durably (temp file, fsync, rename, fsync folder).

    ``encoded`` is ``modelpack.tree.encode(state)``, done by the caller so that
    an unsupported object is reported at the ``save`` call even when the
    write itself runs in the background. A module-level function on purpose:
    the seam tests use to slow down or fail a write at our own layer.
    """
    tree_json, leaves = encoded
    api.write_pack(path, tree_json, leaves, metadata=metadata, progress=progress)
