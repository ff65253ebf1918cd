"""The .mpk zip: the layout constants, the member record and a strict reader (the writer is modelpack._zipwrite).

CPython's zipfile accepts duplicates, overlaps, prepended and trailing bytes
and local headers that disagree with the central directory, so the reader does
its own checks over the whole structure before a single byte of data is used:
members tile the file from offset 0 to the central directory with no gap or
overlap, every local header repeats its central-directory entry exactly, names
come from a small allowlist, and nothing follows the end record. After that,
every (offset, size) handed out lies inside the file, so mapping it is safe.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import limits
from ._crc import crc32
from .errors import FormatError, NotAModelPackError

if TYPE_CHECKING:
    from ._source import Source

__all__ = [
    "crc32", "Member", "make_member", "read_members", "identify", "pread_exact", "check_member_count",
    "check_member_name_length", "check_local_header", "ALIGN", "NPY_SUFFIX",
]

ALIGN = 64
NPY_SUFFIX = ".npy"

_LFH = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CDH = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
_Z64_EOCD = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_Z64_LOC = struct.Struct("<IIQI")  # 20 bytes
_SIG_LFH, _SIG_CDH, _SIG_EOCD = 0x04034B50, 0x02014B50, 0x06054B50
_SIG_Z64_EOCD, _SIG_Z64_LOC = 0x06064B50, 0x07064B50
_Z64_ID = 0x0001
_PAD_ID = 0x706D  # "mp": padding that aligns the member's data
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00, fixed for determinism
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_WINDOW = 512  # bytes read past a local header's name: extra field + .npy header, in one pread
_MAX_ZIP_NAME = _U16  # the name length field of a zip header is 16 bits
_MAX_CD_EXTRA = 28  # a central directory entry's ZIP64 field: 4 + three 8-byte values
MEMBER_NAME_RE = re.compile(rb"(manifest\.json|spec\.yaml|[A-Za-z0-9_][A-Za-z0-9_.\-]*\.npy)")


@dataclasses.dataclass(frozen=True)
class Member:
    """A validated member: where its data lies in the file and its CRC-32."""

    name: str
    header_offset: int
    data_offset: int
    size: int
    crc: int
    # the first bytes of the data (up to a few hundred), read with the header: the .npy header
    prefix: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    version: int = dataclasses.field(default=20, repr=False, compare=False)  # "version needed", as in the directory
    # hex SHA-256 of the body (the tensor's bytes, without the .npy header) when the writer was asked for it
    sha256: str | None = dataclasses.field(default=None, repr=False, compare=False)


def make_member(name: str, header_offset: int, data_offset: int, size: int, crc: int, prefix: bytes = b"",
                version: int = 20, sha256: str | None = None) -> Member:
    """``Member(...)`` at less than half the cost (a frozen dataclass sets each field through a call)."""
    m = object.__new__(Member)
    m.__dict__.update(name=name, header_offset=header_offset, data_offset=data_offset, size=size, crc=crc,
                      prefix=prefix, version=version, sha256=sha256)
    return m

# --------------------------------------------------------------------------- reading


def pread_exact(src: "Source | int", size: int, offset: int, *, where: str = "") -> bytes:
    """Read exactly ``size`` bytes or fail with a FormatError (never short)."""
    data = os.pread(src, size, offset) if isinstance(src, int) else src.pread(size, offset)
    if len(data) != size:
        raise FormatError(f"file ends early: wanted {size} bytes at offset {offset}", where=where or None)
    return data


def identify(head: bytes) -> str | None:
    """Say what a non-.mpk file looks like, from its first bytes."""
    if not head:
        return "an empty file"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle (e.g. an old torch.save file); modelpack never unpickles"
    if head.startswith(b"\x93NUMPY"):
        return "a .npy file; load it with numpy.load"
    if head.startswith(b"GGUF"):
        return "a GGUF file"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (Keras .h5?)"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20):
        return "a safetensors file; load it with safetensors"
    if head.startswith(b"PK\x03\x04"):
        return None
    return None


def _not_mpk(src: Source, path_hint: str) -> NotAModelPackError:
    head = src.pread(64, 0)
    looks = identify(head)
    if looks is None and head.startswith(b"PK\x03\x04"):
        name_len = int.from_bytes(head[26:28], "little")
        first = src.pread(min(name_len, 256), 30)
        if b"/" in first:
            looks = "a zip archive such as a torch.save file (pickle inside); modelpack never unpickles"
        else:
            looks = "a zip archive that is not a .mpk (or a damaged .mpk)"
    return NotAModelPackError(f"not a .mpk file: it looks like {looks or 'something else'}", where=path_hint or None)


def read_members(src: "Source | int", *, where: str = "") -> list[Member]:
    """Parse and check the zip structure; return members in file order.

    For a source with ``lazy_headers`` (remote), local headers are not read here:
    the members' data offsets follow from the central directory alone (members tile
    the file), and :func:`check_local_header` proves each header agrees when its
    member is first read. Every other source has every header checked now.
    """
    if isinstance(src, int):
        src = _FdSource(src)
    size = src.size
    if size < _EOCD.size or not _first_member_is_ours(src):
        raise _not_mpk(src, where)
    cd_offset, cd_size, count = _read_end(src, size)
    check_member_count(count)
    _check_cd_size(cd_size, count)
    cd = pread_exact(src, cd_size, cd_offset, where="central directory")
    entries = _parse_cd(cd, count)
    if src.lazy_headers:
        return _plan_members(entries, cd_offset)
    return _check_local_headers(src, entries, cd_offset)


class _FdSource:
    """A bare fd as a source (tests and tools that hold one)."""

    lazy_headers = False

    def __init__(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, socket or device)"
            raise NotAModelPackError(f"not a .mpk file: it is {what}")
        self.fd, self.size = fd, st.st_size

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)


def check_member_count(count: int) -> None:
    """The cap on zip members: the reader checks it before parsing entries, the writer before writing."""
    limits.check("max_members", count, where="central directory", what="number of members")


def check_member_name_length(name_bytes: int, where: str) -> None:
    """The cap on a member name, counted without ``.npy`` so it equals the tensor name's cap.

    Both the reader and the writer apply it; the zip format's own 16-bit bound
    holds whatever the cap is raised to.
    """
    limits.check("max_name_length", name_bytes - len(NPY_SUFFIX), where=where, what="name length")
    if name_bytes > _MAX_ZIP_NAME:
        raise FormatError(f"a zip member name holds at most {_MAX_ZIP_NAME:,} bytes, not {name_bytes:,}", where=where)


def _check_cd_size(cd_size: int, count: int) -> None:
    """Bound the directory before reading it: each entry is a fixed header, a name and a ZIP64 field."""
    if cd_size < count * _CDH.size or (cd_size and not count):
        raise FormatError(f"central directory size {cd_size} does not fit {count} entries", where="central directory")
    if count:  # a bigger directory means some name is longer than the average of what is left
        longest = -(-(cd_size - count * (_CDH.size + _MAX_CD_EXTRA)) // count)
        if longest > limits.current().max_name_length + len(NPY_SUFFIX):
            check_member_name_length(longest, "central directory")


def _first_member_is_ours(src: Source) -> bool:
    """A .mpk starts with one of its own member names; other zips (torch.save...) do not."""
    head = src.pread(_LFH.size + 128, 0)
    if len(head) < _LFH.size or head[:4] != b"PK\x03\x04":
        return False
    name_len = int.from_bytes(head[26:28], "little")  # 16 bits: the whole name is one small read
    name = head[_LFH.size : _LFH.size + name_len]
    if len(name) < name_len:
        name = src.pread(name_len, _LFH.size)
    return bool(MEMBER_NAME_RE.fullmatch(name))


def _read_end(fd: Source, size: int) -> tuple[int, int, int]:
    eocd = pread_exact(fd, _EOCD.size, size - _EOCD.size)
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack(eocd)
    if sig != _SIG_EOCD:
        raise FormatError(
            "no end-of-central-directory record at the end of the file: it is truncated or has bytes "
            "appended after the archive",
            where="end record",
        )
    if disk or cd_disk or n_disk != n_total or comment:
        raise FormatError("end record declares several disks or a comment; .mpk files have neither", where="end record")
    end = size - _EOCD.size
    if n_total == _U16 or _U32 in (cd_size, cd_offset):
        return _read_zip64_end(fd, end, (n_total, cd_size, cd_offset))
    if cd_offset + cd_size != end:
        raise FormatError(
            f"central directory [{cd_offset}, {cd_offset + cd_size}) does not end at the end record ({end})",
            where="end record",
        )
    return cd_offset, cd_size, n_total


def _read_zip64_end(fd: Source, end: int, plain: tuple[int, int, int]) -> tuple[int, int, int]:
    if end < _Z64_LOC.size + _Z64_EOCD.size:
        raise FormatError("ZIP64 end records are missing", where="end record")
    sig, disk, rec_offset, disks = _Z64_LOC.unpack(pread_exact(fd, _Z64_LOC.size, end - _Z64_LOC.size))
    rec_end = end - _Z64_LOC.size
    if sig != _SIG_Z64_LOC or disk or disks != 1 or rec_offset + _Z64_EOCD.size != rec_end:
        raise FormatError("ZIP64 locator is missing or inconsistent", where="zip64 end record")
    fields = _Z64_EOCD.unpack(pread_exact(fd, _Z64_EOCD.size, rec_offset))
    sig, rec_size, _made, _need, disk, cd_disk, n_disk, n_total, cd_size, cd_offset = fields
    if sig != _SIG_Z64_EOCD or rec_size != 44 or disk or cd_disk or n_disk != n_total:
        raise FormatError("ZIP64 end record is malformed", where="zip64 end record")
    for plain_value, value, cap in zip(plain, (n_total, cd_size, cd_offset), (_U16, _U32, _U32)):
        if plain_value != cap and plain_value != value:
            raise FormatError("ZIP64 end record disagrees with the end record", where="zip64 end record")
    if cd_offset + cd_size != rec_offset:
        raise FormatError("central directory does not end at the ZIP64 end record", where="zip64 end record")
    return cd_offset, cd_size, n_total


@dataclasses.dataclass
class _Entry:
    name: str
    raw_name: bytes
    version: int
    crc: int
    size: int
    header_offset: int


def _parse_cd(cd: bytes, count: int) -> list[_Entry]:
    # one pass, no per-entry strings: locations are formatted only when something is wrong
    entries: list[_Entry] = []
    seen: set[str] = set()
    pos, end, fixed = 0, len(cd), _CDH.size
    unpack, fullmatch = _CDH.unpack_from, MEMBER_NAME_RE.fullmatch
    longest = limits.current().max_name_length + len(NPY_SUFFIX)
    for i in range(count):
        if pos + fixed > end:
            raise FormatError("central directory ends early", where=f"central directory entry {i}")
        (sig, _made, need, flags, method, _t, _d, crc, csize, usize, nlen, elen, clen,
         disk, _iattr, _eattr, offset) = unpack(cd, pos)
        if sig != _SIG_CDH:
            raise FormatError("bad central directory signature", where=f"central directory entry {i}")
        start = pos + fixed
        raw = cd[start : start + nlen]
        pos = start + nlen + elen + clen
        if not fullmatch(raw) or b".." in raw or len(raw) > longest:
            _check_name(raw, f"central directory entry {i}")
        name = raw.decode("ascii")
        if flags or method or clen or disk:
            what = "encrypted or flagged" if flags else "compressed" if method else "commented or multi-disk"
            raise FormatError(f"member is {what}; .mpk members are plain STORED data", where=f"member {name!r}")
        if elen or csize != usize:
            usize, offset = _apply_zip64(cd[start + nlen : start + nlen + elen], csize, usize, offset,
                                         f"member {name!r}")
        elif usize == _U32 or offset == _U32:
            raise FormatError("ZIP64 values are missing", where=f"member {name!r}")
        folded = name.casefold()
        if folded in seen:
            raise FormatError("member name appears twice (names are compared case-insensitively)",
                              where=f"member {name!r}")
        seen.add(folded)
        entries.append(_Entry(name, raw, need, crc, usize, offset))
    if pos != end:
        raise FormatError("central directory has bytes after its last entry", where="central directory")
    return entries


def _check_name(raw: bytes, where: str) -> str:
    if not MEMBER_NAME_RE.fullmatch(raw) or b".." in raw:
        shown = raw[:80].decode("ascii", "backslashreplace")
        raise FormatError(
            f"member name {shown!r} is not allowed: names are 'manifest.json', 'spec.yaml' or "
            "'<tensor>.npy' with letters, digits, '_', '.', '-'",
            where=where,
        )
    if raw.endswith(NPY_SUFFIX.encode()):  # manifest.json and spec.yaml are fixed names
        check_member_name_length(len(raw), where)
    return raw.decode("ascii")


def _apply_zip64(extra: bytes, csize: int, usize: int, offset: int, where: str) -> tuple[int, int]:
    if csize != usize:
        raise FormatError("compressed and uncompressed sizes differ", where=where)
    wanted = (2 if usize == _U32 else 0) + (1 if offset == _U32 else 0)
    if not extra:
        if wanted:
            raise FormatError("ZIP64 values are missing", where=where)
        return usize, offset
    if len(extra) < 4:
        raise FormatError("corrupt extra field", where=where)
    hid, hlen = struct.unpack_from("<HH", extra)
    if hid != _Z64_ID or hlen != 8 * wanted or len(extra) != 4 + hlen or not wanted:
        raise FormatError("unexpected extra field in the central directory", where=where)
    values = list(struct.unpack_from(f"<{wanted}Q", extra, 4))
    if usize == _U32:
        usize, csize = values[0], values[1]
        if usize != csize:
            raise FormatError("compressed and uncompressed sizes differ", where=where)
    if offset == _U32:
        offset = values[-1]
    return usize, offset


def _check_local_headers(src: Source, entries: Sequence[_Entry], cd_offset: int) -> list[Member]:
    members: list[Member] = []
    expected = 0
    pread, lfh_size, unpack = src.pread, _LFH.size, _LFH.unpack_from
    for e in entries:
        if e.header_offset != expected:
            what = "overlaps the previous one" if e.header_offset < expected else "leaves a gap before it"
            raise FormatError(f"member at offset {e.header_offset} {what} (expected {expected})",
                              where=f"member {e.name!r}")
        # one read covers the local header, its name and extra field, and the start of the data
        raw = e.raw_name
        fixed = lfh_size + len(raw)
        window = pread(min(fixed + _WINDOW, cd_offset - e.header_offset), e.header_offset)
        if len(window) >= fixed:
            sig, need, flags, method, _t, _d, crc, csize, usize, nlen, elen = unpack(window)
            # the common case, decided without a call: an aligned member's only extra field is padding
            fast = (sig == _SIG_LFH and nlen == len(raw) and window[lfh_size:fixed] == raw and csize == usize
                    == e.size < _U32 and (need, flags, method, crc) == (e.version, 0, 0, e.crc)
                    and window[fixed : fixed + elen] == _PADDING.get(elen))
        else:
            fast = False
        if not fast:
            elen = _check_header(src, window, e, f"member {e.name!r}")
        data_offset = e.header_offset + fixed + elen
        expected = data_offset + e.size
        if expected > cd_offset:
            raise FormatError("member data runs into the central directory", where=f"member {e.name!r}")
        prefix = window[fixed + elen : fixed + elen + e.size]
        members.append(make_member(e.name, e.header_offset, data_offset, e.size, e.crc, prefix, e.version))
    if expected != cd_offset:
        raise FormatError(f"{cd_offset - expected} unexplained bytes before the central directory", where="archive")
    return members


# extra field length -> the extra field the writer puts before aligned data (none, or one all-zero padding
# field): what most local headers hold, compared as bytes; anything else goes through _check_header
_PADDING = {0: b"", **{4 + n: struct.pack("<HH", _PAD_ID, n) + b"\0" * n for n in range(ALIGN)}}


def _check_header(src: Source, window: bytes, e: _Entry | Member, where: str) -> int:
    """Prove a local header (at the start of ``window``) repeats its directory entry; return its extra length."""
    raw_name = e.name.encode("ascii")
    fixed = _LFH.size + len(raw_name)
    if len(window) < fixed:
        raise FormatError("file ends inside a local header", where=where)
    sig, need, flags, method, _t, _d, crc, csize, usize, nlen, elen = _LFH.unpack_from(window)
    if sig != _SIG_LFH or nlen != len(raw_name) or window[_LFH.size : fixed] != raw_name:
        raise FormatError("local header does not match the central directory (signature or name)", where=where)
    extra = window[fixed : fixed + elen]
    if len(extra) != elen:
        extra = pread_exact(src, elen, e.header_offset + fixed, where=where)
    lsize = _local_size(extra, csize, usize, where)
    if (need, flags, method, crc, lsize) != (e.version, 0, 0, e.crc, e.size):
        raise FormatError("local header disagrees with the central directory", where=where)
    return elen


def _plan_members(entries: Sequence[_Entry], cd_offset: int) -> list[Member]:
    """Members placed from the directory alone: each one's data ends where the next header starts."""
    members: list[Member] = []
    starts = [e.header_offset for e in entries[1:]] + [cd_offset]
    expected = 0
    for e, end in zip(entries, starts):
        where = f"member {e.name!r}"
        if e.header_offset != expected:
            what = "overlaps the previous one" if e.header_offset < expected else "leaves a gap before it"
            raise FormatError(f"member at offset {e.header_offset} {what} (expected {expected})", where=where)
        data_offset = end - e.size
        elen = data_offset - e.header_offset - _LFH.size - len(e.raw_name)
        if not 0 <= elen <= _U16:
            raise FormatError("member data does not fit between its header and the next member", where=where)
        members.append(Member(e.name, e.header_offset, data_offset, e.size, e.crc, b"", e.version))
        expected = end
    return members


