"""Byte sources under the reader: a local file (mmap), a file object, bytes, or a remote URL (ranged reads).

The zip reader and :class:`modelpack.api.Pack` see one small interface (size, ``pread``,
``readinto``, an optional copy-on-write map and ``sibling`` for split packs), so every strict
check runs the same way whatever the bytes come from. Remote sources fetch only what is asked
for, with HTTP range requests (stdlib) or ``fsspec``'s ``cat_file`` (the optional ``remote``
extra), and keep the tail of the file: the end record, central directory and manifest usually
come back in the first request.
"""

from __future__ import annotations

import io
import os
import re
import threading
import urllib.error
import urllib.request
import weakref
from typing import Any

import numpy as np

from ._filemap import map_copy_on_write
from ._paths import describe_mode
from .errors import FormatError, MissingDependencyError, NotAModelPackError

__all__ = ["Source", "open_source", "is_url", "SHARD_NAME_RE"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
SHARD_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.mpk")
_TAIL = 256 << 10  # first remote request: the last 256 KiB (end record, directory and most manifests)
_READ_AHEAD = 64 << 10  # a smaller remote read fetches this much (the first header and the spec in one)
_CACHE_MAX = 1 << 20  # remote reads up to this size are kept (headers, manifest, spec)
_CACHE_TOTAL = 8 << 20  # and at most this much in all


def is_url(obj: Any) -> bool:
    """A ``scheme://...`` string (``file://`` included); plain paths and ``PathLike`` are not URLs."""
    return isinstance(obj, str) and bool(_URL_RE.match(obj))


class Source:
    """What the reader needs from a byte source; subclasses fill in the reads."""

    name: str = ""
    size: int = 0
    #: local headers are checked when a member is first read (one request each is too dear remotely)
    lazy_headers: bool = False

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (short only at the end of the source)."""
        raise NotImplementedError

    def readinto(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset``; the number of bytes read (short only at the end)."""
        data = self.pread(view.nbytes, offset)
        view[: len(data)] = data
        return len(data)

    def map(self) -> np.ndarray | None:
        """The whole source as a writable copy-on-write uint8 array, or None where it cannot be mapped."""
        return None

    def prefetch(self, start: int, end: int) -> None:
        """A hint: bytes [start, end) are about to be read (a remote source fetches them in one request)."""

    def current_size(self) -> int:
        """The size now: a local file may shrink while open (mapped bytes past EOF are SIGBUS)."""
        return self.size

    def sibling(self, name: str) -> "Source":
        """The source of file ``name`` in the same folder (a shard of a split pack)."""
        raise FormatError(
            f"this is the index of a split pack; its shards ({name!r}, ...) can only be found next to it: "
            "open the index by path or URL, not from a file object or bytes",
            where="manifest.json.shards",
        )

    def hold_folder(self) -> None:
        """Fix where :meth:`sibling` looks, for shards opened later (local files; URLs are absolute)."""

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- local files


class FileSource(Source):
    """A regular local file: ``pread`` and a copy-on-write memory map."""

    def __init__(self, path: str | os.PathLike[str], *, nofollow: bool = False) -> None:
        self.name = os.fspath(path)
        self._fd: int | None = _open_regular_file(self.name, nofollow)
        self._closer = weakref.finalize(self, os.close, self._fd)  # dropped without close(): fd freed
        self.size = os.fstat(self._fd).st_size
        self._folder: str | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("the pack is closed")
        return self._fd

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def readinto(self, view: memoryview, offset: int) -> int:
        return os.preadv(self.fd, [view], offset)

    def map(self) -> np.ndarray | None:
        return map_copy_on_write(self.fd, self.size)

    def current_size(self) -> int:
        return os.fstat(self.fd).st_size

    def sibling(self, name: str) -> Source:
        if not SHARD_NAME_RE.fullmatch(name) or ".." in name:
            raise FormatError(f"shard name {name[:80]!r} is not a plain file name", where="manifest.json.shards")
        if self._folder is None:
            self.hold_folder()
        return FileSource(os.path.join(self._folder, name), nofollow=True)  # type: ignore[arg-type]

    def hold_folder(self) -> None:
        """Fix the folder shards are found in now (an index opens them later; the working folder may change)."""
        self._folder = os.path.dirname(os.path.abspath(self.name))

    def close(self) -> None:
        self._fd = None
        self._closer()


def _open_regular_file(path: str, nofollow: bool) -> int:
    """A read-only fd on a regular file; pipes, sockets, devices, folders (and symlinks if asked) refused."""
    if nofollow and os.path.islink(path):
        raise FormatError("a shard is a symbolic link; shards must be plain files in the index's folder",
                          source=path)
    what = _what(os.stat(path).st_mode)
    if what is None:
        fd = os.open(path, _FLAGS | (_NOFOLLOW if nofollow else 0))
        what = _what(os.fstat(fd).st_mode)
        if what is None:
            return fd
        os.close(fd)
    raise NotAModelPackError(f"not a .mpk file: it is {what}", source=path)


def _what(mode: int) -> str | None:
    what = describe_mode(mode)
    return what if what in (None, "a folder") else f"not a regular file ({what})"


# --------------------------------------------------------------------------- memory


class BytesSource(Source):
    """A pack held in memory (``bytes``, ``bytearray``, ``memoryview``): tensors are copied out."""

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>") -> None:
        self._data = memoryview(data).cast("B")
        self.name = name
        self.size = self._data.nbytes

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self._data[offset : offset + size])

    def readinto(self, view: memoryview, offset: int) -> int:
        part = self._data[offset : offset + view.nbytes]
        view[: part.nbytes] = part
        return part.nbytes


