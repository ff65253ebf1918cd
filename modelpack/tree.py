"""Nested Python objects <-> a JSON structure plus an ordered list of tensor leaves.

The JSON form is what the manifest stores under ``tree``:

* ``null``, ``true``/``false``, integers, strings and finite floats as themselves;
* non-finite floats as ``{"$float": "nan" | "inf" | "-inf"}``, and a NaN other
  than the canonical one (sign or payload bits set) as ``{"$float": "0x<16 hex>"}``,
  its IEEE-754 bits, so every float comes back bit-exact;
* lists as arrays, tuples as ``{"$tuple": [...]}``;
* dicts whose keys are all strings not starting with ``$`` as objects, any
  other dict (int keys, ``$`` keys) as ``{"$dict": [[key, value], ...]}``;
* tensors and arrays as ``{"$tensor": "<name>"}``, naming a manifest entry;
* sparse torch tensors as ``{"$sparse": {"layout", "size", parts...}}``, each
  part (indices, values) a ``$tensor`` of its own (see docs/FORMAT.md).

The same tensor met twice (same values from the same memory, see
:func:`tensor_key`) is stored once, so tied weights come back as one object.
Different views of one storage (``w``, ``w.T``, ``w[1]``) are stored as
independent copies of the values each one shows.
"""

from __future__ import annotations

import math
import operator
import re
import struct
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import numpy as np

from . import limits
from .codec import RawArray, foreign_array
from .errors import FormatError, UnsupportedObjectError

__all__ = ["Leaf", "encode", "decode", "iter_refs", "NAME_RE", "valid_name", "all_valid_names", "tensor_key",
           "float_json"]

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NAME_LINES_RE = re.compile(rf"(?:{NAME_RE.pattern}\n)*")  # names joined by "\n" (which no name holds)
_TAGS = ("$float", "$tuple", "$dict", "$tensor", "$sparse")
_CANONICAL_NAN = 0x7FF8000000000000  # what float("nan") is; any other NaN is stored by its bits
_NAN_BITS_RE = re.compile(r"0x[0-9a-f]{16}")
# sparse layout -> (part name in the tree, torch accessor), in the constructor's argument order
_SPARSE: Mapping[str, tuple[tuple[str, str], ...]] = {
    "sparse_coo": (("indices", "_indices"), ("values", "_values")),
    "sparse_csr": (("compressed_indices", "crow_indices"), ("plain_indices", "col_indices"), ("values", "values")),
    "sparse_csc": (("compressed_indices", "ccol_indices"), ("plain_indices", "row_indices"), ("values", "values")),
    "sparse_bsr": (("compressed_indices", "crow_indices"), ("plain_indices", "col_indices"), ("values", "values")),
    "sparse_bsc": (("compressed_indices", "ccol_indices"), ("plain_indices", "row_indices"), ("values", "values")),
}


class Leaf:
    """A tensor found in the tree: its manifest name, kind ("torch", "numpy" or "numpy-scalar") and the object.

    ``where`` is its path in the saved object, for errors (``obj['opt'][2]``); from
    ``encode`` it is built from the path tuple only when an error asks for it.
    """

    __slots__ = ("name", "kind", "value", "_where", "_path")

    def __init__(self, name: str, kind: str, value: Any, where: str = "", *, path: tuple[Any, ...] | None = None):
        self.name, self.kind, self.value, self._where, self._path = name, kind, value, where, path

    @property
    def where(self) -> str:
        if not self._where and self._path is not None:
            self._where = _path_str(self._path)
        return self._where

    def __repr__(self) -> str:
        return f"Leaf(name={self.name!r}, kind={self.kind!r}, where={self.where!r})"


def valid_name(name: str) -> bool:
    """Tensor names double as zip member names, so they are kept boring."""
    return (
        bool(NAME_RE.fullmatch(name))
        and ".." not in name
        and not name.endswith(".")  # the member name adds ".npy": "a." would give "a..npy"
        and len(name) <= limits.current().max_name_length
    )