def check_local_header(src: Source, m: Member) -> bytes:
    """A lazily placed member's local header, checked as the eager reader checks it; the data's first bytes."""
    where = f"member {m.name!r}"
    head_len = m.data_offset - m.header_offset
    window = pread_exact(src, head_len + min(m.size, _WINDOW), m.header_offset, where=where)
    elen = _check_header(src, window, m, where)
    if _LFH.size + len(m.name) + elen != head_len:
        raise FormatError("local header's length disagrees with where the directory places the data", where=where)
    return window[head_len:]


def _local_size(extra: bytes, csize: int, usize: int, where: str) -> int:
    if csize != usize:
        raise FormatError("local header: compressed and uncompressed sizes differ", where=where)
    size = usize
    seen64 = False
    pos = 0
    while pos < len(extra):
        if pos + 4 > len(extra):
            raise FormatError("corrupt extra field in local header", where=where)
        hid, hlen = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + hlen]
        if len(body) != hlen:
            raise FormatError("corrupt extra field in local header", where=where)
        if hid == _Z64_ID and usize == _U32 and hlen == 16 and not seen64:  # once: no first-vs-last differential
            a, b = struct.unpack("<QQ", body)
            if a != b:
                raise FormatError("local header: ZIP64 sizes differ", where=where)
            size, seen64 = a, True
        elif hid != _PAD_ID or body.strip(b"\0"):
            raise FormatError(f"unexpected extra field 0x{hid:04x} in local header", where=where)
        pos += 4 + hlen
    if usize == _U32 and not seen64:
        raise FormatError("local header: ZIP64 sizes are missing", where=where)
    return size
