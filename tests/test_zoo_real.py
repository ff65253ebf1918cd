"""Real-model constructs (tests/zoo_real.py): export, reload in a fresh process without the classes, compare.

The child is ``python -c`` with only modelpack importable; it checks that neither
``zoo_real`` nor ``torchvision`` was imported, runs each model on the export
example and on inputs of another batch size (and resolution where the model
allows), and reports the max abs difference from the original's outputs.
They compare bit for bit: a MultiheadAttention called with ``need_weights=False``
keeps that forward argument in its layer node, so the rebuilt model takes the same
kernel path as the original, with or without autograd.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack.errors import ExportError  # noqa: E402
from modelpack.torch.export import export_spec  # noqa: E402

from conftest import run_python  # noqa: E402
from zoo_real import REAL_DYNAMIC, REAL_ZOO, TinyViT  # noqa: E402

TOL = 0.0  # bit for bit

_CHILD = r"""
import json, sys
import torch
import modelpack

def leaves(v):
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in leaves(v[k])]
    return [x for item in v for x in leaves(item)] if isinstance(v, (tuple, list)) else [v]

def diff(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb) and all(x.shape == y.shape for x, y in zip(la, lb))
    return max(float((x - y).abs().max()) for x, y in zip(la, lb))

folder, names = sys.argv[1], sys.argv[2:]
report = {}
for name in names:
    model = modelpack.load_model(f"{folder}/{name}.mpk")
    io = modelpack.load(f"{folder}/{name}.io.mpk")
    with torch.no_grad():
        report[name] = {"example": diff(model(*io["example"]), io["example_out"]),
                        "other": diff(model(*io["other"]), io["other_out"]),
                        "keys": list(model.state_dict()) == list(io["keys"])}
report["imported"] = sorted(m for m in sys.modules if m.startswith(("zoo_real", "torchvision")))
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo_real")
    for name, make in REAL_ZOO.items():
        model, example, other = make()
        modelpack.export(model, folder / f"{name}.mpk", example, atol=TOL, dynamic_dims=REAL_DYNAMIC[name])
        with torch.no_grad():
            io = {"example": list(example), "example_out": model(*example), "other": list(other),
                  "other_out": model(*other), "keys": list(model.state_dict())}
        modelpack.save(io, folder / f"{name}.io.mpk")
    proc = run_python(_CHILD, str(folder), *REAL_ZOO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_child_imported_neither_the_classes_nor_torchvision(report):
    assert report["imported"] == []


@pytest.mark.parametrize("name", list(REAL_ZOO))
def test_real_construct_round_trips(report, name):
    result = report[name]
    assert result["keys"], f"{name}: state_dict keys differ from the original's"
    assert result["example"] <= TOL, f"{name}: outputs differ on the export example"
    assert result["other"] <= TOL, f"{name}: outputs differ at another batch size / resolution"


@pytest.mark.parametrize("name", list(REAL_ZOO))
def test_export_load_export_is_a_fixed_point(tmp_path, name):
    model, example, _ = REAL_ZOO[name]()
    text, _ = export_spec(model, example, atol=TOL)
    modelpack.export(model, tmp_path / "a.mpk", example, atol=TOL)
    clone = modelpack.load_model(tmp_path / "a.mpk")
    again, _ = export_spec(clone, example, atol=TOL)
    assert again == text


def test_spec_carries_the_constructs_readably():
    model, example, _ = REAL_ZOO["tiny_vit"]()
    text, spec = export_spec(model, example, atol=TOL)
    nodes = {n["name"]: n for n in spec["nodes"]}
    assert nodes["class_token"] == {"name": "class_token", "layer": "Parameter", "in": [],
                                    "args": {"shape": [1, 1, 32]}}
    assert nodes["stem_norm.weight"]["layer"] == "Parameter"  # a norm subclass traced through
    assert any(n.get("op") == "index" and n["args"]["index"] == [":", 0] for n in spec["nodes"])
    assert any(n.get("op") == "scalar" and n["args"]["value"] == 0.5 for n in spec["nodes"])
    assert any(n.get("op") == "stochastic_depth" for n in spec["nodes"])  # the fx-wrapped helper
    assert "training" not in text  # the mode is the rebuilt module's, never a literal
    assert spec["inputs"]["x"]["shape"][0] == "batch"


def test_rebuilt_model_trains_with_its_dropout(tmp_path):
    model, example, _ = REAL_ZOO["tiny_vit"]()
    modelpack.export(model, tmp_path / "vit.mpk", example, atol=TOL)
    clone = modelpack.load_model(tmp_path / "vit.mpk")
    x = example[0]
    with torch.no_grad():
        ref = clone.eval()(x)
        torch.manual_seed(3)
        a = clone.train()(x)
        torch.manual_seed(4)
        b = clone(x)
        again = clone.eval()(x)
    assert not torch.equal(a, b), "dropout / stochastic depth do not follow .train()"
    assert torch.equal(ref, again)
    clone.train()
    loss = clone(x).square().mean()
    loss.backward()
    assert clone.class_token.grad is not None and clone.blocks[0].gamma.grad is not None


def test_unused_auxiliary_head_keeps_its_weights(tmp_path):
    from modelpack.torch._export_graph import UnreadTensorsWarning

    model, example, _ = REAL_ZOO["shuffle_mix"]()
    with pytest.warns(UnreadTensorsWarning, match="forward never calls module.s. aux"):
        modelpack.export(model, tmp_path / "m.mpk", example, atol=TOL)
    clone = modelpack.load_model(tmp_path / "m.mpk")
    assert torch.equal(clone.state_dict()["aux.weight"], model.state_dict()["aux.weight"])


class _Branches(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class _Captured(torch.nn.Module):
    def forward(self, x):
        return x + torch.tensor([1.0, 2.0])


def test_control_flow_on_data_fails_with_module_line_and_advice():
    with pytest.raises(ExportError, match=r"control flow.*test_zoo_real.py:\d+ `if x.sum\(\) > 0:`.*compute both"):
        export_spec(_Branches(), torch.ones(2, 2))


def test_tensor_created_in_forward_fails_with_advice_on_the_fx_path():
    with pytest.raises(ExportError, match="baked into the trace as a constant.*register it as a parameter"):
        export_spec(_Captured(), torch.ones(2, 2), capture="fx")


def test_tensor_created_in_forward_exports_through_torch_export(tmp_path):
    """By default the fx failure falls through to torch.export, which lifts the constant into the file."""
    x = torch.randn(3, 2)
    modelpack.export(_Captured(), tmp_path / "c.mpk", torch.ones(2, 2))
    assert torch.equal(modelpack.load_model(tmp_path / "c.mpk")(x), _Captured()(x))


def test_batch_size_stays_symbolic_through_shape_arithmetic(tmp_path):
    modelpack.export(TinyViT().eval(), tmp_path / "v.mpk", torch.randn(1, 3, 16, 16), atol=TOL)
    assert modelpack.load_model(tmp_path / "v.mpk")(torch.randn(2, 3, 16, 16)).shape == (2, 10)
