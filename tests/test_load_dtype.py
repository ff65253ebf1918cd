"""dtype and device at load: floating tensors cast one at a time, integers and bools never; device_map by prefix."""

from __future__ import annotations

import numpy as np
import pytest

import modelpack
from modelpack import api
from modelpack.errors import UnsupportedObjectError

torch = pytest.importorskip("torch")


def _obj():
    g = torch.Generator().manual_seed(0)
    return {"enc": {"w": torch.randn(4, 3, generator=g), "h": torch.randn(2, generator=g).half()},
            "dec": {"w": torch.randn(3, dtype=torch.float64, generator=g), "idx": torch.arange(5),
                    "mask": torch.tensor([True, False])},
            "np": np.ones(3, np.float32)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, "bfloat16", "float32", "torch.float16"])
def test_dtype_casts_floating_only(tmp_path, dtype):
    api.save(_obj(), tmp_path / "f.mpk")
    out = api.load(tmp_path / "f.mpk", dtype=dtype)
    want = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype.removeprefix("torch."))
    src = _obj()
    for part, key in [("enc", "w"), ("enc", "h"), ("dec", "w")]:
        assert out[part][key].dtype == want
        assert torch.equal(out[part][key], src[part][key].to(want))  # the same rounding as Tensor.to
    assert out["dec"]["idx"].dtype == torch.int64 and torch.equal(out["dec"]["idx"], src["dec"]["idx"])
    assert out["dec"]["mask"].dtype == torch.bool


def test_auto_and_none_keep_the_file_dtype(tmp_path):
    api.save(_obj(), tmp_path / "f.mpk")
    for dtype in (None, "auto"):
        out = api.load(tmp_path / "f.mpk", dtype=dtype)
        assert out["enc"]["h"].dtype == torch.float16 and out["dec"]["w"].dtype == torch.float64


def test_numpy_arrays_are_returned_as_saved(tmp_path):
    api.save(_obj(), tmp_path / "f.mpk")
    assert api.load(tmp_path / "f.mpk", dtype=torch.bfloat16)["np"].dtype == np.float32


@pytest.mark.parametrize("bad", [torch.int32, "int8", "float99", 3])
def test_non_floating_dtype_refused(tmp_path, bad):
    api.save({"w": torch.ones(2)}, tmp_path / "f.mpk")
    with pytest.raises(UnsupportedObjectError, match="dtype"):
        api.load(tmp_path / "f.mpk", dtype=bad)


def test_cast_is_one_tensor_at_a_time(tmp_path, monkeypatch):
    """Each tensor is cast right after it is read: the mapped source is never all converted at once."""
    api.save({f"t{i}": torch.ones(10) for i in range(5)}, tmp_path / "f.mpk")
    from modelpack.torch import placement

    order = []
    real = placement.place

    def spy(t, **kw):
        order.append(("place", t.dtype))
        return real(t, **kw)

    monkeypatch.setattr(placement, "place", spy)
    out = api.load(tmp_path / "f.mpk", dtype=torch.float16)
    assert len(order) == 5 and all(v.dtype == torch.float16 for v in out.values())


def test_device_map_by_prefix(tmp_path):
    api.save(_obj(), tmp_path / "f.mpk")
    out = api.load(tmp_path / "f.mpk", device_map={"enc": "meta", "": "cpu", "dec.idx": "meta"})
    assert out["enc"]["w"].is_meta and out["enc"]["h"].is_meta
    assert out["dec"]["w"].device.type == "cpu" and out["dec"]["idx"].is_meta
    with pytest.raises(KeyError, match="device_map has no entry for tensor"):
        api.load(tmp_path / "f.mpk", device_map={"enc": "cpu"})
    assert api.device_for("encoder.w", {"enc": "meta", "": "cpu"}) == "cpu"  # dotted boundaries only


def test_map_location_cuda_is_guarded(tmp_path):
    """Without a GPU the pinned path is not taken; with one, the tensor lands there."""
    api.save({"w": torch.arange(6.0)}, tmp_path / "f.mpk")
    if torch.cuda.is_available():
        out = api.load(tmp_path / "f.mpk", map_location="cuda", dtype=torch.float16)
        assert out["w"].is_cuda and out["w"].dtype == torch.float16
        assert torch.equal(out["w"].cpu(), torch.arange(6.0).half())
    else:
        out = api.load(tmp_path / "f.mpk", map_location="meta", dtype=torch.float16)
        assert out["w"].is_meta and out["w"].dtype == torch.float16


def test_load_model_dtype_and_device_map(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 2)).eval()
    x = torch.randn(4, 8)
    modelpack.export(model, tmp_path / "m.mpk", x)
    half = modelpack.load_model(tmp_path / "m.mpk", dtype=torch.bfloat16).state_dict()
    assert half["0.weight"].dtype == torch.bfloat16 and half["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(half["0.weight"], model[0].weight.to(torch.bfloat16))
    auto = modelpack.load_model(tmp_path / "m.mpk", dtype="auto")
    assert torch.equal(auto(x), model(x))
    placed = modelpack.load_model(tmp_path / "m.mpk", device_map={"0": "meta", "": "cpu"})
    params = dict(placed.named_parameters())
    assert params["0.weight"].is_meta and params["2.weight"].device.type == "cpu"


def test_load_model_from_bytes(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    x = torch.randn(2, 3)
    modelpack.export(model, tmp_path / "m.mpk", x)
    rebuilt = modelpack.load_model((tmp_path / "m.mpk").read_bytes())
    assert torch.equal(rebuilt(x), model(x))
