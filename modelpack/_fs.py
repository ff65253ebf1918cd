"""Durable, atomic file replacement: the only way modelpack writes a file.

The sequence is write a sibling temp file -> flush -> fsync -> rename over the
target -> fsync the folder. A crash at any instant leaves either the old file
or the new one at the target, never a mix; an error removes the temp file.
Temp names carry the writer's pid, so a later save can remove the leftovers of
a writer that was killed without touching a live writer's temp file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "temp_name_pattern", "remove_stale_temps"]

_SUFFIX = ".mpk-tmp"


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name_pattern(target: Path) -> str:
    """Glob pattern matching the temp files of writes to ``target``."""
    return f".{target.name}.*{_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temp files for ``target`` left by writers that no longer run."""
    removed = []
    for tmp in target.parent.glob(temp_name_pattern(target)):
        parts = tmp.name[len(target.name) + 2 : -len(_SUFFIX)].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if pid == os.getpid() and parts[1] in _LIVE_TOKENS:
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


_LIVE_TOKENS: set[str] = set()


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str]) -> Iterator[int]:
    """Yield a raw file descriptor open on a fresh temp file beside ``target``.

    On normal exit the data is fsynced and renamed over ``target`` and the
    folder fsynced. On any exception the temp file is removed and ``target``
    is left untouched. Callers write with ``os.write``/``os.pwrite``.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    remove_stale_temps(target)
    token = secrets.token_hex(6)
    tmp = folder / f".{target.name}.{os.getpid()}.{token}{_SUFFIX}"
    _LIVE_TOKENS.add(token)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _LIVE_TOKENS.discard(token)
