"""The zip layer: every structure lie CPython's zipfile would accept is refused by every reader.

Each case mutates a valid pack built by ``mpkcraft.mpk()`` (members ``a.npy``, ``b.npy``,
``manifest.json``) and names the error class, words of its message and its ``where``.
"""

from __future__ import annotations

import os
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelpack import api
from modelpack.errors import FormatError, LimitError, NotAModelPackError

from .guards import ANY, READERS, guarded, refused, tree_equal, write
from .mpkcraft import CDH, EOCD, LFH, PAD_ID, U16, U32, Z64_ID, Entry, Zip, mpk

B = "member 'b.npy'"
CD1 = "central directory entry 1"


def _set(attr: str, i: int = 1, **fields: int) -> Callable[[Zip], None]:
    return lambda z: getattr(z.e[i], attr).update(fields)


def _both(i: int = 1, **fields: int) -> Callable[[Zip], None]:
    def mutate(z: Zip) -> None:
        z.e[i].lfh.update(fields)
        z.e[i].cd.update(fields)

    return mutate


def _name(raw: bytes, i: int = 1) -> Callable[[Zip], None]:
    def mutate(z: Zip) -> None:
        z.e[i].name = raw

    return mutate


def _attr(i: int = 1, **values: object) -> Callable[[Zip], None]:
    def mutate(z: Zip) -> None:
        for k, v in values.items():
            setattr(z.e[i], k, v)

    return mutate


def _zip(**values: object) -> Callable[[Zip], None]:
    def mutate(z: Zip) -> None:
        for k, v in values.items():
            setattr(z, k, v)

    return mutate


def _set_eocd(**fields: int) -> Callable[[Zip], None]:
    return lambda z: z.eocd.update(fields)


def _quoted_overlap(z: Zip) -> None:
    """Member a's declared data runs over b's local header (Fifield's "quoted overlap")."""
    z.bytes()
    covered = z.marks["data1"] - z.marks["data0"]
    raw = z.bytes()[z.marks["data0"] : z.marks["data0"] + covered]
    z.e[0].lfh.update(csize=covered, usize=covered, crc=zlib.crc32(raw))
    z.e[0].cd.update(csize=covered, usize=covered, crc=zlib.crc32(raw))


def _full_overlap(z: Zip) -> None:
    """Central-directory entry 1 points at member a's local header (Fifield's "full overlap")."""
    z.e[1].cd["offset"] = 0


def _hidden_archive_in_comment(z: Zip) -> None:
    """A second end record hides in the archive comment, pointing at a copy of the directory there."""
    raw = z.bytes()
    cd = raw[z.marks["cd"] : z.marks["eocd"]]
    hidden_cd_at = z.marks["eocd"] + EOCD.size
    fake_end = EOCD.pack(0x06054B50, 0, 0, 3, 3, len(cd), hidden_cd_at, 0)
    z.comment = cd + fake_end


def _prepend_fake_member(z: Zip) -> None:
    """A polyglot: a plausible first local header, then the real archive with offsets shifted."""
    z.prefix = LFH.pack(0x04034B50, 20, 0, 0, 0, 0x21, 0, 0, 0, 5, 0) + b"x.npy"
    z.shift = True


def _huge_size_zip64(z: Zip) -> None:
    z.bytes()
    m = z.e[1]
    m.z64 = True
    m.cd["offset"] = z.marks["lfh1"]
    m.lfh_extra = struct.pack("<HHQQ", Z64_ID, 16, 1 << 62, 1 << 62)
    m.cd_extra = struct.pack("<HHQQ", Z64_ID, 16, 1 << 62, 1 << 62)


def _two_zip64_fields(z: Zip) -> None:
    """First ZIP64 field lies, second tells the truth: a streaming reader would use the first."""
    z.bytes()
    m = z.e[1]
    size = len(m.data)
    m.z64 = True
    m.cd["offset"] = z.marks["lfh1"]
    m.cd_extra = struct.pack("<HHQQ", Z64_ID, 16, size, size)
    m.lfh_extra = struct.pack("<HHQQ", Z64_ID, 16, 7, 7) + struct.pack("<HHQQ", Z64_ID, 16, size, size)


