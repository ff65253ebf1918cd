"""Branching: a save below existing steps moves the newer checkpoints aside, crash-safely.

After ``restore`` of step 300 in a folder that also holds 400 and 500, the
save of 310 starts a new branch. Restore picks the highest step, so 400 and
500 must leave the folder before 310 is published, or a crash would resume
the old branch. Several renames cannot be one atomic step, so a small record
makes the move a roll-forward transaction:

1. create ``abandoned/<id>/`` and fsync it into place;
2. publish ``<prefix>.branch.json`` ("steps above 310 go to abandoned/<id>")
   with ``_fs.atomic_write``: from here on ``live`` hides those steps;
3. rename each of them into ``abandoned/<id>/``, fsync both folders;
4. warn, remove the record, fsync the folder; only then is 310 written.

A crash anywhere leaves the record (hiding what is left to move) or no newer
file at all, so ``restore`` resumes on the new branch; the next save finishes
the move. Nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from .. import _fs
from ..errors import CheckpointError
from . import _files

__all__ = ["ABANDONED", "Branch", "record_path", "pending", "live", "settle"]

ABANDONED = "abandoned"
_RECORD_FORMAT = "modelpack.checkpoint.branch"
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclasses.dataclass(frozen=True)
class Branch:
    """One move: checkpoints with a step above ``above`` go into ``into``; ``files`` are there now."""

    above: int
    into: Path
    files: tuple[Path, ...] = ()


def record_path(folder: Path, prefix: str) -> Path:
    """``ckpt.branch.json``: present only while a move is unfinished."""
    return folder / f"{prefix}.branch.json"


def pending(folder: Path, prefix: str) -> Branch | None:
    """The unfinished move recorded in ``folder``, if any (a crash interrupted it)."""
    path = record_path(folder, prefix)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no record, or no folder at all
        return None
    except OSError as e:
        raise CheckpointError(f"cannot read the branch record: {e.strerror}", source=str(path)) from e
    return _parse(text, folder, path)


def _parse(text: str, folder: Path, path: Path) -> Branch:
    try:
        body = json.loads(text)
        above, into = body["above"], body["into"]
        ok = body["format"] == _RECORD_FORMAT and type(above) is int and 0 <= above <= _files.MAX_STEP
        ok = ok and isinstance(into, str) and _ID_RE.fullmatch(into) is not None
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CheckpointError(
            "the branch record is damaged (expected {'format', 'above': step, 'into': folder name}); "
            "check which checkpoints belong to the current run and delete the record",
            source=str(path),
        )
    return Branch(above, folder / ABANDONED / into)


def live(folder: Path, prefix: str) -> list[_files.CheckpointFile]:
    """The live branch: published checkpoints, minus those an unfinished move will take away."""
    files = _files.list_checkpoints(folder, prefix)
    record = pending(folder, prefix)
    return files if record is None else [f for f in files if f.step <= record.above]


def settle(folder: Path, prefix: str, step: int, announce: Callable[[Branch], None]) -> None:
    """Before saving ``step``: finish an interrupted move, then move aside every newer checkpoint.

    ``announce`` is called once per move that put files aside, after they
    are durably there and before the record goes: a warning cannot be lost
    to a crash that leaves no trace of the move.
    """
    record = pending(folder, prefix)
    if record is not None:
        _finish(folder, prefix, record, announce)
    if any(f.step > step for f in _files.list_checkpoints(folder, prefix)):
        _finish(folder, prefix, _start(folder, prefix, step), announce)


def _start(folder: Path, prefix: str, step: int) -> Branch:
    """Steps 1-2: a fresh ``abandoned/<id>/`` folder, then the durable record naming it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    into = _new_folder(folder / ABANDONED, f"{stamp}-{prefix}-above-{step}")
    body = {"format": _RECORD_FORMAT, "above": step, "into": into.name}
    with _fs.atomic_write(record_path(folder, prefix)) as fd:
        os.write(fd, json.dumps(body).encode("utf-8"))
    return Branch(step, into)


def _new_folder(parent: Path, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ...), new and durable, with ``parent`` if needed."""
    if not parent.is_dir():
        with contextlib.suppress(FileExistsError):
            parent.mkdir()
        _fs.fsync_dir(parent.parent)
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _fs.fsync_dir(parent)
        return path
    raise FileExistsError(f"{parent / name}: 999 folders of that name exist already")


def _finish(folder: Path, prefix: str, record: Branch, announce: Callable[[Branch], None]) -> None:
    """Steps 3-4: move what the record names, make it durable, drop the record."""
    record.into.mkdir(parents=True, exist_ok=True)  # someone may have emptied abandoned/ by hand
    for f in _files.list_checkpoints(folder, prefix):
        if f.step > record.above:
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.rename(f.path, record.into / f.path.name)
    _fs.fsync_dir(record.into)
    _fs.fsync_dir(folder)
    held = tuple(f.path for f in _files.list_checkpoints(record.into, prefix))
    if held:
        announce(dataclasses.replace(record, files=held))
    with contextlib.suppress(FileNotFoundError):
        record_path(folder, prefix).unlink()
    _fs.fsync_dir(folder)
