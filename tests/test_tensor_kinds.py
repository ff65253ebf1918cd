"""Tensors beyond dense strided ones: sparse layouts round-trip, the rest are refused clearly (issue 11)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack.codec import DTYPES
from modelpack.errors import FormatError, UnsupportedObjectError

from hostile.mpkcraft import mpk

torch = pytest.importorskip("torch")


def _save_load(obj: Any, tmp_path: Path, mmap: bool) -> Any:
    path = tmp_path / "x.mpk"
    modelpack.save(obj, path)
    return modelpack.load(path, mmap=mmap)


# --------------------------------------------------------------------------- sparse layouts


def _dense() -> Any:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4, 6, generator=g)
    return d * (d > 0.3)


def _sparse_cases() -> dict[str, Any]:
    d = _dense()
    uncoalesced = torch.sparse_coo_tensor([[2, 0, 2], [1, 3, 1]], [1.0, 2.0, 3.0], (4, 6))
    hybrid = torch.sparse_coo_tensor([[0, 3]], torch.arange(6.0).reshape(2, 3), (5, 3)).coalesce()
    return {
        "coo": d.to_sparse(), "coo_uncoalesced": uncoalesced, "coo_hybrid": hybrid,
        "coo_empty": torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), [], (3, 3)),
        "csr": d.to_sparse_csr(), "csc": d.to_sparse_csc(),
        "bsr": d.to_sparse_bsr((2, 3)), "bsc": d.to_sparse_bsc((2, 3)),
        "csr_int32": torch.sparse_csr_tensor(torch.tensor([0, 1, 1], dtype=torch.int32),
                                             torch.tensor([2], dtype=torch.int32), torch.tensor([5.0]), (2, 3)),
    }


def _parts(t: Any) -> list[Any]:
    if t.layout == torch.sparse_coo:
        return [t._indices(), t._values()]
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return [t.crow_indices(), t.col_indices(), t.values()]
    return [t.ccol_indices(), t.row_indices(), t.values()]


@pytest.mark.parametrize("mmap", [True, False])
def test_sparse_layouts_round_trip_as_their_parts(tmp_path, mmap):
    cases = _sparse_cases()
    back = _save_load({**cases, "tied": cases["csr"]}, tmp_path, mmap)
    for key, t in cases.items():
        got = back[key]
        assert got.layout == t.layout and got.shape == t.shape and got.dtype == t.dtype, key
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(_parts(got), _parts(t))), key
        assert torch.equal(got.to_dense(), t.to_dense()), key
        if t.layout == torch.sparse_coo:
            assert got.is_coalesced() == t.is_coalesced(), key
    assert back["tied"] is back["csr"]  # a sparse tensor met twice is one object, like a dense one
    with modelpack.open(tmp_path / "x.mpk") as pack:
        assert {"csr.compressed_indices", "csr.plain_indices", "csr.values", "coo.indices"} <= set(pack.keys())


def test_sparse_parts_are_mapped_not_copied(tmp_path):
    cases = {"coo": _dense().to_sparse(), "csr": _dense().to_sparse_csr()}
    path = tmp_path / "s.mpk"
    modelpack.save(cases, path)
    with modelpack.open(path) as pack:
        mapped = {n: pack[n].data_ptr() for n in pack.keys()}
        back = pack.load()
    assert back["coo"]._values().data_ptr() == mapped["coo.values"]
    assert back["coo"]._indices().data_ptr() == mapped["coo.indices"]
    assert back["csr"].crow_indices().data_ptr() == mapped["csr.compressed_indices"]
    assert back["csr"].values().data_ptr() == mapped["csr.values"]


def _hostile_sparse(tmp_path: Path, node: dict[str, Any], tensors: dict[str, np.ndarray], kind: str = "torch") -> Path:
    def mutate(m: dict[str, Any]) -> None:
        for entry in m["tensors"]:
            entry["kind"] = kind

    path = tmp_path / "h.mpk"
    path.write_bytes(mpk(tensors, tree={"s": {"$sparse": node}}, manifest=mutate).bytes())
    return path


_I = {"$tensor": "i"}
_V = {"$tensor": "v"}


@pytest.mark.parametrize("node, tensors, kind, words", [
    ({"layout": "sparse_coo", "size": [3], "coalesced": False, "indices": _I, "values": _V},
     {"i": np.array([[0, 5]]), "v": np.array([1.0, 2.0])}, "torch", "valid sparse_coo"),
    ({"layout": "sparse_coo", "size": [3], "coalesced": True, "indices": _I, "values": _V},
     {"i": np.array([[1, 1]]), "v": np.array([1.0, 2.0])}, "torch", "valid sparse_coo"),
    ({"layout": "sparse_csr", "size": [2, 3], "compressed_indices": _I, "plain_indices": _I, "values": _V},
     {"i": np.array([0, 2, 9]), "v": np.array([1.0, 2.0])}, "torch", "valid sparse_csr"),
    ({"layout": "sparse_coo", "size": [3], "coalesced": False, "indices": _I, "values": _V},
     {"i": np.array([[0, 1]]), "v": np.array([1.0, 2.0])}, "numpy", "must be torch tensors"),
])
def test_hostile_sparse_parts_raise_format_error_on_load(tmp_path, node, tensors, kind, words):
    path = _hostile_sparse(tmp_path, node, tensors, kind)
    with modelpack.open(path):
        pass  # the structure is sound; the values are what torch's invariant check refuses
    with pytest.raises(FormatError, match=words):
        modelpack.load(path)


@pytest.mark.parametrize("node, words", [
    ({"layout": "sparse_foo", "size": [3], "indices": _I, "values": _V}, "layout is one of"),
    ({"layout": "sparse_coo", "size": [3], "indices": _I, "values": _V}, "exactly the keys"),
    ({"layout": "sparse_coo", "size": [-1], "coalesced": False, "indices": _I, "values": _V}, "size must be"),
    ({"layout": "sparse_coo", "size": [3], "coalesced": 1, "indices": _I, "values": _V}, "coalesced must be"),
    ({"layout": "sparse_coo", "size": [3], "coalesced": False, "indices": "i", "values": _V}, "reference"),
    ([1], "layout is one of"),
])
def test_malformed_sparse_nodes_are_refused_on_open(tmp_path, node, words):
    path = _hostile_sparse(tmp_path, node, {"i": np.array([[0, 1]]), "v": np.array([1.0, 2.0])})
    with pytest.raises(FormatError, match=words):
        modelpack.open(path)


# --------------------------------------------------------------------------- refused kinds


def _fake_tensor() -> Any:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.randn(3)


class _Tagged(torch.Tensor):
    """A plain subclass whose type would be lost."""


def _refused_cases() -> list[tuple[str, Any, str]]:
    x = torch.randn(2, 3)
    return [
        ("nested", torch.nested.nested_tensor([torch.randn(2), torch.randn(3)]), r"nested tensor.*unbind"),
        ("jagged", torch.nested.nested_tensor([torch.randn(2), torch.randn(3)], layout=torch.jagged),
         r"nested tensor.*unbind"),
        ("zero", torch._efficientzerotensor(3), r"efficient zero tensor.*clone\(\)"),
        ("fake", _fake_tensor(), r"FakeTensor.*no data"),
        ("quantized", torch.quantize_per_tensor(x, 0.1, 0, torch.quint8), r"quantized tensor \(dtype torch\.quint8.*dequantize"),
        ("meta", torch.empty(3, device="meta"), r"meta device.*no data.*materialize"),
        ("mkldnn", x.to_mkldnn(), r"torch\._mkldnn tensor.*to_dense"),
        ("subclass", x.as_subclass(_Tagged), r"tensor subclass .*_Tagged.*as_subclass\(torch\.Tensor\)"),
        ("lazy", torch.nn.LazyLinear(3).weight, r"uninitialized lazy parameter.*forward pass"),
    ]


def test_unsavable_tensor_kinds_are_refused_with_path_and_remedy(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = _refused_cases()
    for name, t, words in cases:
        with pytest.raises(UnsupportedObjectError, match=words) as info:
            modelpack.save({"ok": torch.ones(2), "bad": [t]}, tmp_path / "x.mpk")
        assert info.value.where == "obj['bad'][0]", name
    assert list(tmp_path.iterdir()) == []


def test_tensors_inside_func_transforms_are_refused(tmp_path):
    def save(x: Any) -> Any:
        with pytest.raises(UnsupportedObjectError, match=r"inside a torch\.func transform") as info:
            modelpack.save({"x": x}, tmp_path / "f.mpk")
        assert info.value.where == "obj['x']"
        return x.sum()

    torch.func.vmap(save)(torch.randn(2, 3))
    torch.func.grad(save)(torch.randn(3))


def test_dtensor_is_refused_with_gather_hint(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch built without distributed")
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor
    FakeStore = pytest.importorskip("torch.testing._internal.distributed.fake_pg").FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        d = distribute_tensor(torch.randn(4, 4), DeviceMesh("cpu", [0, 1]), [Shard(0)])
        with pytest.raises(UnsupportedObjectError, match=r"DTensor.*full_tensor\(\)") as info:
            modelpack.save({"w": d}, tmp_path / "d.mpk")
        assert info.value.where == "obj['w']"
    finally:
        dist.destroy_process_group()


def test_parameters_are_plain_tensors(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    back = _save_load({"p": p, "again": p}, tmp_path, mmap=True)
    assert torch.equal(back["p"], p.detach()) and back["again"] is back["p"]


# --------------------------------------------------------------------------- dtypes and empty tensors


def _all_torch_dtypes() -> list[Any]:
    found = {v for v in vars(torch).values() if isinstance(v, torch.dtype)}
    return sorted(found, key=str)


def _random_tensor(dtype: Any, shape: tuple[int, ...]) -> Any:
    t = torch.empty(shape, dtype=dtype)  # quantized dtypes give a quantized tensor here
    if dtype == torch.bool:
        return torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.5
    if t.is_quantized:  # torch can only fill these by quantizing floats
        return t
    raw = t.view(torch.uint8)
    raw.copy_(torch.randint(0, 256, raw.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1)))
    return t


def _raw(t: Any) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def test_every_torch_dtype_round_trips_bit_exactly_or_is_refused_by_name(tmp_path):
    stored, refused = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in _all_torch_dtypes():
            t = _random_tensor(dtype, (3,))
            path = tmp_path / "d.mpk"
            try:
                modelpack.save({"t": t, "view": t if t.is_quantized else t[::2]}, path)
            except UnsupportedObjectError as e:
                assert str(dtype) in str(e) and e.where == "obj['t']", dtype
                refused.append(dtype)
                continue
            for mmap in (True, False):
                back = modelpack.load(path, mmap=mmap)
                assert back["t"].dtype == dtype and _raw(back["t"]) == _raw(t), (dtype, mmap)
                assert back["view"].dtype == dtype and back["view"].shape == (2,), (dtype, mmap)
                assert _raw(back["view"]) == _raw(t)[: t.element_size()] + _raw(t)[2 * t.element_size():], dtype
            stored.append(dtype)
    assert {torch.float4_e2m1fn_x2, torch.bfloat16, torch.float8_e8m0fnu, torch.bits8, torch.complex32} <= set(stored)
    assert torch.quint8 in refused and torch.uint4 in refused
    assert {str(d).removeprefix("torch.") for d in stored} == {n for n in DTYPES if hasattr(torch, n)}


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0, 2)])
def test_empty_tensors_of_every_dtype_come_back_with_canonical_strides(tmp_path, mmap, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dtypes = [getattr(torch, n) for n in DTYPES if hasattr(torch, n)]
        obj = {str(d): torch.empty(shape, dtype=d) for d in dtypes}
        back = _save_load(obj, tmp_path, mmap)
    for key, t in obj.items():
        got = back[key]
        assert got.dtype == t.dtype and got.shape == t.shape and got.stride() == t.stride(), key
        assert got.view(torch.uint8).shape[:-1] == shape[:-1], key