def _deflated(z: Zip) -> None:
    m = z.e[1]
    packed = zlib.compress(m.data)[2:-4]
    crc = zlib.crc32(m.data)
    m.lfh.update(method=8, crc=crc, usize=len(m.data))
    m.cd.update(method=8, crc=crc, usize=len(m.data))
    m.data = packed
    m.align = False


# (id, mutation, error class, message words, where)
CASES: list[tuple[str, Callable[[Zip], None], type, str, str | None]] = [
    # ---- names: traversal, absolute, control characters, exotic spellings
    *[(f"name-{i}", _name(raw), FormatError, "is not allowed", CD1) for i, raw in enumerate([
        b"../b.npy", b"/b.npy", b"x/../../b.npy", b"C:\\b.npy", b"\\\\srv\\share\\b.npy", b"C:b.npy",
        b"b.npy\x00.txt", b"b\n.npy", b"b\r.npy", b"b\t.npy", b"b\x7f.npy", b"b\x1b[31m.npy", b"b\xc3\xa9.npy",
        b"b\xff.npy", b"", b".npy", b"..npy", b"...npy", b".b.npy", b"-b.npy", b"b.NPY", b"b.npy/", b"b.npy ",
        b" b.npy", b"b.npy.", b"b/c.npy", b"b\\c.npy", b"spec.yaml/", b"manifest.json\x00",
        b"b..c.npy", b"b.pkl", b"data.pkl", b"b.npz", b"b.npy\x00",
    ])],
    ("name-too-long", _name(b"b" * 600 + b".npy"), LimitError, "exceeds the limit max_name_length", CD1),
    ("first-member-traversal", _name(b"../a.npy", 0), NotAModelPackError, "not a .mpk", None),
    ("first-member-pickle-dir", _name(b"archive/data.pkl", 0), NotAModelPackError, "torch.save", None),
    # ---- duplicates and case collisions
    ("duplicate-name", _name(b"a.npy"), FormatError, "appears twice", "member 'a.npy'"),
    ("case-collision", _name(b"A.npy"), FormatError, "appears twice", "member 'A.npy'"),
    ("duplicate-cd-entry", _zip(cd_order=[0, 1, 2, 2]), FormatError, "appears twice", "member 'manifest.json'"),
    ("missing-cd-entry", _zip(cd_order=[0, 2]), FormatError, "leaves a gap", "member 'manifest.json'"),
    ("cd-out-of-order", _zip(cd_order=[1, 0, 2]), FormatError, "leaves a gap", B),
    # ---- local header vs central directory: each field
    ("lfh-sig", _set("lfh", sig=0x04034B51), FormatError, "signature or name", B),
    ("lfh-name", _attr(lfh_name=b"c.npy"), FormatError, "signature or name", B),
    ("lfh-name-longer", _attr(lfh_name=b"bb.npy"), FormatError, "signature or name", B),
    ("lfh-version", _set("lfh", version=10), FormatError, "disagrees with the central directory", B),
    ("lfh-flags-descriptor", _set("lfh", flags=8), FormatError, "disagrees with the central directory", B),
    ("lfh-flags-encrypted", _set("lfh", flags=1), FormatError, "disagrees with the central directory", B),
    ("lfh-flags-utf8", _set("lfh", flags=0x800), FormatError, "disagrees with the central directory", B),
    ("lfh-method", _set("lfh", method=8), FormatError, "disagrees with the central directory", B),
    ("lfh-crc", _set("lfh", crc=0), FormatError, "disagrees with the central directory", B),
    ("lfh-both-sizes", _set("lfh", csize=10, usize=10), FormatError, "disagrees with the central directory", B),
    ("lfh-csize", _set("lfh", csize=10), FormatError, "compressed and uncompressed sizes differ", B),
    ("lfh-usize", _set("lfh", usize=10), FormatError, "compressed and uncompressed sizes differ", B),
    ("lfh-nlen-short", _set("lfh", nlen=4), FormatError, "signature or name", B),
    ("lfh-nlen-long", _set("lfh", nlen=7), FormatError, "signature or name", B),
    ("cd-sig", _set("cd", sig=0x02014B51), FormatError, "bad central directory signature", CD1),
    ("cd-version", _set("cd", version=45), FormatError, "disagrees with the central directory", B),
    ("cd-crc", _set("cd", crc=0), FormatError, "disagrees with the central directory", B),
    ("cd-both-sizes", _set("cd", csize=10, usize=10), FormatError, "disagrees with the central directory", B),
    ("cd-csize", _set("cd", csize=10), FormatError, "compressed and uncompressed sizes differ", B),
    ("cd-offset-forward", _set("cd", offset=1), FormatError, "overlaps", B),
    ("cd-nlen", _set("cd", nlen=3), FormatError, "is not allowed", CD1),
    ("cd-elen", _set("cd", elen=4), FormatError, "", ANY),
    ("cd-comment", _attr(comment=b"hi"), FormatError, "commented or multi-disk", B),
    ("cd-disk", _set("cd", disk=1), FormatError, "commented or multi-disk", B),
    # ---- compression, encryption, exotic methods (declared consistently in both headers)
    *[(f"flags-{f:#x}", _both(flags=f), FormatError, "encrypted or flagged", B) for f in (1, 8, 0x40, 0x800, 0x2000)],
    *[(f"method-{m}", _both(method=m), FormatError, "compressed", B) for m in (1, 6, 8, 9, 12, 14, 93, 95, 98, 99)],
    ("deflated-member", _deflated, FormatError, "compressed", B),
    # ---- overlap, gaps, prepended and trailing bytes, hidden archives
    ("full-overlap", _full_overlap, FormatError, "overlaps the previous one", B),
    ("quoted-overlap", _quoted_overlap, FormatError, "overlaps the previous one", B),
    ("gap-between-members", _attr(0, after=b"\0" * 64), FormatError, "leaves a gap", B),
    ("gap-before-cd", _attr(2, after=b"hidden"), FormatError, "unexplained bytes", "archive"),
    ("prepended-script", _zip(prefix=b"#!/bin/sh\nexec evil\n"), NotAModelPackError, "not a .mpk", None),
    ("prepended-shifted", _zip(prefix=b"MZ" + b"\0" * 62, shift=True), NotAModelPackError, "not a .mpk", None),
    ("prepended-fake-member", _prepend_fake_member, FormatError, "leaves a gap", "member 'a.npy'"),
    ("trailing-bytes", _zip(trailer=b"junk"), FormatError, "appended after the archive", "end record"),
    ("trailing-zip", _zip(trailer=mpk().bytes()), FormatError, "does not end at the end record", "end record"),
    ("archive-comment", _zip(comment=b"hello"), FormatError, "end-of-central-directory", "end record"),
    ("fake-end-in-comment", _hidden_archive_in_comment, FormatError, "unexplained bytes", "archive"),
    ("cd-tail-junk", _zip(cd_tail=b"\0" * 8), FormatError, "bytes after its last entry", "central directory"),
    # ---- end record fields
    ("eocd-disk", _set_eocd(disk=1), FormatError, "several disks or a comment", "end record"),
    ("eocd-cd-disk", _set_eocd(cd_disk=2), FormatError, "several disks or a comment", "end record"),
    ("eocd-counts-differ", _set_eocd(n_disk=2), FormatError, "several disks or a comment", "end record"),
    ("eocd-comment-length", _set_eocd(clen=5), FormatError, "several disks or a comment", "end record"),
    ("eocd-count-low", _set_eocd(n_disk=2, n_total=2), FormatError, "bytes after its last entry", "central directory"),
    ("eocd-count-high", _set_eocd(n_disk=4, n_total=4), FormatError, "does not fit 4 entries", "central directory"),
    ("eocd-count-zero", _set_eocd(n_disk=0, n_total=0), FormatError, "does not fit 0 entries", "central directory"),
    ("eocd-cd-size", _set_eocd(cd_size=1), FormatError, "does not end at the end record", "end record"),
    ("eocd-cd-offset", _set_eocd(cd_offset=0), FormatError, "does not end at the end record", "end record"),
    ("eocd-sig", _set_eocd(sig=0x06054B51), FormatError, "end-of-central-directory", "end record"),
    # ---- ZIP64 fields where the archive has none
    ("saturated-count-no-zip64", _set_eocd(n_disk=U16, n_total=U16), FormatError, "ZIP64", "zip64 end record"),
    ("saturated-cd-size-no-zip64", _set_eocd(cd_size=U32), FormatError, "ZIP64", "zip64 end record"),
    ("saturated-offset-no-zip64", _set_eocd(cd_offset=U32), FormatError, "ZIP64", "zip64 end record"),
    ("cd-saturated-size-no-extra", _both(csize=U32, usize=U32), FormatError, "ZIP64 values are missing", B),
    ("cd-saturated-offset-no-extra", _set("cd", offset=U32), FormatError, "ZIP64 values are missing", B),
    ("cd-zip64-extra-unneeded", _attr(cd_extra=struct.pack("<HHQQ", Z64_ID, 16, 1, 1)), FormatError,
     "unexpected extra field in the central directory", B),
    ("cd-unknown-extra", _attr(cd_extra=struct.pack("<HHI", 0x5455, 4, 0)), FormatError,
     "unexpected extra field in the central directory", B),
    ("cd-short-extra", _attr(cd_extra=b"\x01\x00"), FormatError, "corrupt extra field", B),
    ("lfh-unknown-extra", _attr(lfh_extra=struct.pack("<HHI", 0x5455, 4, 0)), FormatError,
     "unexpected extra field 0x5455", B),
    ("lfh-extra-truncated-header", _attr(lfh_extra=b"\x6d\x70\x00"), FormatError, "corrupt extra field", B),
    ("lfh-extra-overlong", _attr(lfh_extra=struct.pack("<HH", PAD_ID, 40) + b"\0" * 4), FormatError,
     "corrupt extra field", B),
    ("lfh-padding-not-zero", _attr(lfh_extra=struct.pack("<HH", PAD_ID, 4) + b"evil"), FormatError,
     "unexpected extra field 0x706d", B),
    ("lfh-zip64-unneeded", _attr(lfh_extra=struct.pack("<HHQQ", Z64_ID, 16, 1, 1)), FormatError,
     "unexpected extra field 0x0001", B),
    ("lfh-saturated-no-zip64", _attr(z64=True, lfh_extra=b""), FormatError, "ZIP64 sizes are missing", B),
    ("lfh-zip64-sizes-differ", _attr(z64=True, lfh_extra=struct.pack("<HHQQ", Z64_ID, 16, 1, 2)), FormatError,
     "ZIP64 sizes differ", B),
    ("lfh-two-zip64-fields", _two_zip64_fields, FormatError, "unexpected extra field 0x0001", B),
    # ---- huge declared sizes
    ("huge-size", _both(csize=U32 - 1, usize=U32 - 1), FormatError, "runs into the central directory", B),
    ("huge-size-zip64", _huge_size_zip64, FormatError, "runs into the central directory", B),
]


