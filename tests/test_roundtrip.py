"""Round trips: every dtype, shape class, framework and container, bit-exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

import modelpack
from modelpack.codec import DTYPES
from modelpack.errors import UnsupportedObjectError

from conftest import bits_equal

torch = pytest.importorskip("torch")

TORCH_DTYPES = [d.name for d in DTYPES.values() if hasattr(torch, d.name)]
NUMPY_DTYPES = [d.name for d in DTYPES.values() if d.numpy_native]
SHAPES = {"0d": (), "empty": (0, 3), "vector": (7,), "matrix": (5, 6), "large": (256, 1024)}


def make_torch(dtype_name: str, shape: tuple[int, ...]) -> "torch.Tensor":
    dt = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(hash((dtype_name, shape)) % 2**31)
    if dt == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype_name.startswith(("bits", "float4")):  # torch has no arithmetic for these: random bytes
        return torch.randint(0, 256, (*shape, dt.itemsize), dtype=torch.uint8, generator=g).view(dt).reshape(shape)
    if dt.is_floating_point or dt.is_complex:
        base = torch.randn(shape, generator=g, dtype=torch.complex64 if dt.is_complex else torch.float32)
        return base.to(dt)
    info = np.iinfo(dtype_name)
    arr = np.random.default_rng(len(shape)).integers(info.min, info.max, size=shape, dtype=dtype_name, endpoint=True)
    return torch.from_numpy(arr)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_dtype_shape_roundtrip(tmp_path, dtype, shape):
    t = make_torch(dtype, shape)
    path = tmp_path / "t.mpk"
    modelpack.save({"t": t, "view": t.reshape(-1)[::2] if t.numel() else t}, path)
    for mmap in (True, False):
        back = modelpack.load(path, mmap=mmap)
        assert bits_equal(back["t"], t)
        assert bits_equal(back["view"], (t.reshape(-1)[::2] if t.numel() else t).contiguous())


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_dtype_shape_roundtrip(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / "a.mpk"
    modelpack.save([a, a.T, np.asfortranarray(a) if a.ndim else a], path)
    for mmap in (True, False):
        back = modelpack.load(path, mmap=mmap)
        assert isinstance(back, list) and all(isinstance(x, np.ndarray) for x in back)
        assert bits_equal(back[0], a)
        assert bits_equal(back[1], np.ascontiguousarray(a.T) if a.ndim else a)
        assert bits_equal(back[2], a)


def test_big_endian_numpy_comes_back_little_endian_equal(tmp_path):
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    modelpack.save(a, tmp_path / "be.mpk")
    back = modelpack.load(tmp_path / "be.mpk")
    assert back.dtype == np.dtype("<i4") and (back == a).all()


def test_non_contiguous_torch_views_save_their_values(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    obj = {"t": base.t(), "slice": base[:, 1:3], "expand": torch.ones(3, 1).expand(3, 4), "conj": torch.randn(3, dtype=torch.complex64).conj()}
    modelpack.save(obj, tmp_path / "v.mpk")
    back = modelpack.load(tmp_path / "v.mpk")
    for k, v in obj.items():
        assert torch.equal(back[k], v.resolve_conj()), k
        assert back[k].is_contiguous()


def test_nested_containers_keep_types(tmp_path):
    x = torch.arange(4)
    obj = {
        "list": [x, 1, 2.5, "s", None, True, False],
        "tuple": (x, (1, (2,)), []),
        1: {"int key": {-3: "neg"}},
        "$dollar": {"$tensor": "not a tensor"},
        "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-300, 2**0.5],
        "big": 2**100,
        "np": np.arange(3.0),
        "scalar": np.float32(1.5),
        "empty": {},
    }
    modelpack.save(obj, tmp_path / "n.mpk")
    back = modelpack.load(tmp_path / "n.mpk")
    assert list(back) == list(obj)
    assert isinstance(back["tuple"], tuple) and back["tuple"][1] == (1, (2,)) and back["tuple"][2] == []
    assert back[1] == {"int key": {-3: "neg"}}
    assert back["$dollar"] == {"$tensor": "not a tensor"}
    assert math.isnan(back["floats"][0]) and back["floats"][1:3] == [math.inf, -math.inf]
    assert math.copysign(1, back["floats"][3]) == -1 and back["floats"][4:] == obj["floats"][4:]
    assert back["big"] == 2**100 and back["list"][1:] == obj["list"][1:]
    assert type(back["list"][5]) is bool and type(back["list"][1]) is int
    assert isinstance(back["np"], np.ndarray) and isinstance(back["scalar"], np.float32) and back["scalar"] == 1.5
    assert torch.equal(back["list"][0], x) and back["empty"] == {}


def test_tied_tensors_stay_tied(tmp_path):
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    sd = model.state_dict()
    assert sd["emb.weight"] is not sd["head.weight"]  # state_dict detaches: ties are found by memory
    modelpack.save(sd, tmp_path / "tied.mpk")
    with modelpack.open(tmp_path / "tied.mpk") as pack:
        assert len(pack) == 1
    back = modelpack.load(tmp_path / "tied.mpk")
    assert back["emb.weight"] is back["head.weight"]
    a = np.arange(3.0)
    modelpack.save([a, a, {"again": a}], tmp_path / "np.mpk")
    b = modelpack.load(tmp_path / "np.mpk")
    assert b[0] is b[1] is b[2]["again"]


def test_seed_chapter_examples(tmp_path):
    x = torch.arange(4)
    modelpack.save(x, tmp_path / "x-file")
    x2 = modelpack.load(tmp_path / "x-file")
    assert torch.equal(x2, x) and x2.dtype == torch.int64
    y = torch.zeros(4)
    modelpack.save([x, y], tmp_path / "x-files")
    x2, y2 = modelpack.load(tmp_path / "x-files")
    assert torch.equal(x2, x) and torch.equal(y2, y)
    mydict = {"x": x, "y": y}
    modelpack.save(mydict, tmp_path / "mydict")
    mydict2 = modelpack.load(tmp_path / "mydict")
    assert list(mydict2) == ["x", "y"] and all(torch.equal(mydict2[k], mydict[k]) for k in mydict)


def test_state_dict_keys_are_tensor_names(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    modelpack.save(net.state_dict(), tmp_path / "sd.mpk")
    with modelpack.open(tmp_path / "sd.mpk") as pack:
        assert pack.keys() == list(net.state_dict())
        assert torch.equal(pack["2.weight"], net[2].weight)


@pytest.mark.parametrize(
    "obj, where, words",
    [
        ({"opt": [1, 2, {3}]}, "obj['opt'][2]", "cannot save a 'set'"),
        ([lambda: 1], "obj[0]", "cannot save a 'function'"),
        ({(1, 2): 3}, "obj", "keys must be str or int"),
        ({"b": b"bytes"}, "obj['b']", "cannot save a 'bytes'"),
        ({"o": object()}, "obj['o']", "cannot save a 'object'"),
        ({"s": np.array(["a"])}, "obj['s']", "cannot save a numpy array of dtype <U1"),
    ],
)
def test_unsupported_objects_name_their_path(tmp_path, obj, where, words):
    with pytest.raises(UnsupportedObjectError, match=words) as info:
        modelpack.save(obj, tmp_path / "bad.mpk")
    assert info.value.where == where
    assert not (tmp_path / "bad.mpk").exists() and list(tmp_path.iterdir()) == []


def test_self_containing_list_is_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    with pytest.raises(UnsupportedObjectError, match="contains itself"):
        modelpack.save(loop, tmp_path / "loop.mpk")


def test_metadata_round_trips_and_must_be_strings(tmp_path):
    modelpack.save(torch.zeros(1), tmp_path / "m.mpk", metadata={"author": "me", "épоch": "3"})
    with modelpack.open(tmp_path / "m.mpk") as pack:
        assert pack.metadata == {"author": "me", "épоch": "3"}
    with pytest.raises(UnsupportedObjectError, match="metadata must map str to str"):
        modelpack.save(torch.zeros(1), tmp_path / "m2.mpk", metadata={"epoch": 3})


def test_mmap_tensors_are_writable_copy_on_write(tmp_path):
    path = tmp_path / "w.mpk"
    modelpack.save({"w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    t = modelpack.load(path)["w"]
    t += 1
    assert float(t.sum()) == 1000 and path.read_bytes() == before


def test_open_is_lazy_and_checks_names(tmp_path, monkeypatch):
    modelpack.save({"a": torch.ones(3), "b": torch.zeros(2)}, tmp_path / "l.mpk")
    with modelpack.open(tmp_path / "l.mpk") as pack:
        assert "a" in pack and len(pack) == 2 and list(pack) == ["a", "b"]
        assert torch.equal(pack["b"], torch.zeros(2))
        with pytest.raises(KeyError, match="no tensor 'zz'"):
            pack["zz"]


def test_map_location_moves_tensors(tmp_path):
    modelpack.save({"a": torch.ones(3)}, tmp_path / "d.mpk")
    back = modelpack.load(tmp_path / "d.mpk", map_location="meta")
    assert back["a"].device.type == "meta"


def test_paths_may_be_str_or_pathlike(tmp_path):
    modelpack.save([1, 2], str(tmp_path / "s.mpk"))
    assert modelpack.load(tmp_path / "s.mpk") == [1, 2]
