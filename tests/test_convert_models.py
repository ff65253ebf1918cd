"""Converters that need torch: torch state dicts, .mpk models to ONNX, Hugging Face folders to full models."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import modelpack
from modelpack.errors import ConvertError

from conftest import bits_equal

torch = pytest.importorskip("torch")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


# --------------------------------------------------------------------------- torch state dicts


@pytest.mark.parametrize("legacy", [False, True])
def test_state_dict_round_trip(tmp_path, legacy):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sd = net.state_dict()
    sd["extra"] = {"step": 7, "lr": 0.5, "bf": torch.ones(2, dtype=torch.bfloat16)}
    torch.save(sd, tmp_path / "w.pt", _use_new_zipfile_serialization=not legacy)
    modelpack.convert(tmp_path / "w.pt", tmp_path / "w.mpk")
    back = modelpack.load(tmp_path / "w.mpk")
    assert list(back) == list(sd)
    for k, v in net.state_dict().items():
        assert bits_equal(back[k], v), k
    assert back["extra"]["step"] == 7 and bits_equal(back["extra"]["bf"], sd["extra"]["bf"])


def test_state_dict_with_arbitrary_objects_stays_refused(tmp_path, capsys):
    torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ConvertError, match=r"torch.load\(weights_only=True\) refused it.*never unpickles"):
        modelpack.convert(tmp_path / "evil.pth", tmp_path / "e.mpk")
    assert "pwned" not in capsys.readouterr().out
    (tmp_path / "raw.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConvertError, match="refused it"):
        modelpack.convert(tmp_path / "raw.bin", tmp_path / "e.mpk")
    assert "pwned" not in capsys.readouterr().out and not (tmp_path / "e.mpk").exists()


# --------------------------------------------------------------------------- ONNX


def _onnx_models():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    return {"mlp": (mlp.eval(), (4, 20)), "cnn": (cnn.eval(), (2, 3, 16, 16))}


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_mpk_to_onnx_agrees_with_load_model(tmp_path, which):
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'modelpack[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'modelpack[onnx]')")
    net, shape = _onnx_models()[which]
    modelpack.export(net, tmp_path / "m.mpk", example_inputs=(torch.randn(*shape),))
    modelpack.convert(tmp_path / "m.mpk", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[0] == "batch" and inp.shape[1:] == list(shape[1:])  # the dynamic dim is kept, by name
    model = modelpack.load_model(tmp_path / "m.mpk")
    for batch in (1, 5):
        x = torch.randn(batch, *shape[1:])
        (got,) = session.run(None, {inp.name: x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_onnx_needs_a_model_pack(tmp_path):
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'modelpack[onnx]')")
    modelpack.save({"w": torch.ones(2)}, tmp_path / "w.mpk")
    with pytest.raises(modelpack.ModelPackError):
        modelpack.convert(tmp_path / "w.mpk", tmp_path / "w.onnx")


# --------------------------------------------------------------------------- Hugging Face folders


def _hf_folder(tmp_path, transformers):
    config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=32, vocab_size=32,
                                      max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "hf")
    return model


def test_hf_folder_loads_through_the_converter(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    from modelpack.converters.hf import load_hf_model

    model = _hf_folder(tmp_path, transformers)
    again = load_hf_model(tmp_path / "hf")
    assert type(again) is type(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_hf_folder_with_pickled_weights_is_refused(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    _hf_folder(tmp_path, transformers)
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(ConvertError, match="never unpickles .bin weights"):
        modelpack.convert(tmp_path / "hf", tmp_path / "m.mpk")


def test_hf_folder_to_full_model(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    model = _hf_folder(tmp_path, transformers)
    modelpack.convert(tmp_path / "hf", tmp_path / "m.mpk")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0]])
    clone = modelpack.load_model(tmp_path / "m.mpk")
    with torch.no_grad():
        out = clone(ids)
        assert torch.equal(out["logits"] if isinstance(out, dict) else out, model(ids).logits)
