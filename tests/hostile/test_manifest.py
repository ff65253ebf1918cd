"""The manifest and tensor layer: lying metadata is refused before a tensor byte is touched.

Every file here has a perfectly valid zip structure (``mpkcraft.mpk`` recomputes all CRCs), so
only the manifest checks stand between the lie and memory.
"""

from __future__ import annotations

import copy
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import api, limits
from modelpack.errors import FormatError, IntegrityError, LimitError

from .guards import ANY, guarded, refused, write
from .mpkcraft import mpk

M = "manifest.json"
E0 = "manifest.json.tensors[0]"
TA = "tensor 'a'"
TREE = "manifest.json.tree"  # the same prefix from the open-time check and from decode


def _top(**fields: Any) -> Callable[[dict], None]:
    return lambda m: m.update(fields)


def _drop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key)


def _entry(i: int = 0, **fields: Any) -> Callable[[dict], None]:
    return lambda m: m["tensors"][i].update(fields)


def _entry_drop(key: str) -> Callable[[dict], None]:
    return lambda m: m["tensors"][0].pop(key)


def _shift(key: str, delta: int) -> Callable[[dict], None]:
    return lambda m: m["tensors"][0].update({key: m["tensors"][0][key] + delta})


def _as_float(key: str) -> Callable[[dict], None]:
    return lambda m: m["tensors"][0].update({key: float(m["tensors"][0][key])})


def _tree(value: Any) -> Callable[[dict], None]:
    """Replace the tree, keeping both tensors referenced (so only ``value`` is at fault)."""
    return lambda m: m.update(tree={"x": value, "a": {"$tensor": "a"}, "b": {"$tensor": "b"}})


def _nest(depth: int) -> Any:
    node: Any = {"$tensor": "a"}
    for _ in range(depth):
        node = [node]
    return node


