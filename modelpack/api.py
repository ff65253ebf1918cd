"""User verbs for tensor trees: save, load, open, verify.

``save`` writes a .mpk atomically (modelpack._fs) in one pass over the tensor
bytes; ``open`` parses and checks the whole structure once (modelpack.container
and modelpack.manifest), after which tensors are handed out as copy-on-write
views of one memory map, or read into fresh memory with ``mmap=False``. Every
other entry point (load_model, validate of a .mpk, inspect, verify, restore)
goes through :class:`Pack`, so a file cannot pass one and trick another.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import _fs, limits, manifest, tree
from ._filemap import map_copy_on_write
from .codec import DType, dtype_by_name, npy_header, numpy_payload, numpy_view
from .container import Member, ZipWriter, crc32, pread_exact, read_members
from .errors import (
    FormatError,
    IntegrityError,
    LimitError,
    MissingDependencyError,
    ModelPackError,
    NotAModelPackError,
    UnsupportedObjectError,
)

__all__ = ["save", "load", "open", "verify", "Pack", "read_spec_text", "write_pack"]

_READ_CHUNK = 16 << 20


# --------------------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar that appears only after ~1 s, only on a terminal unless forced."""

    def __init__(self, total: int, desc: str, enabled: bool | None) -> None:
        self._bar = None
        show = enabled if enabled is not None else sys.stderr.isatty()
        if show and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, delay=1.0, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------- saving


def _payload(leaf: tree.Leaf) -> tuple[DType, tuple[int, ...], memoryview]:
    where = leaf.where or leaf.name
    if leaf.kind == "torch":
        from .torch.tensors import torch_payload

        return torch_payload(leaf.value, where=where)
    return numpy_payload(leaf.value, where=where)


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UnsupportedObjectError(f"metadata must map str to str; got {k!r}: {type(v).__name__}")
    return meta


def write_pack(
    path: str | os.PathLike[str],
    tree_json: Any,
    leaves: list[tree.Leaf],
    *,
    metadata: Mapping[str, str] | None = None,
    spec_text: str | None = None,
    progress: bool | None = None,
    force_zip64: bool = False,
) -> None:
    """Write a .mpk atomically: optional spec, tensor members, then the manifest.

    What the reader would refuse under the limits in force (see
    modelpack.limits) is refused here first, with the same checks, so every
    file written loads; tensor bytes are written only after those checks.
    """
    meta = _check_metadata(metadata)
    spec = None if spec_text is None else spec_text.encode("utf-8")
    payloads = [(leaf, *_payload(leaf)) for leaf in leaves]  # refuses unsavable kinds with their path first
    with _limits_at_save():
        manifest.check_plan(tree_json, [(leaf.name, shape) for leaf, _, shape, _ in payloads],
                            spec_size=None if spec is None else len(spec))
    bar = _Progress(sum(p[3].nbytes for p in payloads), "saving", progress)
    try:
        with _fs.atomic_write(path) as fd:
            zw = ZipWriter(fd, force_zip64=force_zip64)
            if spec is not None:
                zw.add(manifest.SPEC, spec)
            entries = [_write_tensor(zw, leaf, row, shape, data, bar) for leaf, row, shape, data in payloads]
            body = {
                "format": manifest.FORMAT,
                "version": manifest.VERSION,
                "metadata": meta,
                "tensors": entries,
                "tree": tree_json,
            }
            blob = manifest.dumps(body)
            with _limits_at_save():
                manifest.check_member_size(manifest.MANIFEST, len(blob))
                manifest.check_containers(blob)
            zw.add(manifest.MANIFEST, blob)
            zw.finish()
    finally:
        bar.close()


_TREE_WHERE = f"{manifest.MANIFEST}.tree"


@contextlib.contextmanager
def _limits_at_save() -> Iterator[None]:
    """Run the reader's limit checks as a writer: errors say why and name the object's path."""
    try:
        with limits.saving():
            yield
    except LimitError as e:
        if e.where and e.where.startswith(_TREE_WHERE):  # the reader's tree location is the saved object's path
            raise LimitError(e.message, where="obj" + e.where[len(_TREE_WHERE):]) from e
        raise


def _write_tensor(zw: ZipWriter, leaf: tree.Leaf, row: DType, shape: tuple[int, ...],
                  data: memoryview, bar: _Progress) -> dict[str, Any]:
    head = npy_header(row.descr, shape)
    member = zw.add(f"{leaf.name}.npy", head, data, align=True, progress=bar.update)
    return {
        "name": leaf.name,
        "member": member.name,
        "dtype": row.name,
        "shape": list(shape),
        "kind": leaf.kind,
        "offset": member.data_offset + len(head),
        "nbytes": data.nbytes,
        "crc32": f"{member.crc:08x}",
    }


def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> None:
    """Save a tensor, array or nested dict/list/tuple of them and plain scalars.

    No pickle: the structure goes to a JSON manifest and each tensor to an
    aligned ``.npy`` member. The write is atomic: a crash leaves the old file.
    """
    with _limits_at_save():
        tree_json, leaves = tree.encode(obj)
    write_pack(path, tree_json, leaves, metadata=metadata, progress=progress)


