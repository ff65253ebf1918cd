"""User verbs for tensor trees: save, load, open, verify.

``save`` writes a .mpk atomically (modelpack._fs) in one pass over the tensor
bytes; ``open`` parses and checks the whole structure once (modelpack.container
and modelpack.manifest), after which tensors are handed out as copy-on-write
views of one memory map, or read into fresh memory with ``mmap=False``. Every
other entry point (load_model, validate of a .mpk, inspect, verify, restore)
goes through :class:`Pack`, so a file cannot pass one and trick another.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from . import manifest, split, tree
from ._gc import paused_gc
from ._source import Source, open_source
from ._write import Progress, limits_at_save, stream_pack, write_pack
from .codec import DTYPES, DType, dtype_by_name, npy_header, numpy_view
from ._zipwrite import checksums
from .container import Member, check_local_header, crc32, pread_exact, read_members
from .errors import (
    FormatError,
    IntegrityError,
    MissingDependencyError,
    ModelPackError,
    NotAModelPackError,
)

__all__ = ["save", "save_bytes", "load", "load_bytes", "open", "verify", "Pack", "read_spec_text", "write_pack",
           "stream_pack"]

_READ_CHUNK = 16 << 20


# --------------------------------------------------------------------------- saving


def save(
    obj: Any,
    path: Any,
    *,
    metadata: Mapping[str, str] | None = None,
    progress: bool | None = None,
    max_shard_size: int | str | None = None,
    sha256: bool = False,
) -> None:
    """Save a tensor, array or nested dict/list/tuple of them and plain scalars.

    No pickle: the structure goes to a JSON manifest and each tensor to an
    aligned ``.npy`` member. ``path`` is a path, written atomically (a crash
    leaves the old file), or a writable binary file object. With
    ``max_shard_size`` (``"2GB"``, ``"1GiB"`` or bytes) a bigger pack is split
    into ``<stem>-00001-of-0000N.mpk`` shards beside an index at ``path``.
    Arrays of other frameworks (JAX, TensorFlow, CuPy...) are taken through
    ``__dlpack__`` or the numpy array interface and load as numpy.
    ``sha256=True`` records each tensor's SHA-256 for ``verify`` (opt-in: it
    costs time, see benchmarks/convert.py).
    """
    with paused_gc():
        with limits_at_save():
            tree_json, leaves = tree.encode(obj)
        write_pack(path, tree_json, leaves, metadata=metadata, progress=progress, max_shard_size=max_shard_size,
                   sha256=sha256)


def save_bytes(obj: Any, *, metadata: Mapping[str, str] | None = None) -> bytes:
    """What :func:`save` would write, as bytes (like ``safetensors.torch.save``)."""
    buf = io.BytesIO()
    save(obj, buf, metadata=metadata)
    return buf.getvalue()


# --------------------------------------------------------------------------- reading


class Pack(Mapping[str, Any]):
    """An open, fully checked .mpk (or split pack): manifest, metadata, spec and lazy tensors.

    A read-only mapping from tensor name to tensor (``pack[name]``, ``get``,
    ``items``, ``in``, ``len``). ``source`` is a path, a URL (``http(s)://``,
    or any fsspec URL), bytes, or a readable seekable binary file object.
    Construction reads only the zip directory, local headers, the manifest and
    the spec; tensors are read (or mapped) one by one when asked for. A split
    pack's index lists every tensor's name and shard, so a shard is opened, and
    checked against the index, when one of its tensors (or ``entries``) is
    first asked for; ``verify`` checks every shard. A remote source checks a
    member's local header when that member is first read. The pack is closed by ``close()``, by
    ``with``, or when garbage collected; tensors handed out stay valid.
    """

    def __init__(self, source: Any) -> None:
        self.source: Source = open_source(source)
        self.path = self.source.name
        self._map: np.ndarray | None = None
        self._rows: list[dict[str, Any]] = []  # a split index's shard rows, and each shard once opened
        self._opened: list[Pack | None] = []
        self._where_is: dict[str, int] = {}  # a split index's tensor name -> its row
        self._joined = True  # every shard's entries are in self._entries
        self._closed = False
        self._opening = threading.Lock()  # two threads first using one shard open it once
        self._header_checked: set[str] = set()
        try:
            with paused_gc():
                self._parse()
        except ModelPackError as e:
            self.close()
            raise e.with_context(source=self.path)
        except BaseException:
            self.close()
            raise

    # -- structure
    def _parse(self) -> None:
        self._size = self.source.size  # tensor() refuses to map or read if the file shrinks
        members = read_members(self.source)
        self.members: dict[str, Member] = {m.name: m for m in members}
        if manifest.MANIFEST not in self.members:
            raise NotAModelPackError("not a .mpk file: a zip archive without a manifest.json")
        last = members[-1]
        if last.name != manifest.MANIFEST:
            raise FormatError(f"{manifest.MANIFEST!r} must be the last member", where="archive")
        manifest.check_member_size(manifest.MANIFEST, last.size)
        blob = self._read_member(last)
        self.manifest_sha256 = split.manifest_digest(blob)
        self.manifest: dict[str, Any] = manifest.parse(blob)
        self._tensor_members = manifest.check(self.manifest, members)
        self._entries: dict[str, dict[str, Any]] = {e["name"]: e for e in self.manifest["tensors"]}
        self._names: Mapping[str, Any] = self._entries  # every tensor name, in file order
        if not self.source.lazy_headers:
            members_of = self._tensor_members
            for name, entry in self._entries.items():
                m = members_of[name]
                row = DTYPES[entry["dtype"]]  # manifest.check proved the name is in the table
                head = npy_header(row.descr, entry["shape"])
                # the common case without a call; _check_npy_header decides (and names) anything else
                if not (m.prefix.startswith(head) and (row.numpy_native or entry["kind"] == "torch")):
                    self._check_npy_header(entry, m)
        self.spec_text: str | None = self._read_spec()
        if split.SHARDS_KEY in self.manifest:
            self._join_shards()

    def _join_shards(self) -> None:
        if self.manifest["tensors"]:
            raise FormatError("the index of a split pack holds no tensors of its own", where="manifest.json.tensors")
        self._rows = split.check_shards(self.manifest[split.SHARDS_KEY])
        self._opened = [None] * len(self._rows)
        self.source.hold_folder()
        where_is = split.tensor_shards(self._rows)
        if where_is is None:  # an index that lists no names: every shard opened now to learn them
            where_is = {}
            for i, row in enumerate(self._rows):
                for name in self._shard(i)._entries:
                    if name in where_is:
                        raise FormatError(f"tensor {name!r} is in two shards", where=f"shard {row['file']!r}")
                    where_is[name] = i
        self._where_is, self._names, self._joined = where_is, where_is, False
        manifest.check_tree(self.manifest["tree"], where_is)

    def _shard(self, i: int) -> "Pack":
        """Shard ``i``, opened and bound to its row at its first use (a clear error naming it otherwise)."""
        shard = self._opened[i]
        if shard is not None:
            return shard
        with self._opening:
            shard = self._opened[i]
            if shard is None:
                if self._closed:
                    raise ValueError(f"{self.path} is closed")
                try:
                    shard = split.open_shard(self, self._rows[i], Pack)
                except ModelPackError as e:
                    raise e.with_context(source=self.path)
                self._opened[i] = shard
        return shard

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        """Every tensor's manifest entry by name (a split pack's: each shard opened, once, to read them)."""
        if not self._joined:
            for i in range(len(self._rows)):
                self._entries.update(self._shard(i)._entries)
            self._joined = True
        return self._entries

    @property
    def shards(self) -> list["Pack"]:
        """A split pack's shards, every one opened and checked; ``[]`` for a single file."""
        return [self._shard(i) for i in range(len(self._rows))]

    def _member_bytes(self, m: Member, size: int) -> bytes:
        """The first ``size`` bytes of a member's data; a lazily placed member's header is checked first."""
        if self.source.lazy_headers and m.name not in self._header_checked:
            prefix = check_local_header(self.source, m)
            self._header_checked.add(m.name)
            if size <= len(prefix):
                return prefix[:size]
        return pread_exact(self.source, size, m.data_offset, where=f"member {m.name!r}")

    def _read_member(self, m: Member) -> bytes:
        data = self._member_bytes(m, m.size)
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
            got = self._member_bytes(m, len(expected))
        if got != expected:
            raise FormatError("the .npy header does not match the manifest", where=f"tensor {entry['name']!r}")

    def _first_read(self, name: str) -> None:
        """What a remote source checks when a tensor is first read: its local header and .npy header."""
        m = self._tensor_members[name]
        if self.source.lazy_headers and m.name not in self._header_checked:
            self.source.prefetch(m.header_offset, m.data_offset + m.size)  # header and data: one request
            try:
                self._check_npy_header(self._entries[name], m)
            except ModelPackError as e:
                raise e.with_context(source=self.path)

    @property
    def fd(self) -> int:
        """The open descriptor of a local file (other sources have none)."""
        fd = getattr(self.source, "fd", None)
        if fd is None:
            raise ValueError(f"{self.path} is not a local file; it has no file descriptor")
        return fd  # type: ignore[no-any-return]

    @property
    def file_bytes(self) -> int:
        """Bytes in the file, and in every shard of a split pack."""
        return self._size + sum(s.file_bytes for s in self.shards)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.manifest["metadata"])

    def keys(self) -> list[str]:  # type: ignore[override]  # a list, as before Pack was a Mapping
        """Tensor names, in file order (a split pack's from its index: no shard opened)."""
        return list(self._names)

    # identity, not Mapping's value comparison (which would read every tensor)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __getitem__(self, name: str) -> Any:
        return self.tensor(name)

    # -- tensors
    def tensor(self, name: str, *, mmap: bool = True, map_location: Any = None, dtype: Any = None,
               framework: str | None = None) -> Any:
        """One tensor by name, as saved (torch, numpy array or numpy scalar), or as ``framework`` asks.

        ``dtype`` casts a floating torch tensor (never an integer or bool one, nor
        a numpy array); ``"auto"`` or None keeps the file's dtype.
        ``map_location`` moves a torch tensor.
        """
        if name in self._where_is:
            return self._shard(self._where_is[name]).tensor(name, mmap=mmap, map_location=map_location, dtype=dtype,
                                                            framework=framework)
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"no tensor {name!r} in {self.path}; it has {len(self._names)} tensors")
        row = dtype_by_name(entry["dtype"])
        arr = self.array(name, mmap=mmap)
        want = framework or ("torch" if entry["kind"] == "torch" else "numpy")
        if want not in _FRAMEWORKS:
            raise ValueError(f"framework must be one of {list(_FRAMEWORKS)} or None, not {framework!r}")
        if want == "numpy":  # numpy arrays keep their dtype and stay on the host
            arr = arr if row.numpy_native else _ml_dtypes_view(arr, row, name)
            return arr[()] if entry["kind"] == "numpy-scalar" and framework is None else arr
        t = _torch_converter(name)(arr, row)
        if dtype in (None, "auto") and map_location is None:
            return t
        from .torch.placement import place

        return place(t, dtype=dtype, device=map_location)

    def array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        """A tensor's stored bytes as numpy (raw unsigned bits for dtypes numpy lacks); no torch needed."""
        if name in self._where_is:
            return self._shard(self._where_is[name]).array(name, mmap=mmap)
        entry = self._entries[name]
        row = dtype_by_name(entry["dtype"])
        self._first_read(name)
        mapped = mmap and self._map_source()
        return self._mapped(entry, row) if mapped else self._read(entry, row)

    def _map_source(self) -> bool:
        if self._map is None:  # holds no descriptor: loaded tensors outlive the pack at no fd cost
            self._map = self.source.map()
        return self._map is not None

    def _check_size(self, name: str) -> None:
        """Touching mapped bytes past EOF is SIGBUS, not an exception: re-check before each tensor."""
        if self.source.current_size() < self._size:
            raise FormatError(
                "the file shrank after it was opened (truncated or being rewritten); reopen it",
                where=f"tensor {name!r}",
                source=self.path,
            )

    def _mapped(self, entry: dict[str, Any], row: DType) -> np.ndarray:
        self._check_size(entry["name"])
        assert self._map is not None
        return numpy_view(self._map, entry["offset"], row, entry["shape"])

    def _read(self, entry: dict[str, Any], row: DType) -> np.ndarray:
        arr = np.empty(entry["shape"], dtype=row.storage_numpy)
        self._read_bytes(entry, memoryview(arr.reshape(-1).view(np.uint8)))
        return arr

    def read_into(self, name: str, out: memoryview) -> None:
        """Read a tensor's stored bytes (C order) straight into ``out``, which must be exactly that long."""
        if name in self._where_is:
            return self._shard(self._where_is[name]).read_into(name, out)
        entry = self._entries[name]
        out = out.cast("B")
        if out.nbytes != entry["nbytes"]:
            raise ValueError(f"tensor {name!r} has {entry['nbytes']} bytes, the buffer {out.nbytes}")
        self._read_bytes(entry, out)

    def _read_bytes(self, entry: dict[str, Any], view: memoryview) -> None:
        self._check_size(entry["name"])
        pos, offset = 0, entry["offset"]
        while pos < view.nbytes:
            n = self.source.readinto(view[pos : pos + _READ_CHUNK], offset + pos)
            if n <= 0:
                raise FormatError("file ends early (truncated while open?)", where=f"tensor {entry['name']!r}")
            pos += n

    def load(self, *, mmap: bool = True, map_location: Any = None, dtype: Any = None,
             device_map: Mapping[str, Any] | None = None, framework: str | None = None) -> Any:
        """The whole saved object; a tensor referenced twice comes back as one object.

        Tensors are converted one at a time (``dtype``) and placed by
        ``device_map`` (longest matching name prefix) or ``map_location``.
        """
        if dtype in (None, "auto") and map_location is None and not device_map and framework is None:
            with paused_gc():
                return tree.decode(self.manifest["tree"], self._all(mmap).__getitem__)
        cache: dict[str, Any] = {}

        def get(name: str) -> Any:
            if name not in cache:
                where = device_for(name, device_map) if device_map else map_location
                cache[name] = self.tensor(name, mmap=mmap, map_location=where, dtype=dtype, framework=framework)
            return cache[name]

        result = tree.decode(self.manifest["tree"], get)
        if cache and (map_location is not None or device_map):
            from .torch.placement import finish

            finish()
        return result

    def select(self, keys: Iterable[str], *, mmap: bool = True, map_location: Any = None, dtype: Any = None,
               device_map: Mapping[str, Any] | None = None, framework: str | None = None) -> dict[str, Any]:
        """``{name: tensor}`` for the tensors named (see :meth:`tensor`); unknown names are a KeyError."""
        names = [keys] if isinstance(keys, str) else list(keys)
        missing = [n for n in names if n not in self._names]
        if missing:
            raise KeyError(f"no tensor {missing[0]!r} in {self.path}; it has {len(self._names)} tensors, "
                           f"e.g. {', '.join(list(self._names)[:5])}")
        out = {}
        for name in names:
            where = device_for(name, device_map) if device_map else map_location
            out[name] = self.tensor(name, mmap=mmap, map_location=where, dtype=dtype, framework=framework)
        if map_location is not None or device_map:
            from .torch.placement import finish

            finish()
        return out

    def _all(self, mmap: bool) -> dict[str, Any]:
        """Every tensor as :meth:`tensor` gives it, in one pass: one size check and one lookup per tensor."""
        out: dict[str, Any] = {}
        for i in range(len(self._rows)):
            out.update(self._shard(i)._all(mmap))
        if not self._tensor_members:
            return out
        mapped = mmap and self._map_source()
        self._check_size(next(iter(self._tensor_members)))
        to_torch = None
        lazy, whole, entries = self.source.lazy_headers, self._map, self._entries
        for name in self._tensor_members:
            if lazy:
                self._first_read(name)  # a remote member's headers, checked (and its bytes fetched) first
            entry = entries[name]
            row = DTYPES[entry["dtype"]]
            if mapped:  # numpy_view, inlined: one frombuffer per tensor, the storage dtype cached
                count = entry["nbytes"] // row.itemsize
                arr = np.frombuffer(whole, _STORAGE[row.name], count, entry["offset"])  # type: ignore[call-overload]
                arr = arr.reshape(entry["shape"])
            else:
                arr = self._read(entry, row)
            if entry["kind"] == "torch":
                to_torch = to_torch or _torch_converter(name)
                out[name] = to_torch(arr, row)
            else:
                arr = arr if row.numpy_native else _ml_dtypes_view(arr, row, name)
                out[name] = arr[()] if entry["kind"] == "numpy-scalar" else arr
        return out

    def verify(self, *, progress: bool | None = None) -> None:
        """Recompute every member's CRC-32 (tensor data included, every shard's) and each recorded SHA-256."""
        tensor_of = {m.name: n for n, m in self._tensor_members.items()}
        sizes = [m.size for m in self.members.values()]
        bar = Progress(sum(sizes) + sum(s.file_bytes for s in self.shards), "verifying", progress)
        buf = bytearray(min(_READ_CHUNK, max(sizes, default=0)))
        try:
            for m in self.members.values():
                if m.name in tensor_of:
                    self._first_read(tensor_of[m.name])  # a remote member: headers checked, bytes fetched once
                entry = self._entries[tensor_of[m.name]] if m.name in tensor_of else None
                want_sha = None if entry is None else entry.get(manifest.SHA256)
                skip = 0 if entry is None else entry["offset"] - m.data_offset
                crc, sha = _crc_range(self.source, m.data_offset, m.size, buf, bar, skip if want_sha else None)
                what = f"member {m.name!r}" if entry is None else f"tensor {entry['name']!r}"
                if crc != m.crc:
                    raise IntegrityError(
                        "checksum mismatch: the data is damaged (bit flip or tampering)", where=what, source=self.path
                    )
                if want_sha is not None and sha != want_sha:
                    raise IntegrityError("SHA-256 mismatch: the tensor's bytes changed", where=what, source=self.path)
        finally:
            bar.close()
        for shard in self.shards:
            shard.verify(progress=progress)

    def close(self) -> None:
        """Release the file (and every shard's); tensors already handed out stay valid (they keep the map)."""
        self._map = None
        with self._opening:  # no shard is opened after this
            self._closed = True
        for shard in self._opened:
            if shard is not None:
                shard.close()
        self.source.close()

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _torch_converter(name: str) -> Any:
    """modelpack.torch.tensors.to_torch, or a clear error naming the tensor when torch is missing."""
    try:
        from .torch.tensors import to_torch
    except ImportError as e:
        raise MissingDependencyError(
            "this file holds torch tensors; install torch (pip install 'modelpack[torch]')",
            where=name,
        ) from e
    return to_torch