MANIFEST_CASES: list[tuple[str, Callable[[dict], None], type, str, str | None]] = [
    # ---- top level
    ("format-other", _top(format="pickle"), FormatError, "format is 'pickle'", M),
    ("format-missing", _drop("format"), FormatError, "format is None", M),
    ("version-future", _top(version=2), FormatError, "newer modelpack", M),
    *[(f"version-{v!r}", _top(version=v), FormatError, "is not a positive integer", M)
      for v in (0, -1, True, "1", 1.0, None, [1])],
    ("unknown-top-key", _top(code="__import__('os').system('id')"), FormatError, "top-level keys must be", M),
    ("missing-tree", _drop("tree"), FormatError, "top-level keys must be", M),
    ("metadata-not-str", _top(metadata={"a": 1}), FormatError, "metadata must map strings", f"{M}.metadata"),
    ("metadata-list", _top(metadata=["a"]), FormatError, "metadata must map strings", f"{M}.metadata"),
    ("metadata-nested", _top(metadata={"a": {"b": "c"}}), FormatError, "metadata must map strings", f"{M}.metadata"),
    # ---- the tensor list and entries
    ("tensors-str", _top(tensors="a"), FormatError, "tensors must be a list", f"{M}.tensors"),
    ("tensors-dict", _top(tensors={"a": {}}), FormatError, "tensors must be a list", f"{M}.tensors"),
    ("entry-not-object", lambda m: m["tensors"].__setitem__(0, 5), FormatError, "exactly the keys", E0),
    ("entry-extra-key", _entry(loader="torch.load"), FormatError, "exactly the keys", E0),
    ("entry-missing-key", _entry_drop("crc32"), FormatError, "exactly the keys", E0),
    *[(f"name-{i}", _entry(name=n), FormatError, "is not allowed", E0) for i, n in enumerate([
        "../a", "/a", "a/b", "", "a\x00", "a\n", "..", "a..b", ".a", "-a", "__import__('os')",
        "os.system(1)", "é", 5, None, ["a"], {"a": 1}, True,
    ])],
    ("name-too-long", _entry(name="a" * 600), LimitError, "exceeds the limit max_name_length", E0),
    ("name-other-member", _entry(name="b"), FormatError, "missing or misnamed", "tensor 'b'"),
    ("member-traversal", _entry(member="../a.npy"), FormatError, "missing or misnamed", TA),
    ("member-absent", _entry(member="c.npy", name="c"), FormatError, "missing or misnamed", "tensor 'c'"),
    ("member-not-str", _entry(member=["a.npy"]), FormatError, "missing or misnamed", TA),
    ("two-entries-one-member", lambda m: m["tensors"].append(copy.deepcopy(m["tensors"][0])), FormatError,
     "listed twice", f"{M}.tensors[2]"),
    ("member-unlisted", lambda m: m["tensors"].pop(), FormatError, "not listed in the manifest", "member 'b.npy'"),
    # ---- dtypes: closed table, never getattr
    *[(f"dtype-{i}", _entry(dtype=d), FormatError, "unknown dtype", TA) for i, d in enumerate([
        "object", "torch.load", "os.system", "__class__", "float", "<f4", "O", "V8", "float32 ", "FLOAT32",
        "torch.float32", "str", "U8", "", None, 4, ["float32"], {"float32": 1}, True,
    ])],
    ("dtype-same-itemsize", _entry(1, dtype="float64"), FormatError, "does not match the manifest", "tensor 'b'"),
    ("dtype-other-itemsize", _entry(dtype="float64"), FormatError, "byte length disagrees", TA),
    # ---- shapes
    *[(f"shape-{i}", _entry(shape=s), FormatError, "not a non-negative integer", TA) for i, s in enumerate([
        [-1, 3], [2, -3], [True, 3], [2.0, 3], ["2", 3], [None], [[2], [3]], [{}], [2, 3.5],
    ])],
    *[(f"shape-type-{i}", _entry(shape=s), FormatError, "shape must be a list", TA)
      for i, s in enumerate(["23", {"0": 2}, None, 6, True])],
    ("shape-too-many-dims", _entry(shape=[1] * 65), LimitError, "exceeds the limit max_dims", TA),
    ("shape-int64-overflow", _entry(shape=[2**62, 2**62, 4]), FormatError, "spans 2**63 bytes", TA),
    ("shape-int64-max", _entry(shape=[2**63 - 1]), FormatError, "spans 2**63 bytes", TA),
    ("shape-zero-times-huge", _entry(shape=[0, 2**62]), FormatError, "spans 2**63 bytes", TA),
    *[(f"shape-above-int64-{i}", _entry(shape=s), FormatError, "below 2**63", TA) for i, s in enumerate([
        [2**63], [2**64 + 2, 3], [2**64, 2**64], [10**3999], [10**3999] * 20,
    ])],
    ("shape-transposed", _entry(shape=[3, 2]), FormatError, "does not match the manifest", TA),
    # ---- kind
    *[(f"kind-{i}", _entry(kind=k), FormatError, "is not one of", TA)
      for i, k in enumerate(["pickle", "torch.Tensor", "", None, 1, ["torch"]])],
    ("kind-scalar-with-shape", _entry(kind="numpy-scalar"), FormatError, "must have shape []", TA),
    # ---- byte lengths and offsets
    ("nbytes-plus-one", _shift("nbytes", 1), FormatError, "byte length disagrees", TA),
    ("nbytes-float", _as_float("nbytes"), FormatError, "nbytes '24.0' is not an integer", TA),
    ("nbytes-bool", _entry(nbytes=True), FormatError, "is not an integer", TA),
    ("nbytes-str", _entry(nbytes="24"), FormatError, "is not an integer", TA),
    ("nbytes-negative", _entry(nbytes=-24), FormatError, "byte length disagrees", TA),
    ("offset-next-block", _shift("offset", 64), FormatError, "64-byte aligned data", TA),
    ("offset-unaligned", _shift("offset", 1), FormatError, "64-byte aligned data", TA),
    ("offset-header", _shift("offset", -64), FormatError, "64-byte aligned data", TA),
    ("offset-past-eof", _entry(offset=1 << 40), FormatError, "64-byte aligned data", TA),
    ("offset-negative", _entry(offset=-64), FormatError, "64-byte aligned data", TA),
    ("offset-float", _as_float("offset"), FormatError, "is not an integer", TA),
    ("offset-null", _entry(offset=None), FormatError, "is not an integer", TA),
    # ---- checksums in the manifest
    ("crc-zero", _entry(crc32="00000000"), FormatError, "crc32 disagrees", TA),
    ("crc-upper", lambda m: m["tensors"][0].update(crc32=m["tensors"][0]["crc32"].upper() + ""), FormatError,
     "", ANY),
    ("crc-int", lambda m: m["tensors"][0].update(crc32=int(m["tensors"][0]["crc32"], 16)), FormatError,
     "crc32 disagrees", TA),
    # ---- tree: references and tags
    ("tree-unknown-ref", _tree({"$tensor": "zz"}), FormatError, "refers to unknown tensor 'zz'", TREE),
    ("tree-unused-tensor", _top(tree={"a": {"$tensor": "a"}}), FormatError, "'b' is not used by the tree", TREE),
    *[(f"tag-{t[1:]}", _tree({t: v}), FormatError, "unknown tagged object", f"{TREE}['x']") for t, v in [
        ("$eval", "__import__('os').system('id')"), ("$import", "os"), ("$class", "torch.nn.Linear"),
        ("$pickle", "gASV"), ("$ref", "http://example.invalid/x.json"), ("$file", "/etc/passwd"), ("$", 1),
    ]],
    ("tag-plus-key", _tree({"$tensor": "a", "code": "x"}), FormatError, "unknown tagged object", f"{TREE}['x']"),
    ("tensor-ref-not-str", _tree({"$tensor": 5}), FormatError, "$tensor must name a tensor", f"{TREE}['x']"),
    ("float-tag-other", _tree({"$float": "1e999"}), FormatError, "$float must be", f"{TREE}['x']"),
    ("float-tag-number", _tree({"$float": 5}), FormatError, "$float must be", f"{TREE}['x']"),
    ("tuple-not-list", _tree({"$tuple": {}}), FormatError, "$tuple must hold a list", f"{TREE}['x']"),
    ("dict-not-list", _tree({"$dict": {}}), FormatError, "$dict must hold a list", f"{TREE}['x']"),
    ("dict-triple", _tree({"$dict": [[1, 2, 3]]}), FormatError, "is not a [key, value] pair", f"{TREE}['x']"),
    ("dict-scalar-pair", _tree({"$dict": [5]}), FormatError, "is not a [key, value] pair", f"{TREE}['x']"),
    ("dict-bool-key", _tree({"$dict": [[True, 1]]}), FormatError, "must be a string or an integer", f"{TREE}['x']"),
    ("dict-float-key", _tree({"$dict": [[1.5, 1]]}), FormatError, "must be a string or an integer", f"{TREE}['x']"),
    ("dict-list-key", _tree({"$dict": [[[1], 1]]}), FormatError, "must be a string or an integer", f"{TREE}['x']"),
    ("dict-duplicate-key", _tree({"$dict": [["k", 1], ["k", 2]]}), FormatError, "appears twice", f"{TREE}['x']"),
    ("tree-too-deep", _tree(_nest(100)), LimitError, "exceeds the limit max_depth", ANY),
    ("tree-ref-too-deep", _top(tree={"b": {"$tensor": "b"}, "a": _nest(70)}), LimitError, "nesting depth", ANY),
]