def all_valid_names(names: list[Any]) -> bool:
    """:func:`valid_name` of every item (each a ``str``) in one regex pass over the joined names.

    Thousands of names (a split index lists every tensor) cost one C scan instead of a
    call each. A name holding ``"\\n"`` would split in two, so the lines are counted too.
    """
    if not names:
        return True
    try:
        joined = "\n".join(names) + "\n"
    except TypeError:  # an item that is not a string
        return False
    return (
        joined.count("\n") == len(names)
        and _NAME_LINES_RE.fullmatch(joined) is not None
        and ".." not in joined
        and ".\n" not in joined  # no name ends with "."
        and max(map(len, names)) <= limits.current().max_name_length
    )


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def _path_str(path: tuple[Any, ...]) -> str:
    return "obj" + "".join(f"[{p!r}]" for p in path)


class _Encoder:
    def __init__(self) -> None:
        self.leaves: list[Leaf] = []
        self._by_identity: dict[Any, str] = {}
        self._names: set[str] = set()
        self._tensor_type = _torch_tensor_type()
        self._strided = getattr(sys.modules.get("torch"), "strided", None)
        lim = limits.current()  # read once per save, not per node
        self._max_depth, self._max_tensors, self._max_name = lim.max_depth, lim.max_tensors, lim.max_name_length

    def encode(self, obj: Any, path: tuple[Any, ...], active: set[int]) -> Any:
        if len(path) > self._max_depth:
            limits.check("max_depth", len(path), where=_path_str(path), what="nesting depth")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and type(obj) is int:
            return obj
        if type(obj) is float:
            return float_json(obj)
        if self._tensor_type is not None and isinstance(obj, self._tensor_type):
            if obj.layout is not self._strided:
                layout = str(obj.layout).removeprefix("torch.")
                if layout in _SPARSE:
                    return {"$sparse": self._sparse(obj, layout, path)}
            return {"$tensor": self._leaf(obj, "torch", path)}
        if isinstance(obj, np.ma.MaskedArray):
            raise UnsupportedObjectError(
                "cannot save a numpy.ma.MaskedArray: its mask would be lost; save the data and the mask "
                "as two arrays, e.g. {'data': a.data, 'mask': numpy.ma.getmaskarray(a)}",
                where=_path_str(path),
            )
        if isinstance(obj, np.ndarray):
            return {"$tensor": self._leaf(obj, "numpy", path)}
        if isinstance(obj, np.generic):
            return {"$tensor": self._leaf(np.asarray(obj), "numpy-scalar", path)}
        if isinstance(obj, RawArray):
            return {"$tensor": self._leaf(obj, obj.kind, path)}
        if isinstance(obj, (list, tuple, dict)):
            return self._container(obj, path, active)
        arr = foreign_array(obj)  # JAX, TensorFlow, CuPy... through DLPack or the array interface
        if arr is not None:
            return self.encode(arr, path, active)
        raise UnsupportedObjectError(
            f"cannot save a {type(obj).__name__!r}; supported: dict, list, tuple, None, bool, int, "
            "float, str, torch tensors, numpy arrays and arrays with __dlpack__ or the numpy array interface",
            where=_path_str(path),
        )

    def _container(self, obj: Any, path: tuple[Any, ...], active: set[int]) -> Any:
        if id(obj) in active:
            raise UnsupportedObjectError("the object contains itself", where=_path_str(path))
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                return self._dict(obj, path, active)
            if type(obj) is tuple or _is_torch_size(obj):
                return {"$tuple": [self.encode(v, path + (i,), active) for i, v in enumerate(obj)]}
            if type(obj) is list:
                return [self.encode(v, path + (i,), active) for i, v in enumerate(obj)]
            raise UnsupportedObjectError(
                f"cannot save a {type(obj).__name__!r} (a {type(obj).__mro__[1].__name__} subclass); "
                "convert it to a plain list, tuple or dict",
                where=_path_str(path),
            )
        finally:
            active.discard(id(obj))

    def _dict(self, obj: dict, path: tuple[Any, ...], active: set[int]) -> Any:
        for key in obj:
            if not (type(key) is str or type(key) is int):
                raise UnsupportedObjectError(
                    f"dict key {key!r} is a {type(key).__name__!r}; keys must be str or int",
                    where=_path_str(path),
                )
        items = [(k, self.encode(v, path + (k,), active)) for k, v in obj.items()]
        if all(type(k) is str and not k.startswith("$") for k in obj):
            return dict(items)
        return {"$dict": [[k, v] for k, v in items]}

    def _sparse(self, t: Any, layout: str, path: tuple[Any, ...]) -> dict[str, Any]:
        """A sparse tensor as its layout, size and dense parts (each one a tensor leaf)."""
        node: dict[str, Any] = {"layout": layout, "size": list(t.shape)}
        if layout == "sparse_coo":
            node["coalesced"] = bool(t.is_coalesced())
        for part, accessor in _SPARSE[layout]:
            value = getattr(t, accessor)()
            node[part] = {"$tensor": self._leaf(value, "torch", path + (part,), where=_path_str(path))}
        return node

    def _leaf(self, value: Any, kind: str, path: tuple[Any, ...], where: str | None = None) -> str:
        key = ("id", id(value)) if kind == "numpy-scalar" else tensor_key(value)
        if key in self._by_identity:
            return self._by_identity[key]
        name = self._name_for(path)
        self._by_identity[key] = name
        self.leaves.append(Leaf(name, kind, value, where or "", path=path))
        if len(self.leaves) > self._max_tensors:
            limits.check("max_tensors", len(self.leaves), what="number of tensors")
        return name

    def _name_for(self, path: tuple[Any, ...]) -> str:
        name = ".".join([p if type(p) is str else str(p) for p in path]) or "tensor"
        ok = (len(name) <= self._max_name and NAME_RE.fullmatch(name) and ".." not in name  # valid_name, caps read once
              and not name.endswith("."))
        if not ok or name.casefold() in self._names:
            n = len(self.leaves)
            name = f"_{n}"
            while name.casefold() in self._names:
                n += 1
                name = f"_{n}"
        self._names.add(name.casefold())
        return name