# --------------------------------------------------------------------------- reading


def _open_fd(path: str) -> int:
    # Refuse pipes, sockets and devices before opening them: a socket cannot be opened at all,
    # and opening a device can have side effects (a tape rewinds, a watchdog arms).
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise NotAModelPackError(f"not a .mpk file: it is {what}", source=path)
    # O_NONBLOCK: a FIFO swapped in after the stat must not wait for a writer; fstat rejects it next.
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))


class Pack(Mapping[str, Any]):
    """An open, fully checked .mpk: manifest, metadata, spec and lazy tensors.

    A read-only mapping from tensor name to tensor (``pack[name]``, ``get``,
    ``items``, ``in``, ``len``). Construction reads only the zip directory,
    local headers, the manifest and the spec; tensors are read (or mapped) one
    by one when asked for. The file is closed by ``close()``, by ``with``, or
    when the pack is garbage collected; tensors handed out stay valid.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = _open_fd(self.path)
        self._fd: int | None = fd
        self._closer = weakref.finalize(self, os.close, fd)  # a pack dropped without close() frees its fd
        self._map: np.ndarray | None = None
        try:
            self._parse()
        except ModelPackError as e:
            self.close()
            raise e.with_context(source=self.path)
        except BaseException:
            self.close()
            raise

    # -- structure
    def _parse(self) -> None:
        self._size = os.fstat(self.fd).st_size  # tensor() refuses to map or read if the file shrinks
        members = read_members(self.fd)
        self.members: dict[str, Member] = {m.name: m for m in members}
        if manifest.MANIFEST not in self.members:
            raise NotAModelPackError("not a .mpk file: a zip archive without a manifest.json")
        last = members[-1]
        if last.name != manifest.MANIFEST:
            raise FormatError(f"{manifest.MANIFEST!r} must be the last member", where="archive")
        manifest.check_member_size(manifest.MANIFEST, last.size)
        self.manifest: dict[str, Any] = manifest.parse(self._read_member(last))
        self._tensor_members = manifest.check(self.manifest, members)
        self.entries: dict[str, dict[str, Any]] = {e["name"]: e for e in self.manifest["tensors"]}
        for name, entry in self.entries.items():
            self._check_npy_header(entry, self._tensor_members[name])
        self.spec_text: str | None = self._read_spec()

    def _read_member(self, m: Member) -> bytes:
        data = pread_exact(self.fd, m.size, m.data_offset, where=f"member {m.name!r}")
        if crc32(data) != m.crc:
            raise IntegrityError("CRC-32 mismatch: the member is damaged", where=f"member {m.name!r}")
        return data

    def _read_spec(self) -> str | None:
        m = self.members.get(manifest.SPEC)
        if m is None:
            return None
        manifest.check_member_size(manifest.SPEC, m.size)
        try:
            return self._read_member(m).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("spec is not valid UTF-8", where=manifest.SPEC) from e

    def _check_npy_header(self, entry: dict[str, Any], m: Member) -> None:
        row = dtype_by_name(entry["dtype"])
        if entry["kind"] != "torch" and not row.numpy_native:
            raise FormatError(f"kind {entry['kind']!r} cannot hold {row.name}", where=f"tensor {entry['name']!r}")
        expected = npy_header(row.descr, entry["shape"])
        got = m.prefix[: len(expected)]
        if len(got) < len(expected):
            got = pread_exact(self.fd, len(expected), m.data_offset)
        if got != expected:
            raise FormatError("the .npy header does not match the manifest", where=f"tensor {entry['name']!r}")

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("the pack is closed")
        return self._fd

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.manifest["metadata"])

    def keys(self) -> list[str]:  # type: ignore[override]  # a list, as before Pack was a Mapping
        """Tensor names, in file order."""
        return list(self.entries)

    # identity, not Mapping's value comparison (which would read every tensor)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __getitem__(self, name: str) -> Any:
        return self.tensor(name)

    # -- tensors
    def tensor(self, name: str, *, mmap: bool = True, map_location: Any = None) -> Any:
        """One tensor by name, as saved (torch, numpy array or numpy scalar)."""
        entry = self.entries.get(name)
        if entry is None:
            raise KeyError(f"no tensor {name!r} in {self.path}; it has {len(self.entries)} tensors")
        row = dtype_by_name(entry["dtype"])
        arr = self.array(name, mmap=mmap)
        if entry["kind"] == "numpy":
            return arr
        if entry["kind"] == "numpy-scalar":
            return arr[()]
        try:
            from .torch.tensors import to_torch
        except ImportError as e:
            raise MissingDependencyError(
                "this file holds torch tensors; install torch (pip install 'modelpack[torch]')",
                where=name,
            ) from e
        t = to_torch(arr, row)
        return t if map_location is None else t.to(map_location)

    def array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        """A tensor's stored bytes as numpy (raw unsigned bits for dtypes numpy lacks); no torch needed."""
        entry = self.entries[name]
        row = dtype_by_name(entry["dtype"])
        return self._mapped(entry, row) if mmap else self._read(entry, row)

    def _check_size(self, name: str) -> None:
        """Touching mapped bytes past EOF is SIGBUS, not an exception: re-check before each tensor."""
        if os.fstat(self.fd).st_size < self._size:
            raise FormatError(
                "the file shrank after it was opened (truncated or being rewritten); reopen it",
                where=f"tensor {name!r}",
                source=self.path,
            )

    def _mapped(self, entry: dict[str, Any], row: DType) -> np.ndarray:
        self._check_size(entry["name"])
        if self._map is None:  # holds no descriptor: loaded tensors outlive the pack at no fd cost
            self._map = map_copy_on_write(self.fd, self._size)
        return numpy_view(self._map, entry["offset"], row, entry["shape"])

    def _read(self, entry: dict[str, Any], row: DType) -> np.ndarray:
        self._check_size(entry["name"])
        arr = np.empty(entry["shape"], dtype=row.storage_numpy)
        view = memoryview(arr.reshape(-1).view(np.uint8))
        pos, offset = 0, entry["offset"]
        while pos < view.nbytes:
            n = os.preadv(self.fd, [view[pos : pos + _READ_CHUNK]], offset + pos)
            if n <= 0:
                raise FormatError("file ends early (truncated while open?)", where=f"tensor {entry['name']!r}")
            pos += n
        return arr

    def load(self, *, mmap: bool = True, map_location: Any = None) -> Any:
        """The whole saved object; a tensor referenced twice comes back as one object."""
        cache: dict[str, Any] = {}

        def get(name: str) -> Any:
            if name not in cache:
                cache[name] = self.tensor(name, mmap=mmap, map_location=map_location)
            return cache[name]

        return tree.decode(self.manifest["tree"], get)

    def verify(self, *, progress: bool | None = None) -> None:
        """Recompute every member's CRC-32 (tensor data included); raise on the first mismatch."""
        tensor_of = {m.name: n for n, m in self._tensor_members.items()}
        bar = _Progress(sum(m.size for m in self.members.values()), "verifying", progress)
        buf = bytearray(min(_READ_CHUNK, max((m.size for m in self.members.values()), default=0)))
        try:
            for m in self.members.values():
                crc = _crc_range(self.fd, m.data_offset, m.size, buf, bar)
                if crc != m.crc:
                    what = f"tensor {tensor_of[m.name]!r}" if m.name in tensor_of else f"member {m.name!r}"
                    raise IntegrityError(
                        "checksum mismatch: the data is damaged (bit flip or tampering)", where=what, source=self.path
                    )
        finally:
            bar.close()

    def close(self) -> None:
        """Release the file; tensors already handed out stay valid (they keep the map)."""
        self._map = None
        self._fd = None
        self._closer()

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _crc_range(fd: int, offset: int, size: int, buf: bytearray, bar: _Progress) -> int:
    crc, pos, view = 0, 0, memoryview(buf)
    while pos < size:
        n = os.preadv(fd, [view[: min(len(buf), size - pos)]], offset + pos)
        if n <= 0:
            raise FormatError("file ends early (truncated while open?)")
        crc = crc32(view[:n], crc)
        pos += n
        bar.update(n)
    return crc


