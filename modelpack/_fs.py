"""Durable, atomic file replacement: the only way modelpack writes a file.

The sequence is write a sibling temp file -> flush -> fsync -> rename over the
target -> fsync the folder. A crash at any instant leaves either the old file
or the new one at the target, never a mix; an error removes the temp file and
is reported against the target's path, never the temp file's.

Which temp files are leftovers is decided by an advisory lock, not by guessing
from a pid: the writer holds ``flock(LOCK_EX)`` on its temp file from creation
until after the rename, and cleanup removes a temp file only while holding
that lock itself, taken without blocking. The kernel drops a lock when its
holder dies, so this stays right across pid namespaces (containers). On NFS,
Linux (since 2.6.12) emulates ``flock`` with a whole-file byte-range lock held
on the server, so it also holds across hosts, unless the mount uses
``local_lock=flock``/``all``. A byte-range write lock is granted only on a
descriptor open for writing, so cleanup opens temp files write-only. Where locking
is unsupported nothing is ever cleaned up: a leftover is cheaper than deleting
a live writer's file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, so cleanup removes nothing
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "fsync_dir", "temp_name_pattern", "remove_stale_temps", "start_writeback"]

_SUFFIX = ".mpk-tmp"
_ATTEMPTS = 8  # fresh temp names tried when cleanup races our lock (never happens twice in practice)


def _libc_sync_file_range() -> Any:
    """Linux's ``sync_file_range(2)`` through libc (Python has no binding), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it (very old, or not glibc/musl)
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; wait for nothing


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Have the kernel start writing ``nbytes`` at ``offset`` of ``fd`` to disk now, without waiting.

    A hint, not durability: the final ``fsync`` still makes the file durable, it
    just finds less left to write, since the disk worked while we went on
    writing. False where the call is missing or refused (not Linux, a pipe...):
    the caller stops asking, and nothing else changes.
    """
    if _SYNC_FILE_RANGE is None:
        return False
    return bool(_SYNC_FILE_RANGE(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0)


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


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if held or if locks are unsupported."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EWOULDBLOCK: held; ENOLCK/EOPNOTSUPP: cannot know, so treat as held
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open on ``fd`` (not renamed or removed since)."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _remove_if_unlocked(tmp: Path) -> bool:
    """Remove ``tmp`` if no writer holds its lock; the unlink happens under our own lock."""
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags)
    except OSError:  # gone already, another user's file, a FIFO without reader...
        return False
    try:
        if not (stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd) and _same_file(fd, tmp)):
            return False
        os.unlink(tmp)
        return True
    except OSError:  # cleanup is best effort: the leftover stays, the save goes on
        return False
    finally:
        os.close(fd)


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temp files for ``target`` whose writer no longer holds their lock."""
    return [tmp for tmp in sorted(target.parent.glob(temp_name_pattern(target))) if _remove_if_unlocked(tmp)]


def _hold(fd: int) -> bool:
    """Lock our own new temp file; False only when someone else holds it (a cleaner got in first)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: nobody can lock, so nobody cleans up
        return True
    return True


def _create_locked_temp(folder: Path, target: Path) -> tuple[Path, int]:
    """Create a fresh temp file beside ``target`` and lock it before doing anything else.

    Between ``open`` and ``flock`` a cleaner could lock and remove the new
    file; we then find the name gone (or locked by it) and take a new name.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}{_SUFFIX}"
        fd = os.open(tmp, flags, 0o644)
        if _hold(fd) and _same_file(fd, tmp):
            return tmp, fd
        os.close(fd)  # the cleaner that beat us removes (or removed) it
    raise OSError(errno.EAGAIN, "could not keep a temp file: something removed each one at once", os.fspath(target))


def _is_ours(name: object, target: Path, folder: Path) -> bool:
    """Whether an error's file name is the target, its folder, or one of its temp files."""
    if not isinstance(name, (str, bytes, os.PathLike)):
        return False  # a descriptor number, say: not a name we could have leaked
    path = Path(os.fsdecode(name))
    if path in (target, folder):
        return True
    return path.parent == folder and fnmatch.fnmatchcase(path.name, temp_name_pattern(target))


def _about_target(e: OSError, target: Path, folder: Path) -> OSError:
    """The same error (same class, errno and text) reported against ``target``, not a temp file.

    An error naming some other file (a source being read, say) is kept as
    it is: that name is the useful one.
    """
    names = [n for n in (e.filename, e.filename2) if n is not None]
    if e.errno is None or not all(_is_ours(n, target, folder) for n in names):
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), os.fspath(target))


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str]) -> Iterator[int]:
    """Yield a raw file descriptor open on a fresh, locked temp file beside ``target``.

    On normal exit the data is fsynced and renamed over ``target``, the folder
    fsynced, and only then the lock released. On any exception the temp file
    is removed and ``target`` is left untouched; an ``OSError`` is re-raised
    (same class and errno, chained) naming ``target``. Callers write with
    ``os.write``/``os.pwrite``.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    tmp: Path | None = None
    try:
        remove_stale_temps(target)
        tmp, fd = _create_locked_temp(folder, target)
        try:
            yield fd
            os.fsync(fd)
            os.replace(tmp, target)
            tmp = None
            fsync_dir(folder)
        finally:
            os.close(fd)  # releases the lock only after the rename: cleanup never sees our temp unlocked
    except OSError as e:
        _discard(tmp)
        about = _about_target(e, target, folder)
        if about is e:
            raise
        raise about from e
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path | None) -> None:
    """Remove our temp file after a failure; a failure here must not hide the first one."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
