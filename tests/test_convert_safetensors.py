"""safetensors <-> .mpk: files written by the safetensors library, HF sharded folders, hostile headers."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import modelpack
from modelpack.cli import main
from modelpack.converters.safetensors import read_safetensors
from modelpack.errors import ConvertError

from conftest import bits_equal, run_python

st_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")


def _tensors(torch):
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed.weight": torch.randn(7, 5, generator=g).bfloat16(),
        "model.layers.0.w": torch.randn(4, 4, generator=g),
        "model.layers.0.b": torch.randn(4, generator=g).half(),
        "f8": torch.randn(9, generator=g).to(torch.float8_e4m3fn),
        "f8b": torch.randn(3, generator=g).to(torch.float8_e5m2),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "odd/name:x": torch.ones(2, dtype=torch.int8),  # not a valid member name: kept as the dict key
    }


def test_library_file_round_trips_byte_for_byte(tmp_path, torch):
    tensors = _tensors(torch)
    meta = {"format": "pt", "note": "héllo"}
    st_torch.save_file(tensors, tmp_path / "m.safetensors", metadata=meta)
    modelpack.convert(tmp_path / "m.safetensors", tmp_path / "m.mpk")
    with modelpack.open(tmp_path / "m.mpk") as pack:
        assert pack.metadata == meta
    back = modelpack.load(tmp_path / "m.mpk")
    assert list(back) == list(read_safetensors(tmp_path / "m.safetensors").names())
    for name, t in tensors.items():
        assert bits_equal(back[name], t), name
    modelpack.convert(tmp_path / "m.mpk", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()
    assert not (tmp_path / "back.yaml").exists()  # no spec in a weights-only pack


def test_numpy_view_without_torch(tmp_path, torch):
    st_torch.save_file({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "m.safetensors")
    modelpack.convert(tmp_path / "m.safetensors", tmp_path / "m.mpk")
    code = ("import sys, modelpack; d = modelpack.load(sys.argv[1], framework='numpy'); "
            "print(type(d['w']).__name__, d['w'].tolist(), 'torch' in sys.modules)")
    proc = run_python(code, str(tmp_path / "m.mpk"))
    assert proc.stdout.split("\n")[0] == "ndarray [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] False", proc.stderr


def test_safetensors_conversions_and_digest_never_import_torch(tmp_path):
    pytest.importorskip("safetensors.numpy")
    code = """
import sys, numpy as np, modelpack
from safetensors.numpy import save_file
d = sys.argv[1]
save_file({"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), dtype=np.int8)}, d + "/x.safetensors",
          metadata={"k": "v"})
modelpack.convert(d + "/x.safetensors", d + "/x.mpk")
modelpack.convert(d + "/x.mpk", d + "/y.safetensors")
print(modelpack.digest(d + "/x.mpk")[:7], open(d + "/x.safetensors", "rb").read() == open(d + "/y.safetensors", "rb").read(),
      "torch" in sys.modules)
"""
    proc = run_python(code, str(tmp_path))
    assert proc.stdout.strip() == "sha256: True False", proc.stderr


def test_hf_sharded_folder_from_save_pretrained(tmp_path, torch):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    modelpack.convert(tmp_path / "hf", tmp_path / "w.mpk", src_format="safetensors")
    back = modelpack.load(tmp_path / "w.mpk")
    expected = {}
    for shard in sorted((tmp_path / "hf").glob("*.safetensors")):
        expected.update(st_torch.load_file(shard))
    assert sorted(back) == sorted(expected)
    for name, t in expected.items():
        assert bits_equal(back[name], t), name
    # and back out to a sharded folder that transformers loads
    modelpack.convert(tmp_path / "w.mpk", tmp_path / "out", dst_format="safetensors")
    (tmp_path / "out" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_sharded_index_that_lies_is_refused(tmp_path, torch):
    st_torch.save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConvertError, match="tensor 'b': listed in the index, absent from shard 's1.safetensors'"):
        modelpack.convert(tmp_path, tmp_path / "w.mpk")
    index["weight_map"] = {"a": "../../etc/passwd.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConvertError, match="not a plain .safetensors file name"):
        modelpack.convert(tmp_path, tmp_path / "w.mpk")


def _raw(header: dict | bytes, data: bytes = b"", n: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if n is None else n) + text + data


@pytest.mark.parametrize("blob, words", [
    (b"abc", "fewer than the 8-byte header length"),
    (_raw({}, n=1 << 40), "larger than the file"),
    (_raw(b"[1]"), "not a JSON object"),
    (_raw(b'{"a": 1, "a": 2}'), "key 'a' appears twice"),
    (_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "hold 4 bytes; shape \\[2\\]"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "leaves a gap"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
           "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "overlaps"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 6), "cover 4 bytes of a 6-byte"),
    (_raw({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "dtype 'Q7' is not supported"),
    (_raw({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "non-negative integers"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, b"\0" * 4), "exactly the keys"),
    (_raw({"__metadata__": {"k": 1}}), "__metadata__ must map strings to strings"),
])
def test_hostile_safetensors_headers(tmp_path, blob, words):
    (tmp_path / "bad.safetensors").write_bytes(blob)
    with pytest.raises(ConvertError, match=words):
        modelpack.convert(tmp_path / "bad.safetensors", tmp_path / "out.mpk")
    assert not (tmp_path / "out.mpk").exists()


def test_only_flat_dicts_convert_to_safetensors(tmp_path):
    modelpack.save({"a": [np.ones(2)]}, tmp_path / "n.mpk")
    with pytest.raises(ConvertError, match="only a flat dict of name -> dense tensor"):
        modelpack.convert(tmp_path / "n.mpk", tmp_path / "n.safetensors")


def test_model_pack_to_safetensors_writes_the_spec_beside(tmp_path, torch):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    modelpack.export(net, tmp_path / "net.mpk", example_inputs=(torch.randn(2, 3),))
    modelpack.convert(tmp_path / "net.mpk", tmp_path / "net.safetensors")
    assert (tmp_path / "net.yaml").read_text() == modelpack.open(tmp_path / "net.mpk").spec_text
    loaded = st_torch.load_file(tmp_path / "net.safetensors")
    assert sorted(loaded) == sorted(net.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_cli_convert_and_format_flags(tmp_path, torch, capsys):
    st_torch.save_file({"w": torch.ones(3)}, tmp_path / "weights.bin.st")
    assert main(["convert", str(tmp_path / "weights.bin.st"), str(tmp_path / "w.mpk")]) == 1
    assert "pass --from" in capsys.readouterr().err
    assert main(["convert", "--from", "safetensors", str(tmp_path / "weights.bin.st"), str(tmp_path / "w.mpk"),
                 "--sha256"]) == 0
    with modelpack.open(tmp_path / "w.mpk") as pack:
        assert "sha256" in pack.entries["w"]
    assert main(["convert", str(tmp_path / "w.mpk"), str(tmp_path / "x.onnx.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "w.mpk"), str(tmp_path / "y.mpk")]) == 1
    assert "cannot convert mpk to mpk" in capsys.readouterr().err