@pytest.mark.parametrize("mutate, cls, words, where", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_zip_structure_lie_is_refused(tmp_path: Path, mutate, cls, words, where) -> None:
    z = mpk()
    mutate(z)
    refused(write(tmp_path, z.bytes()), cls, words, where)


def _z64(**kw: object) -> Callable[[Zip], None]:
    def mutate(z: Zip) -> None:
        for k, v in kw.items():
            getattr(z, k).update(v)

    return mutate


Z64_CASES = [
    ("locator-offset", _z64(z64loc={"offset": 1}), "ZIP64 locator is missing or inconsistent"),
    ("locator-offset-past-eof", _z64(z64loc={"offset": 1 << 60}), "ZIP64 locator is missing or inconsistent"),
    ("locator-disk", _z64(z64loc={"disk": 1}), "ZIP64 locator is missing or inconsistent"),
    ("locator-disks", _z64(z64loc={"disks": 2}), "ZIP64 locator is missing or inconsistent"),
    ("locator-sig", _z64(z64loc={"sig": 0}), "ZIP64 locator is missing or inconsistent"),
    ("record-sig", _z64(z64rec={"sig": 0}), "ZIP64 end record is malformed"),
    ("record-size", _z64(z64rec={"size": 45}), "ZIP64 end record is malformed"),
    ("record-disk", _z64(z64rec={"disk": 1}), "ZIP64 end record is malformed"),
    ("record-counts-differ", _z64(z64rec={"n_disk": 2}), "ZIP64 end record is malformed"),
    ("record-vs-end-count", _z64(eocd={"n_disk": 2, "n_total": 2}), "disagrees with the end record"),
    ("record-vs-end-size", _z64(eocd={"cd_size": 5}), "disagrees with the end record"),
    ("record-cd-size", _z64(z64rec={"cd_size": 1}), "does not end at the ZIP64 end record"),
    ("record-cd-offset", _z64(z64rec={"cd_offset": 0}), "does not end at the ZIP64 end record"),
    ("record-count-high", _z64(z64rec={"n_disk": 4, "n_total": 4}), "ends early"),
    ("record-count-low", _z64(z64rec={"n_disk": 2, "n_total": 2}), "bytes after its last entry"),
]


@pytest.mark.parametrize("mutate, words", [c[1:] for c in Z64_CASES], ids=[c[0] for c in Z64_CASES])
def test_zip64_inconsistency_is_refused(tmp_path: Path, mutate, words) -> None:
    z = mpk(zip64=True)
    mutate(z)
    refused(write(tmp_path, z.bytes()), FormatError, words)


def test_zip64_pack_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, mpk(zip64=True).bytes())
    with guarded(tmp_path):
        back = api.load(path, verify=True)
    assert tree_equal(back, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3])})


