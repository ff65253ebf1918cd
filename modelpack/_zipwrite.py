"""The .mpk zip writer: STORED members, data aligned for mmap, deterministic bytes.

Members are appended to a private temp file's descriptor (or a writable file
object) and the central directory and end records written last. Small members
are gathered and written with one ``writev``, on a second thread while the
caller sums and gathers the next batch (``writev`` and the CRC-32 both release
the GIL); a big member goes in chunks the same way, its CRC-32 patched into its
header once the last chunk is summed. A copied member (``add_copied``) takes byte
ranges of other files whose CRC-32s are known: the kernel copies them, and their
CRC-32s are joined, not recomputed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .container import (
    _CDH, _DOS_DATE, _DOS_TIME, _EOCD, _LFH, _PADDING, _SIG_CDH, _SIG_EOCD, _SIG_LFH, _SIG_Z64_EOCD, _SIG_Z64_LOC,
    _U16, _U32, _Z64_EOCD, _Z64_ID, _Z64_LOC, ALIGN, Member, crc32, make_member,
)
from . import _fs
from ._crc import crc32_combine
from .codec import FileRange
from .errors import FormatError

__all__ = ["ZipWriter", "checksums"]

_BIG = 1 << 20  # a member this big is summed and written in chunks, its CRC-32 patched into its header
_GATHER = 4 << 20  # smaller members are written in batches of about this size
_MAX_IOV = 1024  # buffers per writev (IOV_MAX on Linux)
_CHUNK = 16 << 20
_Patch = tuple[int, bytes]  # (offset, bytes) written over what is already in the file


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> int:
    """Write every buffer (bytes or byte views) in order with as few system calls as the kernel allows; the bytes."""
    views = parts
    total = sum(len(p) for p in parts)
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i : i + _MAX_IOV])
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:  # a short write: resume inside this buffer
            views = list(views)
            views[i] = memoryview(views[i])[n:]
    return total


def _write_batch(fd: int, parts: list[bytes | memoryview], patch: _Patch | None) -> int:
    """The batch at the file position, then the patch; the batch's size."""
    n = _writev_all(fd, parts)
    if patch is not None:
        os.pwrite(fd, patch[1], patch[0])
    return n


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def _ends_early(r: FileRange, pos: int) -> FormatError:
    return FormatError(f"the file ends early: {r.offset + r.nbytes - pos:,} bytes missing at offset {pos:,} "
                       "(truncated while open?)", source=r.path or None)


def _read_range(r: FileRange) -> bytes:
    """A small range's bytes, read whole."""
    data = os.pread(r.fd, r.nbytes, r.offset)
    if len(data) != r.nbytes:  # a regular file answers short only at its end
        raise _ends_early(r, r.offset + len(data))
    return data


def _copy_range(r: FileRange, out: int, progress: Callable[[int], object] | None) -> None:
    """Append ``r`` to ``out`` in the kernel; read and write it back where the file systems refuse that.

    A kernel copy that stops short (some file systems answer 0 for files they
    cannot copy) is retried by reading; a read that ends early is an error.
    """
    pos, end = r.offset, r.offset + r.nbytes
    kernel = hasattr(os, "copy_file_range")  # Linux only: elsewhere, read and write
    while pos < end:
        want = min(end - pos, _CHUNK)
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(r.fd, out, want, pos)
            except OSError as e:
                if e.errno not in _NO_KERNEL_COPY:
                    raise
            kernel = n > 0
        if not kernel:
            data = os.pread(r.fd, want, pos)
            _write_all(out, data)
            n = len(data)
        if n <= 0:
            raise _ends_early(r, pos)
        pos += n
        if progress:
            progress(n)


