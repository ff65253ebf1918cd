"""Values that used to come back different from what was saved, with no error (issue 11)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import tree
from modelpack.errors import FormatError, UnsupportedObjectError

torch = pytest.importorskip("torch")


def _bits(t: Any) -> bytes:
    """The bytes of the values a tensor shows (lazy conj/neg bits resolved)."""
    t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _roundtrip(obj: Any, tmp_path: Path, mmap: bool) -> Any:
    path = tmp_path / "x.mpk"
    modelpack.save(obj, path)
    return modelpack.load(path, mmap=mmap)


# --------------------------------------------------------------------------- conjugate and negative views


def _math_bit_views() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, 3, dtype=torch.complex64, generator=g)
    r = torch.randn(4, 3, generator=g)
    return {
        "c": c, "conj": c.conj(), "conj_t": c.conj().T, "neg_conj": torch._neg_view(c.conj()),
        "r": r, "neg": torch._neg_view(r), "neg_row": torch._neg_view(r[1]),
        "c32": c.to(torch.complex32), "c32_conj": c.to(torch.complex32).conj(),
    }


@pytest.mark.parametrize("mmap", [True, False])
def test_conj_and_neg_views_load_as_the_values_they_show(tmp_path, mmap):
    views = _math_bit_views()
    back = _roundtrip(views, tmp_path, mmap)
    for key, t in views.items():
        assert _bits(back[key]) == _bits(t), key
        assert not (back[key].is_conj() or back[key].is_neg()), key
    assert back["conj"] is not back["c"] and back["neg"] is not back["r"]


def test_tied_key_includes_everything_that_changes_the_values():
    t = torch.randn(4, 4, dtype=torch.complex64)
    f = torch.randn(16)
    same = [(t, t.view(4, 4)), (f, f[:])]
    different = [(t, t.conj()), (f, torch._neg_view(f)), (f, f.view(torch.int32)), (f, f.view(4, 4)),
                 (f[:4], f[1:5]), (f.view(4, 4), f.view(4, 4).T)]
    for a, b in same:
        assert tree.tensor_key(a) == tree.tensor_key(b)
    for a, b in different:
        assert tree.tensor_key(a) != tree.tensor_key(b)
    arr = np.arange(8, dtype=np.float32)
    assert tree.tensor_key(arr) == tree.tensor_key(arr[:])
    assert tree.tensor_key(arr) != tree.tensor_key(arr.view(np.int32))
    assert tree.tensor_key(arr) != tree.tensor_key(arr.view(arr.dtype.newbyteorder(">")))


def test_checkpoint_snapshots_use_the_same_tied_key():
    from modelpack.checkpoint import _snapshot

    assert _snapshot.tensor_key is tree.tensor_key
    t = torch.randn(3, dtype=torch.complex64)
    copy = _snapshot.Snapshotter().take({"a": t, "b": t.conj(), "n": torch._neg_view(t)})
    assert copy["b"] is not copy["a"] and torch.equal(copy["b"], t.conj())
    assert torch.equal(copy["n"], -t)


# --------------------------------------------------------------------------- masked arrays


@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_masked_arrays_are_refused_with_what_to_do(tmp_path, dtype):
    masked = np.ma.array(np.arange(3, dtype=dtype), mask=[0, 1, 0])
    for obj, where in [(masked, "obj"), ({"m": [masked]}, "obj['m'][0]"), ({"k": np.ma.masked}, "obj['k']")]:
        with pytest.raises(UnsupportedObjectError, match=r"MaskedArray: its mask would be lost.*getmaskarray") as info:
            modelpack.save(obj, tmp_path / "m.mpk")
        assert info.value.where == where
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- views of one storage


@pytest.mark.parametrize("mmap", [True, False])
def test_views_of_one_storage_come_back_as_independent_copies(tmp_path, mmap):
    w = torch.arange(12.0).reshape(3, 4)
    back = _roundtrip({"w": w, "wt": w.T, "row": w[1], "again": w}, tmp_path, mmap)
    assert torch.equal(back["w"], w) and torch.equal(back["wt"], w.T) and torch.equal(back["row"], w[1])
    assert back["again"] is back["w"]  # the same view twice is one tensor (tied weights)
    assert back["wt"].is_contiguous()  # each view is stored as the values it shows
    back["w"][1, 0] = -1.0
    assert back["row"][0] == 4.0 and back["wt"][0, 1] == 4.0  # independent: no aliasing kept
    with modelpack.open(tmp_path / "x.mpk") as pack:
        assert sorted(pack.keys()) == ["row", "w", "wt"]


# --------------------------------------------------------------------------- NaN payloads


_NANS = [0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFFFFFFFFFFFFFFF, 0x7FF8000000000000]


def _f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _u64(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


@pytest.mark.parametrize("mmap", [True, False])
def test_python_nans_keep_their_sign_and_payload(tmp_path, mmap):
    values = [_f64(b) for b in _NANS] + [float("inf"), -float("inf"), -0.0]
    back = _roundtrip({"x": values, "t": tuple(values)}, tmp_path, mmap)
    assert [_u64(x) for x in back["x"]] == [_u64(x) for x in values]
    assert [_u64(x) for x in back["t"]] == [_u64(x) for x in values]


@pytest.mark.parametrize("dtype, bits", [("float16", [0x7C01, 0xFE00, 0xFFFF]),
                                         ("float32", [0x7FC00001, 0xFFC00000, 0x7F800001]),
                                         ("float64", _NANS[:4])])
def test_numpy_scalar_and_array_nans_keep_their_bits(tmp_path, dtype, bits):
    raw = np.array(bits, dtype=f"<u{np.dtype(dtype).itemsize}").view(dtype)
    complex_ = raw.view(np.complex128) if dtype == "float64" else raw[:0]
    obj = {"scalars": [raw[i] for i in range(len(bits))] + [c for c in complex_], "array": raw}
    for mmap in (True, False):
        back = _roundtrip(obj, tmp_path, mmap)
        assert [type(s) for s in back["scalars"]] == [type(s) for s in obj["scalars"]]
        assert b"".join(s.tobytes() for s in back["scalars"]) == raw.tobytes() + complex_.tobytes()
        assert back["array"].tobytes() == raw.tobytes()


def test_tree_float_tags_are_checked():
    for value in ["0x0000000000000001", "0x7FF8000000000001", "0x7ff800000000001", "nan ", 1.5, "NaN"]:
        with pytest.raises(FormatError, match=r"\$float must be"):
            tree.decode({"$float": value}, lambda n: None)
    assert _u64(tree.decode({"$float": "0xfff8000000000000"}, lambda n: None)) == 0xFFF8000000000000
    assert tree.encode(_f64(0x7FF8000000000000))[0] == {"$float": "nan"}


def test_async_checkpoint_snapshots_keep_masks_and_sparse_layouts():
    from modelpack.checkpoint import _snapshot

    masked = np.ma.array([1.0, 2.0], mask=[0, 1])
    sparse = torch.randn(3, 3).to_sparse()
    copy = _snapshot.Snapshotter().take({"m": masked, "s": sparse})
    assert copy["m"] is masked  # left for save to refuse, never silently unmasked
    assert copy["s"].layout == torch.sparse_coo and torch.equal(copy["s"].to_dense(), sparse.to_dense())
    assert copy["s"]._values().data_ptr() != sparse._values().data_ptr()


def test_async_checkpoint_refuses_masked_arrays_and_round_trips_sparse(tmp_path):
    from modelpack.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path)
    with pytest.raises(UnsupportedObjectError, match=r"obj\['extra'\]\['m'\]: cannot save a numpy\.ma\.MaskedArray"):
        ckpt.save(1, extra={"m": np.ma.array([1.0, 2.0], mask=[0, 1])}, blocking=False, rng=False)
    sparse = torch.randn(3, 3).to_sparse_csr()
    ckpt.save(2, extra={"s": sparse}, blocking=False, rng=False)
    ckpt.wait()
    back = ckpt.load()
    assert torch.equal(back.extra["s"].to_dense(), sparse.to_dense())