def test_zip64_member_count_is_capped_before_reading(tmp_path: Path) -> None:
    z = mpk(zip64=True)
    z.z64rec.update(n_disk=1 << 40, n_total=1 << 40)
    err = refused(write(tmp_path, z.bytes()), LimitError, "exceeds the limit max_members")
    assert err.where == "central directory"


@pytest.mark.parametrize("zip64", [False, True], ids=["plain", "zip64"])
def test_truncation_at_every_structure_boundary(tmp_path: Path, zip64: bool) -> None:
    z = mpk(zip64=zip64)
    data = z.bytes()
    cuts = sorted({n for m in z.marks.values() for n in (m - 1, m, m + 1) if 0 <= n < len(data)})
    assert len(cuts) > 40
    for n in cuts:
        refused(write(tmp_path, data[:n]), FormatError)


def test_every_single_byte_truncation_is_refused(tmp_path: Path) -> None:
    data = mpk().bytes()
    path = tmp_path / "cut.mpk"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with guarded(tmp_path), pytest.raises(FormatError):
            api.Pack(path)


@pytest.mark.parametrize("mutate", [
    _set("lfh", time=0x1234, date=0x5678), _set("cd", time=1, date=2), _set("cd", made=0x0314),
    _set("cd", eattr=0xA1FF << 16), _set("cd", iattr=1),
], ids=["lfh-time", "cd-time", "made-by-unix", "symlink-attribute", "text-attribute"])
def test_fields_readers_never_use_are_harmless(tmp_path: Path, mutate) -> None:
    """Times, 'made by' and attributes never reach a decision: the file loads exactly (no extraction)."""
    z = mpk()
    mutate(z)
    path = write(tmp_path, z.bytes())
    with guarded(tmp_path):
        back = api.load(path, verify=True)
    assert tree_equal(back, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3])})