def _is_torch_size(obj: Any) -> bool:
    t = type(obj)
    return t.__name__ == "Size" and t.__module__ == "torch"


def float_json(x: float) -> Any:
    """A float as strict JSON holds it: itself, or ``{"$float": ...}`` when non-finite (JSON has no
    Infinity or NaN). The manifest's tree and the ``show`` page's data both write floats this way."""
    return x if math.isfinite(x) else {"$float": _nonfinite(x)}


def _nonfinite(x: float) -> str:
    """The ``$float`` text of inf, -inf or a NaN; a NaN with sign or payload bits keeps them."""
    if not math.isnan(x):
        return repr(x)
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    return "nan" if bits == _CANONICAL_NAN else f"0x{bits:016x}"


_torch_names: tuple[Any, ...] | None = None  # torch's plain types, strided layout, functorch check: read once


def _plain_torch(t: Any) -> bool:
    """A dense tensor (or Parameter) over ordinary memory, whose address identifies its values."""
    global _torch_names
    if _torch_names is None:
        torch = sys.modules["torch"]
        _torch_names = ((torch.Tensor, torch.nn.Parameter), torch.strided,
                        torch._C._functorch.is_functorch_wrapped_tensor)
    plain, strided, wrapped = _torch_names
    return (
        type(t) in plain
        and t.layout == strided
        and not (t.is_nested or t.is_quantized or t._is_zerotensor())
        and not wrapped(t)  # inside vmap/grad: no storage
        and not t.is_meta
        and t.numel() > 0
    )


