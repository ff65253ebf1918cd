"""Shapes by rule (inspect without torch) agree with torch's meta kernels, and inspect stays light."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import mp_models as Z  # noqa: E402
from conftest import run_python  # noqa: E402
from modelpack.spec import expand_blocks, validate  # noqa: E402
from modelpack.spec.shape_rules import rule_shapes  # noqa: E402
from modelpack.torch.shapes import output_shapes  # noqa: E402

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "specs").glob("*.yaml"))


def _one(shape: list, *nodes: dict, other: list | None = None) -> dict:
    inputs = {"x": {"shape": shape, "dtype": "float32"}}
    if other is not None:
        inputs["y"] = {"shape": other, "dtype": "float32"}
    return {"modelpack": 1, "name": "t", "inputs": inputs, "nodes": list(nodes), "outputs": [nodes[-1]["name"]]}


def _layer(layer: str, **args) -> dict:
    return {"name": "n", "layer": layer, "args": args}


def _op(op: str, inputs=None, **args) -> dict:
    return {"name": "n", "op": op, **({"in": inputs} if inputs else {}), **({"args": args} if args else {})}


IMAGE, FIXED = ["batch", 3, "height", "width"], [2, 3, 7, 9]
CASES = {
    "conv-stride": _one(IMAGE, _layer("Conv2d", in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1)),
    "conv-dilation": _one(IMAGE, _layer("Conv2d", in_channels=3, out_channels=4, kernel_size=[3, 5], padding=[1, 2],
                                        dilation=2)),
    "conv-same": _one(IMAGE, _layer("Conv2d", in_channels=3, out_channels=4, kernel_size=3, padding="same")),
    "conv-valid-fixed": _one(FIXED, _layer("Conv2d", in_channels=3, out_channels=4, kernel_size=3, stride=2,
                                           padding="valid")),
    "conv1d": _one(["batch", 4, "seq"], _layer("Conv1d", in_channels=4, out_channels=2, kernel_size=5, stride=3)),
    "maxpool": _one(IMAGE, _layer("MaxPool2d", kernel_size=3, stride=2, padding=1)),
    "maxpool-ceil": _one(FIXED, _layer("MaxPool2d", kernel_size=2, ceil_mode=True)),
    "avgpool-ceil-pad": _one(FIXED, _layer("AvgPool2d", kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "adaptive": _one(IMAGE, _layer("AdaptiveAvgPool2d", output_size=[2, 3])),
    "adaptive-1d": _one(["batch", 4, "seq"], _layer("AdaptiveMaxPool1d", output_size=5)),
    "flatten-layer": _one(IMAGE, _layer("Flatten")),
    "flatten-op": _one(FIXED, _op("flatten", start_dim=0, end_dim=2)),
    "linear": _one(["batch", "seq", 16], _layer("Linear", in_features=16, out_features=5)),
    "batchnorm": _one(IMAGE, _layer("BatchNorm2d", num_features=3)),
    "add-broadcast": _one(["batch", 1, 5], _op("add", ["x", "y"]), other=[4, 1]),
    "mul-broadcast": _one([3, 1], _op("mul", ["x", "y"]), other=["batch", 1, 6]),
}


@pytest.mark.parametrize("name", CASES)
def test_each_rule_agrees_with_torch(name):
    data = validate(CASES[name])
    assert rule_shapes(data, expand_blocks(data)) == output_shapes(data)


@pytest.mark.parametrize("spec", [*Z.ZOO.values(), *EXAMPLES], ids=[*Z.ZOO, *(p.stem for p in EXAMPLES)])
def test_whole_models_agree_with_torch_where_the_rules_cover_them(spec):
    data = validate(spec.read_bytes() if isinstance(spec, Path) else spec)
    found = rule_shapes(data, expand_blocks(data))
    assert found is None or found == output_shapes(data)


def test_the_rules_cover_cnns_and_mlps():
    for spec in (Z.RESNET, Z.LENET, Z.MLP):
        data = validate(spec)
        assert rule_shapes(data, expand_blocks(data)) is not None


@pytest.mark.parametrize("spec", [
    _one(IMAGE, _layer("Conv2d", in_channels=4, out_channels=8, kernel_size=3)),  # 3 channels come in
    _one(["batch", 8], _layer("Linear", in_features=16, out_features=5)),
    _one([2, 3, 2, 2], _layer("Conv2d", in_channels=3, out_channels=8, kernel_size=3)),  # kernel bigger than input
    _one(["batch", 3, 5], _op("add", ["x", "y"]), other=[4, 5]),
    {**_one(["batch", 4], _layer("ReLU")), "inputs": {"x": {"shape": ["batch", 4], "dtype": "int64"}}},
])
def test_where_torch_would_complain_the_rules_step_aside(spec):
    data = validate(spec)
    assert rule_shapes(data, expand_blocks(data)) is None


HEAVY = ("torch", "torch._dynamo", "sympy", "torch.fx.experimental.symbolic_shapes")


def test_inspect_of_a_resnet_imports_no_torch(tmp_path):
    path, _ = Z.packed(tmp_path, "resnet")
    code = ("import io, sys; from modelpack.cli import main; out = io.StringIO(); "
            "assert main(['inspect', sys.argv[1]], out=out) == 0, out.getvalue(); "
            f"print(out.getvalue()); print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = run_python(code, str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert "Linear             [batch, 5]" in proc.stdout  # the shapes are there, by rule