def test_crafted_pack_is_byte_identical_to_save(tmp_path: Path) -> None:
    """The hostile files above are one lie away from what modelpack.save writes."""
    from modelpack import save

    from .mpkcraft import default_tensors

    save(default_tensors(), tmp_path / "real.mpk")
    assert (tmp_path / "real.mpk").read_bytes() == mpk().bytes()


def test_zip_without_manifest(tmp_path: Path) -> None:
    z = mpk()
    z.e.pop()
    refused(write(tmp_path, z.bytes()), NotAModelPackError, "without a manifest.json")


def test_manifest_not_last(tmp_path: Path) -> None:
    z = mpk()
    z.e.insert(0, z.e.pop())
    refused(write(tmp_path, z.bytes()), FormatError, "must be the last member", "archive")


def test_stray_member(tmp_path: Path) -> None:
    z = mpk()
    z.e.insert(2, Entry(b"c.npy", b"\x93NUMPY", align=True))
    refused(write(tmp_path, z.bytes()), FormatError, "not listed in the manifest", "member 'c.npy'")


@pytest.mark.parametrize("data, words", [
    (b"", "an empty file"),
    (b"PK", "not a .mpk"),
    (EOCD.pack(0x06054B50, 0, 0, 0, 0, 0, 0, 0), "not a .mpk"),
    (b"PK\x03\x04" + b"\0" * 60, "not a .mpk"),
    (CDH.pack(*([0] * 17)), "not a .mpk"),
], ids=["empty", "two-bytes", "empty-zip", "header-only", "zeros"])
def test_tiny_files(tmp_path: Path, data: bytes, words: str) -> None:
    refused(write(tmp_path, data), NotAModelPackError, words)