def tensor_key(value: Any) -> Hashable:
    """A key equal for two references that show the same values from the same memory (tied tensors).

    Everything that changes the values seen is in it: address, dtype, shape,
    strides, and torch's lazy conjugate and negative bits (``t`` and
    ``t.conj()`` share memory but not values). Tensors whose address says
    nothing (empty, meta, sparse, subclasses) are tied only to themselves.
    The one definition for ``save`` and the checkpoint snapshots.
    """
    if isinstance(value, RawArray):
        return ("id", id(value))
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ("id", id(value))
        return ("numpy", value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    if not _plain_torch(value):
        return ("id", id(value))
    return (
        "torch",
        value.device,
        value.data_ptr(),
        value.shape,  # a torch.Size: a tuple, hashed and compared as one
        value.stride(),
        value.dtype,
        value.is_conj(),
        value.is_neg(),
    )


def encode(obj: Any) -> tuple[Any, list[Leaf]]:
    """Turn ``obj`` into its JSON form and the tensors it holds, in first-seen order."""
    enc = _Encoder()
    return enc.encode(obj, (), set()), enc.leaves


# --------------------------------------------------------------------------- decoding


# Where a decoded value sits, as a linked chain ``(parent, key)`` (``()`` is the root): a child
# costs one small tuple, and the text is built only for an error. A text per element would make a
# long key above many items quadratic in the file's size.
_Where = tuple


def _where_text(where: _Where) -> str:
    parts = []
    while where:
        where, part = where
        parts.append(f"[{part!r}]")
    return "manifest.json.tree" + "".join(reversed(parts))


def _bad(msg: str, where: _Where) -> FormatError:
    return FormatError(msg, where=_where_text(where))


class _Lookup:
    """The caller's ``tensor(name)``, plus the sparse tensors built so far (so a tied one is one object)."""

    def __init__(self, tensor: Callable[[str], Any]) -> None:
        self.tensor = tensor
        self.sparse: dict[tuple[Any, ...], Any] = {}
        lim = limits.current()  # read once per decode, not per node
        self.max_depth, self.max_items = lim.max_depth, lim.max_tree_items

    def __call__(self, name: str) -> Any:
        return self.tensor(name)


_NUMBERS = frozenset({int, float, bool, type(None)})  # leaves with nothing to check: no call per value
_REF = operator.itemgetter("$tensor")


def decode(tree: Any, tensor: Callable[[str], Any]) -> Any:
    """Rebuild the object; ``tensor(name)`` returns the loaded tensor for a name."""
    return _decode(tree, _Lookup(tensor), (), 0)


def _decode(node: Any, tensor: _Lookup, where: _Where, depth: int) -> Any:
    if depth > tensor.max_depth:
        limits.check("max_depth", depth, where=_where_text(where), what="nesting depth")
    if isinstance(node, (str, list, dict)) and len(node) > tensor.max_items:
        limits.check("max_tree_items", len(node), where=_where_text(where), what="items in one value")
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [v if type(v) in _NUMBERS else _decode(v, tensor, (where, i), depth + 1) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        raise _bad(f"unexpected JSON value of type {type(node).__name__}", where)
    if len(node) == 1 and "$tensor" in node:  # the most common node: one tensor reference
        value = node["$tensor"]
        if not isinstance(value, str):
            raise _bad("$tensor must name a tensor", where)
        return tensor.tensor(value)
    tags = [k for k in node if k.startswith("$")] if _maybe_tagged(node) else []
    if not tags:
        if depth >= tensor.max_depth:  # children are too deep: let _decode say so
            return {k: _decode(v, tensor, (where, k), depth + 1) for k, v in node.items()}
        get = tensor.tensor  # a state dict is thousands of {"$tensor": name}: those skip the call to _decode
        refs = _only_refs(node)
        if refs is not None:
            return dict(zip(node, map(get, refs)))
        return {k: v if type(v) in _NUMBERS
                else get(v["$tensor"]) if type(v) is dict and len(v) == 1 and type(v.get("$tensor")) is str
                else _decode(v, tensor, (where, k), depth + 1) for k, v in node.items()}
    if len(node) != 1 or tags[0] not in _TAGS:
        raise _bad(f"unknown tagged object with keys {sorted(node)[:5]}; known tags: {', '.join(_TAGS)}", where)
    tag, value = tags[0], node[tags[0]]
    if tag == "$tensor":
        if not isinstance(value, str):
            raise _bad("$tensor must name a tensor", where)
        return tensor(value)
    if tag == "$float":
        return _decode_float(value, where)
    if tag == "$tuple":
        if not isinstance(value, list):
            raise _bad("$tuple must hold a list", where)
        return tuple(_decode(v, tensor, (where, i), depth + 1) for i, v in enumerate(value))
    if tag == "$sparse":
        return _decode_sparse(value, tensor, where)
    return _decode_dict(value, tensor, where, depth)


def _maybe_tagged(node: dict[str, Any]) -> bool:
    """False when no key starts with ``$``; one C scan of the joined keys (a key holding "\\n$" says True)."""
    try:
        return "\n$" in "\n" + "\n".join(node)
    except TypeError:  # a key that is not a string: the exact walk decides
        return True


def _only_refs(node: dict[str, Any]) -> list[str] | None:
    """The names, when every value of ``node`` is a ``{"$tensor": name}`` (a state dict), else None.

    Checked in C over all values at once: one ``$tensor`` key each, whose value is a string.
    """
    try:
        refs = list(map(_REF, node.values()))  # KeyError or TypeError: a value that is no such reference
    except (KeyError, TypeError):
        return None
    if set(map(len, node.values())) == {1} and set(map(type, refs)) == {str}:
        return refs
    return None


def _decode_float(value: Any, where: _Where) -> float:
    if value in ("inf", "-inf"):
        return float(value)
    if value == "nan":
        value = f"0x{_CANONICAL_NAN:016x}"
    if isinstance(value, str) and _NAN_BITS_RE.fullmatch(value):
        x = struct.unpack("<d", struct.pack("<Q", int(value, 16)))[0]
        if math.isnan(x):
            return x
    raise _bad(f"$float must be 'nan', 'inf', '-inf' or a NaN's bits as '0x' + 16 hex digits, not {value!r}", where)


def _decode_sparse(node: Any, tensor: _Lookup, where: _Where) -> Any:
    """A sparse tensor from its parts; with name-only callbacks, a dict of the parts' results."""
    layout = node.get("layout") if isinstance(node, dict) else None
    if layout not in _SPARSE:
        raise _bad(f"$sparse must hold an object whose layout is one of {', '.join(_SPARSE)}", where)
    names = [p for p, _ in _SPARSE[layout]]
    keys = {"layout", "size", *names} | ({"coalesced"} if layout == "sparse_coo" else set())
    if set(node) != keys:
        raise _bad(f"$sparse of layout {layout} must have exactly the keys {sorted(keys)}", where)
    size = node["size"]
    if not (isinstance(size, list) and len(size) <= limits.current().max_dims
            and all(type(d) is int and 0 <= d < 1 << 63 for d in size)):
        raise _bad("$sparse size must be a list of at most max_dims integers in [0, 2**63)", where)
    if type(node.get("coalesced", False)) is not bool:
        raise _bad("$sparse coalesced must be true or false", where)
    parts = {}
    for name in names:
        ref = node[name]
        if not (isinstance(ref, dict) and len(ref) == 1 and isinstance(ref.get("$tensor"), str)):
            raise _bad(f"$sparse {name} must be a {{'$tensor': name}} reference", where)
        parts[name] = ref["$tensor"]
    key = (layout, tuple(size), node.get("coalesced", False), *parts.values())
    if key not in tensor.sparse:
        loaded = {name: tensor(ref) for name, ref in parts.items()}
        tensor.sparse[key] = _build_sparse(layout, size, node.get("coalesced", False), loaded, where)
    return tensor.sparse[key]


def _build_sparse(layout: str, size: list[int], coalesced: bool, parts: dict[str, Any], where: _Where) -> Any:
    """torch's own checked constructor, sharing the parts' memory (zero copy when they are mapped)."""
    torch = sys.modules.get("torch")
    values = list(parts.values())
    if torch is None or not all(isinstance(v, torch.Tensor) for v in values):
        if all(v is None or isinstance(v, str) for v in values):
            return parts  # a walk over names (manifest check, diff): the parts stand for the tensor
        raise _bad("$sparse parts must be torch tensors (manifest kind 'torch')", where)
    try:
        if layout == "sparse_coo":
            return torch.sparse_coo_tensor(*values, size, is_coalesced=coalesced, check_invariants=True)
        return torch.sparse_compressed_tensor(*values, size, layout=getattr(torch, layout), check_invariants=True)
    except (RuntimeError, ValueError, TypeError) as e:  # torch's invariant checks: out-of-range, unsorted...
        raise _bad(f"$sparse parts do not form a valid {layout} tensor of size {size}: {str(e)[:200]}", where) from e


def _decode_dict(pairs: Any, tensor: _Lookup, where: _Where, depth: int) -> dict:
    if not isinstance(pairs, list):
        raise _bad("$dict must hold a list of [key, value] pairs", where)
    out: dict = {}
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _bad(f"$dict entry {i} is not a [key, value] pair", where)
        key = pair[0]
        if not (type(key) is str or type(key) is int):
            raise _bad(f"$dict key {key!r} must be a string or an integer", where)
        if key in out:
            raise _bad(f"$dict key {key!r} appears twice", where)
        out[key] = _decode(pair[1], tensor, (where, key), depth + 1)
    return out


def iter_refs(tree: Any) -> Iterator[str]:
    """Every tensor name the tree refers to (may repeat), without building anything."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$tensor")
            if len(node) == 1 and isinstance(ref, str):
                yield ref
            else:
                stack.extend(node.values())


class TensorRef(str):
    """A tensor's manifest name standing where a flattened tree holds a tensor (not a plain string)."""


def flat_leaves(tree: Any) -> dict[str, Any]:
    """Key -> leaf of a manifest tree, dict keys and list indices joined by dots (``model.fc.weight``).

    Tensors come back as :class:`TensorRef` (their name), other values as decoded
    (numbers, strings, None; an empty dict or list is a leaf too). A tensor at the
    root is keyed by its name, any other root value by ``""``. Reads no tensor data.
    """
    out: dict[str, Any] = {}
    used, cap = [0], limits.current().max_key_bytes  # each key repeats its parents' keys: count, then join

    def walk(value: Any, prefix: str) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value) \
            if isinstance(value, (list, tuple)) else None
        if items is None or not value:
            key = prefix[:-1] or (str(value) if isinstance(value, TensorRef) else "")
            out[key] = value
            return
        for k, v in items:
            k = str(k)
            used[0] += len(prefix) + len(k) + 1
            if used[0] > cap:
                limits.check("max_key_bytes", used[0], where=f"manifest.json.tree key {_short(prefix + k)}",
                             what="characters in the tree's flattened keys")
            walk(v, f"{prefix}{k}.")

    walk(decode(tree, TensorRef), "")
    return out


def _short(text: str, n: int = 80) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def flat_refs(tree: Any) -> dict[str, str]:
    """Key -> tensor name for every tensor of a manifest tree (keys as in :func:`flat_leaves`)."""
    return {k: str(v) for k, v in flat_leaves(tree).items() if isinstance(v, TensorRef)}