def open(path: str | os.PathLike[str]) -> Pack:  # noqa: A001 - mirrors builtins.open on purpose
    """Open a .mpk for lazy access: ``with modelpack.open(p) as pack: pack["w"]``."""
    return Pack(path)


def load(
    path: str | os.PathLike[str],
    *,
    mmap: bool = True,
    map_location: Any = None,
    verify: bool = False,
    progress: bool | None = None,
) -> Any:
    """Load what :func:`save` wrote.

    ``mmap=True`` returns copy-on-write views of the file (no copy, writable,
    the file never changes, no file descriptor kept open); ``mmap=False``
    reads into fresh memory.
    ``verify=True`` checks every checksum first. ``map_location`` moves torch
    tensors to a device (e.g. ``"cuda"``).
    """
    with Pack(path) as pack:
        if verify:
            pack.verify(progress=progress)
        return pack.load(mmap=mmap, map_location=map_location)


def verify(path: str | os.PathLike[str], *, progress: bool | None = None) -> None:
    """Check structure, every checksum and the spec of a .mpk; raise a ModelPackError on damage.

    ``modelpack.verify`` (modelpack.checks) also checks the weights against the spec.
    """
    with Pack(path) as pack:
        pack.verify(progress=progress)
        checked_spec(pack)


def checked_spec(pack: Pack) -> dict[str, Any] | None:
    """The pack's spec, validated (None for a file of tensors only); a SpecError names ``file:spec.yaml``."""
    if pack.spec_text is None:
        return None
    from .spec import validate as validate_spec

    # bytes, never str: a one-line str is a *path* to validate, and the text comes from the file
    return validate_spec(pack.spec_text.encode("utf-8"), source=f"{pack.path}:spec.yaml")


def read_spec_text(path: str | os.PathLike[str]) -> str | None:
    """The spec.yaml text of a .mpk after the full structure check, or None."""
    with Pack(path) as pack:
        return pack.spec_text