class FileObjectSource(Source):
    """A readable, seekable binary file object: read, never mapped; the pack spans the whole stream."""

    def __init__(self, f: Any) -> None:
        if not (hasattr(f, "read") and hasattr(f, "seek")):
            raise TypeError(f"expected a path, URL, bytes or a binary file object; got {type(f).__name__}")
        if (hasattr(f, "seekable") and not f.seekable()) or (hasattr(f, "readable") and not f.readable()):
            raise NotAModelPackError("the file object must be readable and seekable (a .mpk keeps its "
                                     "directory at the end)", source=_fobj_name(f))
        if isinstance(f, io.TextIOBase):
            raise TypeError("open the file in binary mode ('rb')")
        self._f = f
        self._lock = threading.Lock()
        self.name = _fobj_name(f)
        self.size = f.seek(0, os.SEEK_END)

    def pread(self, size: int, offset: int) -> bytes:
        with self._lock:
            self._f.seek(offset)
            return bytes(self._f.read(size))

    def readinto(self, view: memoryview, offset: int) -> int:
        if not hasattr(self._f, "readinto"):
            return super().readinto(view, offset)
        with self._lock:
            self._f.seek(offset)
            pos = 0
            while pos < view.nbytes:
                n = self._f.readinto(view[pos:])
                if not n:
                    break
                pos += n
            return pos


def _fobj_name(f: Any) -> str:
    name = getattr(f, "name", None)
    return name if isinstance(name, str) else f"<{type(f).__name__}>"


# --------------------------------------------------------------------------- remote


