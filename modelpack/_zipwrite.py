"""The .mpk zip writer: STORED members, data aligned for mmap, deterministic bytes.

Members are appended to a private temp file's descriptor (or a writable file
object) and the central directory and end records written last. Small members
are gathered and written with one ``writev``; a big member's CRC-32 is computed
on a second thread while it is written and patched into its header afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .container import (
    _CDH, _DOS_DATE, _DOS_TIME, _EOCD, _LFH, _PAD_ID, _SIG_CDH, _SIG_EOCD, _SIG_LFH, _SIG_Z64_EOCD, _SIG_Z64_LOC,
    _U16, _U32, _Z64_EOCD, _Z64_ID, _Z64_LOC, ALIGN, Member, crc32,
)
from ._crc import crc32_combine
from .codec import FileRange
from .errors import FormatError

__all__ = ["ZipWriter", "checksums"]

_SYNC_CRC_BYTES = 1 << 20
_GATHER = 4 << 20  # members smaller than _SYNC_CRC_BYTES are written in batches of about this size
_MAX_IOV = 1024  # buffers per writev (IOV_MAX on Linux)
_CHUNK = 64 << 20


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write every buffer in order with as few system calls as the kernel allows (short writes resumed)."""
    views = [memoryview(p).cast("B") for p in parts]
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i : i + _MAX_IOV])
        while i < len(views) and n >= views[i].nbytes:
            n -= views[i].nbytes
            i += 1
        if n:
            views[i] = views[i][n:]


_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def _copy_range(r: FileRange, out: int, progress: Callable[[int], object] | None) -> None:
    """Append ``r`` to ``out`` in the kernel; read and write it back where the file systems refuse that.

    A kernel copy that stops short (some file systems answer 0 for files they
    cannot copy) is retried by reading; a read that ends early is an error.
    """
    pos, end = r.offset, r.offset + r.nbytes
    kernel = True
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
            raise FormatError(f"the file ends early: {end - pos:,} bytes missing at offset {pos:,} (truncated "
                              "while open?)", source=r.path or None)
        pos += n
        if progress:
            progress(n)


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


class _CrcJob:
    """CRC-32 (and SHA-256 if asked) of a buffer on its own thread (both release the GIL), overlapping the write.

    A plain thread, not an executor: executors refuse work during interpreter
    shutdown, when a background checkpoint save may still be finishing.
    """

    def __init__(self, data: memoryview, start: int, sha: "hashlib._Hash | None") -> None:
        self._value = start
        self._sha = sha
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(data,), name="modelpack-crc", daemon=True)
        self._thread.start()

    def _run(self, data: memoryview) -> None:
        try:
            self._value = checksums(data, self._value, self._sha)
        except BaseException as e:  # handed to the writer in result()
            self._error = e

    def result(self) -> int:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class ZipWriter:
    """Append STORED members to an fd, then write the central directory.

    Tensor data is written once, straight from the caller's memory; its CRC-32
    is computed on a second thread at the same time and patched into the local
    header afterwards (the writer owns a private temp file, so that is safe).
    """

    def __init__(self, fd: Any, *, force_zip64: bool = False) -> None:
        """``fd``: a raw descriptor of a private temp file, or a writable binary file object.

        A file object gets each member's CRC-32 before its header (no patching back).
        """
        self._fd = fd
        self._raw_write: Callable[[Any], None] = (
            (lambda data: _write_all(fd, data)) if isinstance(fd, int) else (lambda data: _write_obj(fd, data))
        )
        self._parts: list[bytes | memoryview] = []  # small members, written together (writev: no copy)
        self._parts_size = 0
        self._pos = 0
        self._members: list[Member] = []
        self._force64 = force_zip64

    def _write(self, data: bytes | memoryview) -> None:
        if self._parts:
            self._flush()
        self._raw_write(data)

    def _gather(self, *parts: bytes | memoryview) -> None:
        self._parts.extend(parts)
        self._parts_size += sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
        if self._parts_size >= _GATHER or len(self._parts) >= _MAX_IOV:
            self._flush()

    def _flush(self) -> None:
        parts, self._parts, self._parts_size = self._parts, [], 0
        if isinstance(self._fd, int):
            _writev_all(self._fd, parts)
        else:
            for part in parts:
                _write_obj(self._fd, part)

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
        body = memoryview(body).cast("B")
        size = len(head) + body.nbytes
        offset = self._pos
        raw_name = name.encode("ascii")
        z64, extra = self._extra(offset, raw_name, len(head), size, align)
        sha = hashlib.sha256() if sha256 else None
        if body.nbytes < _SYNC_CRC_BYTES or not isinstance(self._fd, int):
            crc = checksums(body, crc32(head), sha)
            future = None
        else:
            crc = 0
            future = _CrcJob(body, crc32(head), sha)
        lfh = self._lfh(raw_name, extra, crc, size, z64)
        if future is None:
            small = body.nbytes < _SYNC_CRC_BYTES
            if small:
                self._gather(lfh, head, body)
            else:
                self._write(lfh + head)
                for start in range(0, body.nbytes, _CHUNK):
                    self._write(body[start : start + _CHUNK])
            if progress:
                progress(body.nbytes)
        else:
            self._write(lfh + head)
            for start in range(0, body.nbytes, _CHUNK):
                self._write(body[start : start + _CHUNK])
                if progress:
                    progress(min(_CHUNK, body.nbytes - start))
            crc = future.result()
            os.pwrite(self._fd, struct.pack("<I", crc), offset + 14)
        data_offset = offset + len(lfh)
        self._pos = data_offset + size
        member = Member(name, offset, data_offset, size, crc, sha256=None if sha is None else sha.hexdigest())
        self._members.append(member)
        return member

    def add_copied(self, name: str, head: bytes, ranges: Sequence[FileRange], *, align: bool = False,
                   progress: Callable[[int], object] | None = None) -> Member:
        """Write one member whose content is ``head`` and then each range of another open file, in order.

        The ranges are copied file to file by the kernel (``copy_file_range``,
        or read and written back where the file systems refuse it); their
        CRC-32s are joined arithmetically, so no byte passes through memory.
        Needs a descriptor (the bytes go at its current position).
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
        self._write(lfh + head)
        for r in ranges:
            _copy_range(r, self._fd, progress)
        self._pos = offset + len(lfh) + size
        member = Member(name, offset, offset + len(lfh), size, crc)
        self._members.append(member)
        return member

    def _extra(self, offset: int, raw_name: bytes, head_len: int, size: int, align: bool) -> tuple[bool, bytes]:
        """The local header's extra field: zip64 sizes when needed, padding that aligns the data after ``head``."""
        z64 = self._force64 or size >= _U32
        extra = struct.pack("<HHQQ", _Z64_ID, 16, size, size) if z64 else b""
        if align:
            data_start = offset + _LFH.size + len(raw_name) + len(extra) + 4
            pad = (-(data_start + head_len)) % ALIGN
            extra += struct.pack("<HH", _PAD_ID, pad) + b"\0" * pad
        return z64, extra

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
        self._gather(bytes(cd))
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