# --------------------------------------------------------------------------- non-regular files


@pytest.mark.budget(10)
def test_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mpk")
    refused(tmp_path / "pipe.mpk", NotAModelPackError, "not a regular file")


def test_folder(tmp_path: Path) -> None:
    (tmp_path / "dir.mpk").mkdir()
    refused(tmp_path / "dir.mpk", NotAModelPackError, "it is a folder")


def test_unix_socket(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.mpk"))
        refused(tmp_path / "s.mpk", NotAModelPackError, "not a regular file")
    finally:
        sock.close()


@pytest.mark.budget(10)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_device_via_symlink(tmp_path: Path, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} is absent")
    (tmp_path / "dev.mpk").symlink_to(device)
    refused(tmp_path / "dev.mpk", NotAModelPackError, "not a regular file")


@pytest.mark.budget(10)
def test_device_path_is_refused_without_being_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(os.fspath(p)), real_open(p, *a, **k))[1])
    for reader in READERS.values():
        with guarded("/dev"), pytest.raises(NotAModelPackError, match="not a regular file"):
            reader(Path("/dev/null"))
    assert "/dev/null" not in opened


def test_local_name_longer_than_central_name(tmp_path: Path) -> None:
    """CD says b.npy, the local header 'b.npy/../../evil.npy': CPython refuses, streaming readers see the
    long name. Everything else is consistent (the manifest offset follows the shifted data)."""
    from .mpkcraft import npy_header

    long_name = b"b.npy/../../evil.npy"
    probe = mpk()
    probe.e[1].lfh_name = long_name
    probe.bytes()
    offset = probe.marks["data1"] + len(npy_header("<i8", (3,)))
    z = mpk(manifest=lambda m: m["tensors"][1].update(offset=offset))
    z.e[1].lfh_name = long_name
    refused(write(tmp_path, z.bytes()), FormatError, "signature or name", B)