class _RangedSource(Source):
    """Ranged reads with a small cache; the first request fetches the tail and learns the size."""

    lazy_headers = True

    def __init__(self, url: str) -> None:
        self.name = url
        self._blocks: list[tuple[int, bytes]] = []
        self._last: tuple[int, bytes] = (0, b"")  # the latest prefetch: one member's header and data
        self._lock = threading.Lock()
        self.size, tail = self._tail(_TAIL)
        self._blocks.append((self.size - len(tail), tail))

    def _tail(self, n: int) -> tuple[int, bytes]:
        """(total size, the last ``n`` bytes or all of a smaller file)."""
        raise NotImplementedError

    def _fetch(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def pread(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        with self._lock:
            for start, block in (self._last, *self._blocks):
                if start <= offset and end <= start + len(block):
                    return block[offset - start : end - start]
        fetch_end = min(max(end, offset + _READ_AHEAD), self.size)
        data = self._fetch(offset, fetch_end)
        if len(data) != fetch_end - offset:
            raise FormatError(f"the server sent {len(data)} bytes for a range of {fetch_end - offset}",
                              source=self.name)
        if len(data) <= _CACHE_MAX:
            with self._lock:
                self._blocks.append((offset, data))
                while sum(len(b) for _, b in self._blocks) > _CACHE_TOTAL and len(self._blocks) > 2:
                    del self._blocks[1]  # the oldest after the tail
        return data[: end - offset]

    def prefetch(self, start: int, end: int) -> None:
        end = min(end, self.size)
        data = self._fetch(start, end) if end > start else b""
        with self._lock:
            self._last = (start, data)

    def sibling(self, name: str) -> Source:
        if not SHARD_NAME_RE.fullmatch(name) or ".." in name:
            raise FormatError(f"shard name {name[:80]!r} is not a plain file name", where="manifest.json.shards")
        return type(self)(self.name.rsplit("/", 1)[0] + "/" + name)  # type: ignore[call-arg]


_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class HttpSource(_RangedSource):
    """http(s) with ``Range`` requests, standard library only."""

    def _request(self, byte_range: str) -> tuple[bytes, str]:
        req = urllib.request.Request(self.name, headers={"Range": f"bytes={byte_range}",
                                                         "Accept-Encoding": "identity"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the user's own URL
                if resp.status != 206:
                    raise FormatError(f"the server ignored the range request (HTTP {resp.status}); a remote "
                                      ".mpk needs a server with Range support", source=self.name)
                return resp.read(), resp.headers.get("Content-Range", "")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FileNotFoundError(2, "no such remote file (HTTP 404)", self.name) from e
            raise OSError(f"HTTP {e.code} reading {self.name}") from e

    def _tail(self, n: int) -> tuple[int, bytes]:
        data, content_range = self._request(f"-{n}")
        m = _CONTENT_RANGE_RE.fullmatch(content_range.strip())
        if m is None:
            raise FormatError(f"the server sent no usable Content-Range ({content_range[:60]!r})", source=self.name)
        return int(m.group(3)), data

    def _fetch(self, start: int, end: int) -> bytes:
        return self._request(f"{start}-{end - 1}")[0]


class FsspecSource(_RangedSource):
    """Any fsspec URL (``memory://``, ``s3://``, ...): ranged ``cat_file`` reads."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as e:
            raise MissingDependencyError(f"reading {url.split('://')[0]}:// URLs needs fsspec "
                                         "(pip install 'modelpack[remote]')") from e
        self._fs, self._path = fsspec.core.url_to_fs(url)
        super().__init__(url)

    def _tail(self, n: int) -> tuple[int, bytes]:
        size = self._fs.size(self._path)
        return size, self._fs.cat_file(self._path, start=max(0, size - n), end=size)

    def _fetch(self, start: int, end: int) -> bytes:
        return self._fs.cat_file(self._path, start=start, end=end)


# --------------------------------------------------------------------------- choosing


def open_source(obj: Any) -> Source:
    """The source for what a user passed: path, URL, bytes-like or binary file object."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return BytesSource(obj)
    if is_url(obj):
        scheme = obj.split("://", 1)[0].lower()
        if scheme == "file":
            return FileSource(obj[len("file://"):])
        if scheme in ("http", "https"):
            return HttpSource(obj)
        return FsspecSource(obj)
    if isinstance(obj, (str, os.PathLike)):
        return FileSource(obj)
    return FileObjectSource(obj)