def device_for(name: str, device_map: Mapping[str, Any]) -> Any:
    """The device of the longest prefix of ``name`` in ``device_map`` (``""`` matches all); dotted boundaries."""
    best: str | None = None
    for prefix in device_map:
        if prefix == "" or name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        raise KeyError(f"device_map has no entry for tensor {name!r}; add its prefix or a catch-all \"\"")
    return device_map[best]


_FRAMEWORKS = ("numpy", "torch")
_STORAGE = {row.name: row.storage_numpy for row in DTYPES.values()}  # dtype name -> numpy dtype of its bytes


def _ml_dtypes_view(arr: np.ndarray, row: DType, name: str) -> np.ndarray:
    """bfloat16, float8... as numpy through ml_dtypes (JAX's dtypes), which names them as this table does."""
    try:
        import ml_dtypes
    except ImportError as e:
        raise MissingDependencyError(
            f"numpy has no {row.name}; install ml_dtypes to load it as numpy, load it with framework='torch', "
            "or read its raw bits with Pack.array",
            where=name,
        ) from e
    dt = getattr(ml_dtypes, row.name, None)  # row.name comes from the closed dtype table, never from the file
    if dt is None or np.dtype(dt).itemsize != row.itemsize:
        raise MissingDependencyError(f"ml_dtypes has no {row.name}; load it with framework='torch'", where=name)
    return arr.view(dt)


