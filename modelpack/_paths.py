"""Opening a path named by a user or a file: regular files only, never a blocking FIFO or a device.

One home for the check that every reader (packs, specs) makes before reading a byte: a FIFO
would block the open (or the read) forever, a socket cannot be opened at all, and a device can
stream without end (``/dev/zero``) or have side effects when opened (a tape rewinds).
"""

from __future__ import annotations

import os
import stat

__all__ = ["describe_mode", "open_regular"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def describe_mode(mode: int) -> str | None:
    """None for a regular file, else what the path is, in words for an error message."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], refuse: type[Exception], noun: str) -> int:
    """A read-only fd on ``path``, which must be a regular file, else ``refuse(message, source=path)``.

    The path is checked with ``stat`` before opening, and the fd with ``fstat`` after, because the
    path may be swapped between the two; ``O_NONBLOCK`` keeps that race from blocking on a FIFO.
    Missing and unreadable paths raise the usual ``OSError`` subclasses.
    """
    name = os.fspath(path)
    what = describe_mode(os.stat(name).st_mode)
    if what is None:
        fd = os.open(name, _FLAGS)
        what = describe_mode(os.fstat(fd).st_mode)
        if what is None:
            return fd
        os.close(fd)
    raise refuse(f"not a {noun}: it is {what}", source=os.fsdecode(name))  # type: ignore[call-arg]
