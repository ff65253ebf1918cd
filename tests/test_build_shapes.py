"""Shape propagation: check_shapes (validate --shapes) and output_shapes (inspect)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import mp_models as Z  # noqa: E402
from modelpack import limits  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.errors import ShapeError, SpecError  # noqa: E402
from modelpack.torch.shapes import check_shapes, output_shapes  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_specs_have_consistent_shapes(path):
    assert check_shapes(path.read_text()) == []


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_zoo_specs_have_consistent_shapes(name):
    assert check_shapes(Z.ZOO[name]) == []


def test_linear_mismatch_is_reported_in_the_spec_terms():
    bad = Z.MLP.replace("in_features: 64, out_features: 10", "in_features: 256, out_features: 10")
    [err] = check_shapes(bad)
    assert isinstance(err, ShapeError)
    assert err.where == "output"
    assert err.message == "Linear expects in_features=256, got input [batch, 64]"


@pytest.mark.parametrize("spec, node, message", [
    (Z.LENET.replace("in_channels: 6, out_channels: 16", "in_channels: 5, out_channels: 16"), "conv2",
     "Conv2d expects in_channels=5, got input [batch, 6, 14, 14]"),
    (Z.LSTM.replace("dtype: int64", "dtype: float32"), "embed",
     "Embedding expects integer ids, got input [batch, seq] float32"),
    (Z.LSTM.replace("input_size: 16", "input_size: 15"), "rnn", "LSTM expects input_size=15, got input [batch, seq, 16]"),
    (Z.RESNET.replace("num_features: {param: channels}}}\n      - {name: relu1",
                      "num_features: 4}}\n      - {name: relu1"), "layer1.0.bn1",
     "BatchNorm2d expects num_features=4, got input [batch, 8, 16, 16]"),
    (Z.LENET.replace("{name: flat, op: flatten, args: {start_dim: 1}}",
                     "{name: flat, op: reshape, args: {shape: [-1, 399]}}"), "flat",
     "reshape fails on input [batch, 16, 5, 5]: shape '[-1, 399]' is invalid"),
])
def test_mismatches_name_the_node_and_the_expectation(spec, node, message):
    [err] = check_shapes(spec)
    assert err.where == node
    assert err.message.startswith(message)


def test_derived_symbolic_dims_are_written_in_terms_of_the_symbol():
    spec = Z.LENET.replace("shape: [batch, 1, 28, 28]", "shape: [batch, 1, h, w]").replace("padding: 2", "padding: 0")
    shapes = output_shapes(spec)
    assert shapes["conv1"] == "[batch, 6, h-4, w-4]"
    assert shapes["pool1"] == "[batch, 6, h/2-2, w/2-2]"
    assert "fc1" not in shapes  # a fixed-size Linear after a size-dependent flatten cannot be computed
    [err] = check_shapes(spec)
    assert err.message == "Linear expects in_features=400, got input [batch, ?]"


def test_independent_problems_are_all_reported_once():
    spec = Z.UNET.replace("in_channels: 4, out_channels: 8", "in_channels: 3, out_channels: 8")
    errors = check_shapes(spec)
    assert [e.where for e in errors] == ["mid.conv"]  # downstream nodes are skipped, not re-reported


def test_output_shapes_of_tuples_and_named_symbols():
    shapes = output_shapes(Z.LSTM)
    assert shapes["rnn"] == "([batch, seq, 24], ([1, batch, 24], [1, batch, 24]))"
    assert shapes["last"] == "[batch, 24]"
    assert output_shapes(Z.UNET)["skip"] == "[batch, 8, 16, 16]"


def test_a_spec_over_the_parameter_limit_gives_an_error_not_an_exception():
    with limits.raised(max_param_bytes=100):
        errors = check_shapes(Z.MLP)
        assert output_shapes(Z.MLP) == {}
    assert len(errors) == 1 and isinstance(errors[0], SpecError) and "max_param_bytes" in str(errors[0])


def test_validate_shapes_on_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Z.MLP.replace("in_features: 64, out_features: 10", "in_features: 256, out_features: 10"))
    out = io.StringIO()
    assert main(["validate", "--shapes", str(bad)], out=out) == 1
    assert f"{bad}:8:5: node 'output': Linear expects in_features=256, got input [batch, 64]" in out.getvalue()


_RNN_OPTIONS = [{}, {"batch_first": True}, {"bidirectional": True, "num_layers": 2}, {"proj_size": 3},
                {"batch_first": True, "bidirectional": True, "proj_size": 2}]
_RNN_CASES = [(kind, o) for kind in ("LSTM", "GRU") for o in _RNN_OPTIONS if kind == "LSTM" or "proj_size" not in o]


@pytest.mark.parametrize("kind, options", _RNN_CASES, ids=[f"{k}-{','.join(o) or 'default'}" for k, o in _RNN_CASES])
@pytest.mark.parametrize("unbatched", [False, True])
def test_the_rnn_shape_rule_agrees_with_torch(kind, options, unbatched):
    from modelpack.torch.shapes import rnn_output_like

    rnn = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind](input_size=4, hidden_size=5, **options)
    x = torch.randn(6, 4) if unbatched else torch.randn(3, 6, 4)

    def shapes(value):
        return [shapes(v) for v in value] if isinstance(value, tuple) else list(value.shape)

    assert shapes(rnn_output_like(rnn, x.to("meta"))) == shapes(rnn(x))


def test_block_nodes_get_the_shape_of_their_output():
    shapes = output_shapes(Z.RESNET)
    assert shapes["layer1.0"] == shapes["layer1.0.out"] == "[batch, 8, 16, 16]"
    assert shapes["layer1.0.conv1"] == "[batch, 8, 16, 16]"