def _crc_range(src: Source, offset: int, size: int, buf: bytearray, bar: Progress,
               sha_from: int | None = None) -> tuple[int, str | None]:
    """CRC-32 of a member and, when ``sha_from`` is given, SHA-256 of its bytes from there on, in one pass."""
    crc, pos, view = 0, 0, memoryview(buf)
    sha = None if sha_from is None else hashlib.sha256()
    while pos < size:
        n = src.readinto(view[: min(len(buf), size - pos)], offset + pos)
        if n <= 0:
            raise FormatError("file ends early (truncated while open?)")
        if sha is not None and sha_from is not None and pos < sha_from:  # the .npy header: CRC only
            head = min(n, sha_from - pos)
            crc = checksums(view[:head], crc, None)
            crc = checksums(view[head:n], crc, sha)
        else:
            crc = checksums(view[:n], crc, sha)
        pos += n
        bar.update(n)
    return crc, None if sha is None else sha.hexdigest()


def open(path: Any) -> Pack:  # noqa: A001 - mirrors builtins.open on purpose
    """Open a .mpk for lazy access: ``with modelpack.open(p) as pack: pack["w"]``.

    ``path``: a path, a URL, bytes or a readable seekable binary file object (see :class:`Pack`).
    """
    return Pack(path)


def load(
    path: Any,
    *,
    mmap: bool = True,
    map_location: Any = None,
    verify: bool = False,
    progress: bool | None = None,
    dtype: Any = None,
    device_map: Mapping[str, Any] | None = None,
    framework: str | None = None,
    keys: Iterable[str] | None = None,
) -> Any:
    """Load what :func:`save` wrote, from a path, URL, bytes or file object (see :class:`Pack`).

    ``keys=[...]`` loads only those tensors (manifest names, as ``open(p).keys()``
    lists them) and returns ``{name: tensor}``; a remote file then fetches only
    their members.

    ``mmap=True`` returns copy-on-write views of a local file (no copy, writable,
    the file never changes, no file descriptor kept open); ``mmap=False``, and
    every source that is not a local file, reads into fresh memory.
    ``verify=True`` checks every checksum first. ``map_location`` moves torch
    tensors to a device (``"cuda"`` stages through pinned memory);
    ``device_map={"encoder": "cuda:0", "": "cpu"}`` places them by name prefix.
    ``dtype`` (``torch.bfloat16``, ``"float16"``...) casts floating torch tensors
    one at a time, never integer or bool ones (numpy arrays are returned as
    saved); ``"auto"`` keeps the file's dtypes. ``framework="torch"`` or ``"numpy"``
    returns every tensor as that framework's (zero copy), whatever it was saved from.
    """
    with Pack(path) as pack:
        if verify:
            pack.verify(progress=progress)
        if keys is not None:
            return pack.select(keys, mmap=mmap, map_location=map_location, dtype=dtype, device_map=device_map,
                               framework=framework)
        return pack.load(mmap=mmap, map_location=map_location, dtype=dtype, device_map=device_map,
                         framework=framework)


def load_bytes(data: bytes | bytearray | memoryview, *, map_location: Any = None, dtype: Any = None,
               device_map: Mapping[str, Any] | None = None) -> Any:
    """:func:`load` from bytes (like ``safetensors.torch.load``); tensors are copies, never views of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load_bytes takes bytes, bytearray or memoryview; got {type(data).__name__}")
    return load(data, map_location=map_location, dtype=dtype, device_map=device_map)


def verify(path: Any, *, progress: bool | None = None) -> None:
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


def read_spec_text(path: Any) -> str | None:
    """The spec.yaml text of a .mpk after the full structure check, or None."""
    with Pack(path) as pack:
        return pack.spec_text