class _Flusher:
    """Writes gathered batches on its own thread, in order, while the caller prepares the next one.

    At most one batch waits while one is written (``queue`` bounded), so the
    memory held is a few gathered batches of views, never the whole file.
    An error is kept and raised to the caller at its next call. A plain thread,
    not an executor: executors refuse work during interpreter shutdown, when a
    background checkpoint save may still be finishing. Each batch written has its
    writeback started at once (Linux, ``_fs.start_writeback``), so the disk
    writes while the next batches are prepared and the final ``fsync`` waits less.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._writeback = True  # until the kernel refuses it once
        self._queue: queue.Queue[tuple[list[bytes | memoryview], _Patch | None] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelpack-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    start = os.lseek(self._fd, 0, os.SEEK_CUR)
                    n = _write_batch(self._fd, *item)
                    if self._writeback:
                        self._writeback = _fs.start_writeback(self._fd, start, n)
            except BaseException as e:  # handed to the caller in check()
                self._error = e
            finally:
                self._queue.task_done()

    def put(self, parts: list[bytes | memoryview], patch: _Patch | None) -> None:
        self.check()
        self._queue.put((parts, patch))

    def wait(self) -> None:
        """Return once everything queued is written (or raise what failed)."""
        self._queue.join()
        self.check()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread; the descriptor is not written after this returns."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _write_obj(f: Any, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = f.write(view)
        if n is None:  # a raw stream with nothing accepted yet (non-blocking); not ours to spin on
            raise OSError("the file object accepted no bytes")
        view = view[n:]


_HASH_CHUNK = 1 << 20  # CRC-32 and SHA-256 take turns on each chunk while it is in cache: one pass


def checksums(data: memoryview, crc: int, sha: "hashlib._Hash | None") -> int:
    """CRC-32 of ``data`` continued from ``crc``, feeding ``sha`` the same bytes in the same pass."""
    if sha is None:
        return crc32(data, crc)
    for start in range(0, data.nbytes, _HASH_CHUNK):
        chunk = data[start : start + _HASH_CHUNK]
        crc = crc32(chunk, crc)
        sha.update(chunk)
    return crc


class ZipWriter:
    """Append STORED members to an fd, then write the central directory.

    Tensor data is written once, straight from the caller's memory, by a second
    thread while this one sums the next bytes; a big member's CRC-32 is patched
    into its local header afterwards (the writer owns a private temp file, so
    that is safe).
    """

    def __init__(self, fd: Any, *, force_zip64: bool = False) -> None:
        """``fd``: a raw descriptor of a private temp file, or a writable binary file object.

        A file object gets each member's CRC-32 before its header (no patching back).
        """
        self._fd = fd
        self._parts: list[bytes | memoryview] = []  # small members, written together (writev: no copy)
        self._parts_size = 0
        self._pos = 0
        self._members: list[Member] = []
        self._force64 = force_zip64
        self._flusher: _Flusher | None = None  # started at the first full batch (small files never start it)

    def _gather(self, lfh: bytes, head: bytes, body: memoryview, size: int) -> None:
        self._parts += (lfh, head, body)
        self._parts_size += size
        if self._parts_size >= _GATHER or len(self._parts) >= _MAX_IOV:
            self._flush(background=True)

    def _flush(self, background: bool = False, patch: _Patch | None = None) -> None:
        parts, self._parts, self._parts_size = self._parts, [], 0
        if not isinstance(self._fd, int):
            for part in parts:
                _write_obj(self._fd, part)
        elif background:
            if self._flusher is None:
                self._flusher = _Flusher(self._fd)
            self._flusher.put(parts, patch)
        else:
            if self._flusher is not None:
                self._flusher.wait()
            _write_batch(self._fd, parts, patch)

    def close(self) -> None:
        """Stop the background writer (after ``finish``, or on an error before the file is closed)."""
        if self._flusher is not None:
            self._flusher.close()

    def add(
        self,
        name: str,
        head: bytes,
        body: memoryview | bytes = b"",
        *,
        align: bool = False,
        progress: Callable[[int], object] | None = None,
        sha256: bool = False,
    ) -> Member:
        """Write one member whose content is ``head + body``; return where it went.

        ``sha256`` also hashes ``body`` (not ``head``) in the same pass as the CRC-32.
        """
        if type(body) is not memoryview or body.ndim != 1 or body.format != "B":
            body = memoryview(body).cast("B")
        size = len(head) + body.nbytes
        offset = self._pos
        raw_name = name.encode("ascii")
        z64, extra = self._extra(offset, raw_name, len(head), size, align)
        sha = hashlib.sha256() if sha256 else None
        if body.nbytes < _BIG or not isinstance(self._fd, int):  # the CRC first, in the header as written
            crc = checksums(body, crc32(head), sha)
            lfh = self._lfh(raw_name, extra, crc, size, z64)
            self._gather(lfh, head, body, len(lfh) + size)
            if progress:
                progress(body.nbytes)
        else:
            lfh = self._lfh(raw_name, extra, 0, size, z64)
            crc = self._write_big(lfh + head, body, crc32(head), sha, offset + 14, progress)
        data_offset = offset + len(lfh)
        self._pos = data_offset + size
        member = make_member(name, offset, data_offset, size, crc, sha256=None if sha is None else sha.hexdigest())
        self._members.append(member)
        return member

    def add_copied(self, name: str, head: bytes, ranges: Sequence[FileRange], *, align: bool = False,
                   progress: Callable[[int], object] | None = None) -> Member:
        """Write one member whose content is ``head`` and then each range of another open file, in order.

        The ranges are copied file to file by the kernel (``copy_file_range``,
        or read and written back where the file systems refuse it); their
        CRC-32s are joined arithmetically, so no byte is checksummed again. A
        small member is read instead and written with its neighbours (one
        system call per range beats a kernel copy each). Needs a descriptor
        (the bytes go at its current position, once the writer thread is done).
        """
        if not isinstance(self._fd, int):
            raise TypeError("copied members need a file descriptor, not a file object")
        size = len(head) + sum(r.nbytes for r in ranges)
        crc = crc32(head)
        for r in ranges:
            crc = crc32_combine(crc, r.crc32, r.nbytes)
        offset = self._pos
        raw_name = name.encode("ascii")
        z64, extra = self._extra(offset, raw_name, len(head), size, align)
        lfh = self._lfh(raw_name, extra, crc, size, z64)
        if size < _BIG:
            self._gather(lfh, head, memoryview(b"".join(_read_range(r) for r in ranges)), len(lfh) + size)
            if progress:
                progress(size - len(head))
        else:
            self.settle()  # everything gathered or queued so far is in the file: the copy goes after it
            _write_all(self._fd, lfh + head)
            for r in ranges:
                _copy_range(r, self._fd, progress)
        self._pos = offset + len(lfh) + size
        member = make_member(name, offset, offset + len(lfh), size, crc)
        self._members.append(member)
        return member

    def _extra(self, offset: int, raw_name: bytes, head_len: int, size: int, align: bool) -> tuple[bool, bytes]:
        """The local header's extra field: zip64 sizes when needed, padding that aligns the data after ``head``."""
        z64 = self._force64 or size >= _U32
        extra = struct.pack("<HHQQ", _Z64_ID, 16, size, size) if z64 else b""
        if align:
            data_start = offset + _LFH.size + len(raw_name) + len(extra) + 4
            extra += _PADDING[4 + (-(data_start + head_len)) % ALIGN]  # one padding field
        return z64, extra

    def _write_big(self, header: bytes, body: memoryview, crc: int, sha: "hashlib._Hash | None", crc_at: int,
                   progress: Callable[[int], object] | None) -> int:
        """A big member in chunks: each chunk's CRC-32 here while the writer thread writes the one before;
        the header goes first with a zero CRC, patched once the last chunk is summed (our private temp file)."""
        self._parts.append(header)
        for start in range(0, body.nbytes, _CHUNK):
            chunk = body[start : start + _CHUNK]
            crc = checksums(chunk, crc, sha)
            self._parts.append(chunk)
            last = start + _CHUNK >= body.nbytes  # the patch goes with the last chunk, written after it
            self._flush(background=True, patch=(crc_at, struct.pack("<I", crc)) if last else None)
            if progress:
                progress(chunk.nbytes)
        return crc

    def settle(self) -> None:
        """Return once every member added so far is in the file (a copied tensor's bytes can then go)."""
        if self._parts:
            self._flush()
        if self._flusher is not None:
            self._flusher.wait()

    def _lfh(self, raw_name: bytes, extra: bytes, crc: int, size: int, z64: bool) -> bytes:
        sz = _U32 if z64 else size
        version = 45 if z64 else 20
        return (
            _LFH.pack(_SIG_LFH, version, 0, 0, _DOS_TIME, _DOS_DATE, crc, sz, sz, len(raw_name), len(extra))
            + raw_name
            + extra
        )

    def finish(self) -> int:
        """Write the central directory and end records; return the file size."""
        cd = bytearray()
        for m in self._members:
            cd += self._cd_entry(m)
        cd_offset, cd_size, count = self._pos, len(cd), len(self._members)
        need64 = self._force64 or count >= _U16 or cd_offset >= _U32 or cd_size >= _U32
        if need64:
            z64_offset = cd_offset + cd_size
            cd += _Z64_EOCD.pack(_SIG_Z64_EOCD, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
            cd += _Z64_LOC.pack(_SIG_Z64_LOC, 0, z64_offset, 1)
            cd += _EOCD.pack(_SIG_EOCD, 0, 0, _U16, _U16, _U32, _U32, 0)
        else:
            cd += _EOCD.pack(_SIG_EOCD, 0, 0, count, count, cd_size, cd_offset, 0)
        self._parts.append(bytes(cd))
        self._flush()
        self._pos += len(cd)
        return self._pos

    def _cd_entry(self, m: Member) -> bytes:
        raw = m.name.encode("ascii")
        size_64 = self._force64 or m.size >= _U32
        off_64 = self._force64 or m.header_offset >= _U32
        fields = ([m.size, m.size] if size_64 else []) + ([m.header_offset] if off_64 else [])
        extra = struct.pack(f"<HH{len(fields)}Q", _Z64_ID, 8 * len(fields), *fields) if fields else b""
        version = 45 if (size_64 or off_64) else 20
        sz = _U32 if size_64 else m.size
        off = _U32 if off_64 else m.header_offset
        return (
            _CDH.pack(_SIG_CDH, version, version, 0, 0, _DOS_TIME, _DOS_DATE, m.crc, sz, sz,
                      len(raw), len(extra), 0, 0, 0, 0, off)
            + raw
            + extra
        )
