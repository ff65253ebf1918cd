"""Arrays from other frameworks: anything with ``__dlpack__`` or the numpy array interface saves and loads as numpy."""

from __future__ import annotations

import numpy as np
import pytest

import modelpack
from modelpack.errors import UnsupportedObjectError


class InterfaceOnly:
    """A fake foreign array that speaks only ``__array_interface__`` (as MXNet's and older libraries' do)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr
        self.__array_interface__ = arr.__array_interface__


class DLPackOnly:
    """A fake foreign array that speaks only DLPack (as JAX and CuPy arrays do)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()


class ArrayMethodOnly:
    """Only ``__array__`` (as TensorFlow's EagerTensor without DLPack)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __array__(self, dtype=None, copy=None):
        return self._arr


@pytest.mark.parametrize("wrap", [InterfaceOnly, DLPackOnly, ArrayMethodOnly])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64", "float16", "uint8"])
def test_foreign_array_round_trip_bit_exact(tmp_path, wrap, dtype):
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    modelpack.save({"x": wrap(arr), "n": [wrap(arr[1])]}, tmp_path / "f.mpk")
    back = modelpack.load(tmp_path / "f.mpk")
    assert isinstance(back["x"], np.ndarray) and back["x"].dtype == arr.dtype
    assert back["x"].tobytes() == arr.tobytes() and back["x"].shape == arr.shape
    assert back["n"][0].tobytes() == arr[1].tobytes()


def test_foreign_array_loads_as_torch_when_asked(tmp_path, torch):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    modelpack.save({"x": DLPackOnly(arr)}, tmp_path / "f.mpk")
    back = modelpack.load(tmp_path / "f.mpk", framework="torch")
    assert isinstance(back["x"], torch.Tensor) and torch.equal(back["x"], torch.from_numpy(arr))


def test_framework_numpy_turns_torch_tensors_into_arrays(tmp_path, torch):
    modelpack.save({"w": torch.arange(4.0), "s": np.float32(2.5)}, tmp_path / "t.mpk")
    back = modelpack.load(tmp_path / "t.mpk", framework="numpy")
    assert isinstance(back["w"], np.ndarray) and back["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="framework must be one of"):
        modelpack.load(tmp_path / "t.mpk", framework="jax")


def test_non_contiguous_foreign_view_keeps_the_values(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4).T
    modelpack.save(InterfaceOnly(arr), tmp_path / "t.mpk")
    assert np.array_equal(modelpack.load(tmp_path / "t.mpk"), arr)


def test_foreign_array_of_an_unstorable_dtype_names_the_path(tmp_path):
    arr = np.array(["a", "b"])
    with pytest.raises(UnsupportedObjectError, match=r"obj\['x'\].*dtype <U1"):
        modelpack.save({"x": InterfaceOnly(arr)}, tmp_path / "t.mpk")


def test_plain_object_is_still_refused(tmp_path):
    with pytest.raises(UnsupportedObjectError, match="__dlpack__ or the numpy array interface"):
        modelpack.save({"x": object()}, tmp_path / "t.mpk")


def test_jax_arrays(tmp_path):
    jnp = pytest.importorskip("jax.numpy", reason="jax is not installed (pip install 'modelpack[frameworks]')")
    x = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    b = jnp.ones((2,), dtype=jnp.bfloat16) * 1.5
    modelpack.save({"x": x, "b": b}, tmp_path / "j.mpk")
    with modelpack.open(tmp_path / "j.mpk") as pack:
        assert pack.entries["b"]["dtype"] == "bfloat16"
    back = modelpack.load(tmp_path / "j.mpk", framework="numpy")
    assert back["x"].tobytes() == np.asarray(x).tobytes()
    assert back["b"].dtype.name == "bfloat16" and back["b"].tobytes() == np.asarray(b).tobytes()


def test_tensorflow_tensors(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed (pip install 'modelpack[frameworks]')")
    x = tf.reshape(tf.range(12, dtype=tf.float32), (3, 4))
    modelpack.save([x, tf.zeros(4)], tmp_path / "t.mpk")
    a, z = modelpack.load(tmp_path / "t.mpk")
    assert a.tobytes() == x.numpy().tobytes() and z.tolist() == [0, 0, 0, 0]


class BrokenDLPack:
    """DLPack that fails (a device array numpy cannot read), with no array interface to fall back on."""

    def __dlpack__(self, **kwargs):
        raise BufferError("device memory")

    def __dlpack_device__(self):
        return (2, 0)


def test_unreadable_dlpack_is_a_modelpack_error(tmp_path):
    with pytest.raises(UnsupportedObjectError, match="cannot read a 'BrokenDLPack' through DLPack"):
        modelpack.save({"x": BrokenDLPack()}, tmp_path / "t.mpk")