@pytest.mark.parametrize("patch, cls, words, where", [c[1:] for c in MANIFEST_CASES],
                         ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_lie_is_refused(tmp_path: Path, patch, cls, words, where) -> None:
    refused(write(tmp_path, mpk(manifest=patch).bytes()), cls, words, where)


def _raw(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


_OK = '{"format":"modelpack","version":1,"metadata":{},"tensors":[],"tree":%s}'
RAW_CASES: list[tuple[str, bytes, type, str]] = [
    ("duplicate-top-key", _raw('{"format":"modelpack","format":"modelpack","version":1,"metadata":{},'
                               '"tensors":[],"tree":null}'), FormatError, "'format' appears twice"),
    ("duplicate-tree-key", _raw(_OK % '{"k":1,"k":2}'), FormatError, "'k' appears twice"),
    ("duplicate-metadata-key", _raw('{"format":"modelpack","version":1,"metadata":{"a":"1","a":"2"},'
                                    '"tensors":[],"tree":null}'), FormatError, "'a' appears twice"),
    ("nan", _raw(_OK % "NaN"), FormatError, "NaN is not valid JSON"),
    ("infinity", _raw(_OK % "[Infinity]"), FormatError, "Infinity is not valid JSON"),
    ("minus-infinity", _raw(_OK % "-Infinity"), FormatError, "-Infinity is not valid JSON"),
    ("float-overflow", _raw(_OK % "1e999"), FormatError, "out of range"),
    ("float-overflow-neg", _raw(_OK % "[-1.5e400]"), FormatError, "out of range"),
    ("int-5000-digits", _raw(_OK % ("9" * 5000)), FormatError, "not valid JSON"),
    ("deep-json-arrays", _raw(_OK % ("[" * 100_000 + "]" * 100_000)), FormatError, "not valid JSON"),
    ("deep-json-objects", _raw(_OK % ('{"a":' * 50_000 + "1" + "}" * 50_000)), FormatError, "not valid JSON"),
    ("invalid-utf8", _raw(_OK % '"X"').replace(b"X", b"\xff"), FormatError, "not valid JSON"),
    ("utf8-bom", b"\xef\xbb\xbf" + _raw(_OK % "null"), FormatError, "not valid JSON"),
    ("utf16", (_OK % "null").encode("utf-16"), FormatError, "not valid JSON"),
    ("trailing-garbage", _raw(_OK % "null" + "x"), FormatError, "not valid JSON"),
    ("two-documents", _raw(_OK % "null" + _OK % "null"), FormatError, "not valid JSON"),
    ("empty", b"", FormatError, "not valid JSON"),
    ("not-object", _raw("[]"), FormatError, "must be a JSON object"),
    ("string", _raw('"modelpack"'), FormatError, "must be a JSON object"),
    ("null", _raw("null"), FormatError, "must be a JSON object"),
    ("pickle-bytes", b"\x80\x04\x95" + b"\0" * 20, FormatError, "not valid JSON"),
]


@pytest.mark.budget(30)
@pytest.mark.parametrize("data, cls, words", [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_manifest_json_is_strict(tmp_path: Path, data: bytes, cls, words) -> None:
    refused(write(tmp_path, mpk(tensors={}, raw_manifest=data).bytes()), cls, words, M)


def test_big_but_legal_json_values_load_exactly(tmp_path: Path) -> None:
    """4000-digit ints (under CPython's 4300 cap), lone surrogates, odd keys: data, not danger."""
    tree = {"big": 10**3999, "neg": -(10**3999), "s": "\ud800x", "$dict-like": 1, "f": 1.5e308}
    from modelpack import save

    save(tree, tmp_path / "t.mpk")
    with guarded(tmp_path):
        back = api.load(tmp_path / "t.mpk")
    assert back == tree


def test_manifest_size_is_capped(tmp_path: Path) -> None:
    path = write(tmp_path, mpk().bytes())
    with limits.raised(max_manifest_bytes=100):
        refused(path, LimitError, "manifest size", M)
    with guarded(tmp_path):
        api.load(path)


def test_tree_item_cap(tmp_path: Path) -> None:
    path = write(tmp_path, mpk(tree={"a": {"$tensor": "a"}, "b": {"$tensor": "b"}, "l": list(range(50))}).bytes())
    with limits.raised(max_tree_items=49):
        refused(path, LimitError, "max_tree_items", f"{TREE}['l']")
    with limits.raised(max_tree_items=50), guarded(tmp_path):
        assert api.load(path)["l"] == list(range(50))


# --------------------------------------------------------------------------- data and checksums


def _flip_data(z: Any, member: int = 0, at: int = -3) -> None:
    """Flip one tensor byte but leave every recorded CRC alone."""
    m = z.e[member]
    crc = z.e[member].lfh.get("crc")
    import zlib

    m.lfh["crc"] = m.cd["crc"] = crc if crc is not None else zlib.crc32(m.data)
    data = bytearray(m.data)
    data[at] ^= 0x10
    m.data = bytes(data)


def test_tensor_checksum_mismatch_names_the_tensor(tmp_path: Path) -> None:
    z = mpk()
    _flip_data(z)
    path = write(tmp_path, z.bytes())
    refused(path, IntegrityError, "checksum mismatch", TA, readers=("verify", "load_verify"))
    with guarded(tmp_path):  # the structure is intact: lazy readers work (documented: verify to check data)
        api.Pack(path).close()


def test_manifest_checksum_mismatch_is_caught_on_open(tmp_path: Path) -> None:
    z = mpk()
    _flip_data(z, member=2, at=5)
    refused(write(tmp_path, z.bytes()), IntegrityError, "CRC-32 mismatch", "member 'manifest.json'")


def test_crc_is_not_tamper_proofing(tmp_path: Path) -> None:
    """Documented in SECURITY.md: whoever can edit the file can recompute every CRC."""
    evil = {"a": np.full((2, 3), 666, np.float32), "b": np.array([1, -2, 3])}
    path = write(tmp_path, mpk(evil).bytes())
    with guarded(tmp_path):
        api.verify(path)
        assert api.load(path, verify=True)["a"][0, 0] == 666


def test_declared_bytes_never_exceed_the_file(tmp_path: Path) -> None:
    """No separate 'total bytes' cap is needed: members tile the file, and each tensor's nbytes must equal
    its member's size minus the .npy header, so the sum of nbytes is always below the file size."""
    path = write(tmp_path, mpk().bytes())
    with guarded(tmp_path), api.Pack(path) as pack:
        total = sum(e["nbytes"] for e in pack.entries.values())
        assert total < os.path.getsize(path)
    huge = mpk(manifest=_entry(shape=[1 << 20, 1 << 20], nbytes=4 << 40))
    refused(write(tmp_path, huge.bytes()), FormatError, "byte length disagrees", TA)


# --------------------------------------------------------------------------- truncation after open


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
def test_file_truncated_after_open_raises_instead_of_sigbus(tmp_path: Path, mmap: bool) -> None:
    path = write(tmp_path, mpk().bytes())
    with guarded(tmp_path):
        pack = api.Pack(path)
    try:
        with open(path, "r+b") as f:
            f.truncate(100)
        with guarded(tmp_path), pytest.raises(FormatError, match="shrank after it was opened") as info:
            pack.tensor("b", mmap=mmap)
        assert info.value.where == "tensor 'b'"
    finally:
        pack.close()


def test_verify_of_file_truncated_after_open(tmp_path: Path) -> None:
    path = write(tmp_path, mpk().bytes())
    with guarded(tmp_path):
        pack = api.Pack(path)
    try:
        with open(path, "r+b") as f:
            f.truncate(300)
        with guarded(tmp_path), pytest.raises(FormatError, match="file ends early"):
            pack.verify()
    finally:
        pack.close()


_SIGBUS_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from modelpack import api, save
    path = sys.argv[1]
    save({"w": np.arange(1 << 16, dtype=np.float64)}, path)
    copied = api.load(path, mmap=False)["w"]
    mapped = api.load(path)["w"]
    os.truncate(path, 4096)
    assert copied.sum() == np.arange(1 << 16).sum()  # mmap=False copies are plain memory
    print("copy ok", flush=True)
    mapped.sum()  # touches pages past the new end of file
    print("no signal")
""")


@pytest.mark.budget(60)
def test_mapped_tensor_truncated_underneath_is_sigbus_documented(tmp_path: Path) -> None:
    """The limit SECURITY.md documents: a view already handed out is a plain memory map."""
    from conftest import run_python

    proc = run_python(_SIGBUS_SCRIPT, str(tmp_path / "w.mpk"), timeout=50)
    assert "copy ok" in proc.stdout, proc.stderr
    assert proc.returncode == -signal.SIGBUS, (proc.returncode, proc.stdout, proc.stderr)


_ALLOC_SCRIPT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB of address space, all told
    from modelpack import api, inspect
    from modelpack.errors import ModelPackError
    for path in sys.argv[1:]:
        for reader in (lambda p: api.load(p, mmap=False), lambda p: api.load(p, verify=True), api.verify,
                       inspect.describe):
            try:
                reader(path)
            except ModelPackError as e:
                pass
            else:
                print("accepted", path)
    print("done")
""")


@pytest.mark.budget(60)
def test_huge_declarations_allocate_nothing(tmp_path: Path) -> None:
    """Files declaring terabytes are refused under a 1 GiB address-space cap (in a subprocess)."""
    from conftest import run_python

    cases = {
        "shape": mpk(manifest=_entry(shape=[1 << 20, 1 << 20, 1 << 10])),
        "nbytes": mpk(manifest=_entry(nbytes=1 << 45)),
        "members": (lambda z: (z.eocd.update(n_disk=60000, n_total=60000), z)[1])(mpk()),
        "tree": mpk(raw_manifest=b'{"format":"modelpack","version":1,"metadata":{},"tensors":[],"tree":'
                    + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    }
    paths = []
    for name, z in cases.items():
        paths.append(str(write(tmp_path, z.bytes(), f"{name}.mpk")))
    proc = run_python(_ALLOC_SCRIPT, *paths, timeout=50)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", (proc.stdout, proc.stderr[-2000:])


@pytest.mark.parametrize("obj", [[{"": np.bool_(False)}], {"w.": np.ones(2)}, {"a": {"": np.zeros(1)}}],
                         ids=["empty-key", "trailing-dot", "nested-empty"])
def test_keys_that_would_make_a_dotted_member_name_save_a_loadable_file(tmp_path: Path, obj: Any) -> None:
    """Found by the property tests: the writer named a tensor "0." (path [0][""]), whose member
    "0..npy" the reader refuses, so save() wrote a file load() could not read."""
    from modelpack import save

    save(obj, tmp_path / "t.mpk")
    with guarded(tmp_path):
        back = api.load(tmp_path / "t.mpk")
    assert repr(back) == repr(obj)


def test_container_spam_is_refused_before_parsing(tmp_path: Path) -> None:
    """`{},{},...` costs ~25x its size once parsed (63 MB peaked at 1.7 GB): counted first, refused unparsed."""
    import json as _json

    from modelpack.limits import raised

    spam = "[" + ",".join(["{}"] * 3000) + "]"
    body = '{"format":"modelpack","version":1,"metadata":{},"tensors":[],"tree":%s}' % spam
    path = write(tmp_path, mpk(tensors={}, raw_manifest=body.encode()).bytes())
    with raised(max_manifest_containers=1000), guarded(tmp_path):
        calls = []
        real = _json.loads
        _json.loads = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[assignment]
        try:
            with pytest.raises(LimitError, match="max_manifest_containers=1,000"):
                api.Pack(path)
        finally:
            _json.loads = real  # type: ignore[assignment]
    assert calls == []  # never parsed
