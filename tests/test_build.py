"""build(): spec -> nn.Module with the spec's names, an interpreting forward, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import mp_models as Z  # noqa: E402
from modelpack import limits  # noqa: E402
from modelpack.errors import BuildError, LimitError, SpecError  # noqa: E402
from modelpack.torch.build import Namespace, SpecModule, build, needed_nodes, prepare, subgraph  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))


def _declared_inputs(spec: dict, sizes: dict[str, int]) -> dict[str, "torch.Tensor"]:
    """Random tensors for the spec's inputs, symbolic dims from ``sizes``; ids stay in a small range."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, decl in spec["inputs"].items():
        shape = [sizes.get(d, 3) if isinstance(d, str) else d for d in decl["shape"]]
        if decl.get("dtype", "float32").startswith("int"):
            out[name] = torch.randint(0, 16, shape, generator=g)
        else:
            out[name] = torch.randn(*shape, generator=g)
    return out


def _layer_names(spec: dict) -> list[str]:
    return [n["name"] for n in spec["nodes"] if "layer" in n]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_spec_builds_and_runs(path):
    spec = prepare(path)
    model = build(path).eval()
    assert isinstance(model, SpecModule)
    keys = list(model.state_dict())
    layers = _layer_names(spec)
    assert all(any(k.startswith(name + ".") for name in layers) for k in keys), \
        "every state_dict key sits under a layer node's name"
    for batch in (2, 5):
        out = model(**_declared_inputs(spec, {"batch": batch, "seq": 7}))
        first = next(iter(out.values())) if isinstance(out, dict) else out
        assert first.shape[0] == batch


def test_example_specs_exist():
    assert {p.stem for p in EXAMPLES} >= {"mlp", "resnet_small"}


def test_state_dict_keys_equal_the_hand_written_model():
    """The same architecture written in torch has exactly the keys (and shapes) the spec builds."""
    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.layer1 = nn.Sequential(Block(8), Block(8))
            self.fc = nn.Linear(8, 5)

    want = {k: tuple(v.shape) for k, v in Net().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in build(Z.RESNET).state_dict().items()}
    assert got == want
    assert list(got) == list(want)


def test_dotted_names_nest_as_plain_containers_with_digit_parts():
    model = build(Z.RESNET)
    assert isinstance(model.layer1, Namespace)
    assert isinstance(model.get_submodule("layer1.0"), Namespace)
    assert isinstance(model.get_submodule("layer1.1.conv2"), nn.Conv2d)
    assert "layer1.1.bn2.running_var" in model.state_dict()


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_zoo_builds_and_runs(name):
    model = Z.built(name)
    out = model(*Z.example_inputs(name))
    assert isinstance(out, dict if name == "gru" else torch.Tensor)


def test_seeded_build_is_reproducible_and_equals_torch_init():
    torch.manual_seed(3)
    a = build(Z.MLP)
    torch.manual_seed(3)
    hidden, output = nn.Linear(20, 64), nn.Linear(64, 10)
    assert torch.equal(a.hidden.weight, hidden.weight) and torch.equal(a.output.bias, output.bias)


def test_layer_arguments_are_the_spec_args_with_vocabulary_defaults():
    model = build(Z.LENET)
    assert model.conv1.padding == (2, 2) and model.conv1.stride == (1, 1) and model.conv1.bias is not None
    assert model.pool1.kernel_size == 2 and model.pool1.stride == 2  # stride None -> kernel_size (torch)
    assert model.spec["nodes"][0]["args"] == {"in_channels": 1, "out_channels": 6, "kernel_size": 5,
                                              "padding": 2}


# --------------------------------------------------------------------------- inputs and outputs


def test_inputs_by_position_or_name():
    model = build(Z.MLP)
    x = torch.randn(3, 20)
    assert torch.equal(model(x), model(x=x))


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m(), "missing input"),
    (lambda m, x: m(x, x), "takes 1 input"),
    (lambda m, x: m(y=x), "unknown input 'y'"),
    (lambda m, x: m(x, x=x), "both by position and by name"),
])
def test_bad_inputs_name_the_expected_ones(call, message):
    model = build(Z.MLP)
    with pytest.raises(TypeError, match=message):
        call(model, torch.randn(2, 20))


def test_outputs_list_of_several_is_a_tuple_and_mapping_is_a_dict():
    several = Z.MLP.replace("outputs: [output]", "outputs: [output, hidden]")
    out = build(several)(torch.randn(2, 20))
    assert isinstance(out, tuple) and [o.shape[-1] for o in out] == [10, 64]
    named = build(Z.GRU)(*Z.example_inputs("gru"))
    assert set(named) == {"logits", "hidden"}


def test_multi_output_values_are_taken_apart_by_getitem():
    model = build(Z.LSTM).eval()
    tokens = Z.example_inputs("lstm")[0]
    rnn_out, (h_n, _) = model.rnn(model.embed(tokens))
    want = model.head(torch.cat([rnn_out.mean(1), h_n[0]], dim=1))
    assert torch.equal(model(tokens), want)


def test_chunk_and_variadic_ops():
    spec = """\
modelpack: 1
inputs: {x: {shape: [batch, 6]}, y: {shape: [batch, 6]}}
nodes:
  - {name: parts, op: chunk, in: x, args: {chunks: 3, dim: 1}}
  - {name: p2, op: getitem, args: {index: 2}}
  - {name: joined, op: stack, in: [p2, p2, p2], args: {dim: 0}}
  - {name: both, op: cat, in: [x, y], args: {dim: 1}}
outputs: [joined, both]
"""
    x, y = torch.randn(2, 6), torch.randn(2, 6)
    joined, both = build(spec)(x, y)
    assert torch.equal(joined, torch.stack([x[:, 4:]] * 3))
    assert torch.equal(both, torch.cat([x, y], 1))


def test_swapping_a_layer_takes_effect():
    model = build(Z.MLP)
    model.output = nn.Linear(64, 3)
    assert model(torch.randn(2, 20)).shape == (2, 3)


def test_a_failing_node_is_named_in_the_exception():
    model = build(Z.MLP)
    with pytest.raises(RuntimeError) as info:  # shapes are checked before any node runs; dtypes are not
        model(torch.randn(2, 20, dtype=torch.float64))
    assert "while running node 'hidden' (layer Linear)" in "\n".join(info.value.__notes__)


def test_op_args_resolve_refs_at_call_time():
    spec = """\
modelpack: 1
inputs: {x: {shape: [batch, 6]}, n: {shape: [], dtype: int64}}
nodes:
  - {name: r, op: reshape, in: x, args: {shape: [{ref: n}, -1]}}
outputs: [r]
"""
    model = build(spec)
    step = model._steps[0]
    assert step.has_refs and step.kwargs == {"shape": ({"ref": "n"}, -1)}
    from modelpack.torch.build import _resolve

    assert _resolve(step.kwargs, {"n": 3}) == {"shape": (3, -1)}


# --------------------------------------------------------------------------- sources and errors


def test_spec_sources_path_text_and_dict(tmp_path):
    path = tmp_path / "mlp.yaml"
    path.write_text(Z.MLP)
    keys = list(build(Z.MLP).state_dict())
    assert list(build(path).state_dict()) == keys
    assert list(build(str(path)).state_dict()) == keys
    assert list(build(prepare(Z.MLP)).state_dict()) == keys


def test_a_model_file_is_refused_with_a_hint(tmp_path):
    with pytest.raises(BuildError, match="load_model"):
        build(tmp_path / "model.mpk")


def test_an_invalid_spec_is_never_built():
    with pytest.raises(SpecError, match="in_features"):
        build(Z.MLP.replace("in_features: 20", "in_features: -1"))
    with pytest.raises(SpecError, match="unknown layer 'Linearr'"):
        build(Z.MLP.replace("layer: Linear,", "layer: Linearr,", 1))


def test_torch_refusing_arguments_names_the_node():
    spec = Z.LENET.replace("in_channels: 6, out_channels: 16, kernel_size: 5",
                           "in_channels: 6, out_channels: 16, kernel_size: 5, groups: 4")
    with pytest.raises(BuildError, match=r"while building node 'conv2' \(layer Conv2d\): ValueError: "
                                         r"in_channels must be divisible by groups") as info:
        build(spec)
    assert isinstance(info.value.__cause__, ValueError)


def test_parameter_bytes_are_checked_before_allocating():
    huge = Z.MLP.replace("in_features: 64, out_features: 10", "in_features: 64, out_features: 1000000000")
    with limits.raised(max_param_bytes=1 << 30):
        with pytest.raises(LimitError, match="parameter and buffer bytes .* max_param_bytes"):
            build(huge)
    with limits.raised(max_param_bytes=4000):
        with pytest.raises(LimitError, match="node 'hidden'"):
            build(Z.MLP)


def test_meta_build_allocates_nothing():
    model = build(Z.RESNET, device="meta")
    assert all(t.is_meta for t in model.state_dict().values())


# --------------------------------------------------------------------------- cutting


def test_subgraph_keeps_only_what_the_outputs_need():
    spec = prepare(Z.LSTM)
    assert needed_nodes(spec, ["pooled"]) == ["embed", "rnn", "seq_out", "pooled"]
    cut = subgraph(spec, ["pooled"])
    assert [n["name"] for n in cut["nodes"]] == ["embed", "rnn", "seq_out", "pooled"]
    assert cut["outputs"] == ["pooled"]
    assert set(build(cut).state_dict()) == {k for k in build(Z.LSTM).state_dict() if not k.startswith("head.")}


def test_subgraph_drops_inputs_it_does_not_read():
    spec = prepare(Z.TIED_LM.replace("tokens: {shape: [batch, seq], dtype: int64}",
                                     "tokens: {shape: [batch, seq], dtype: int64}\n  other: {shape: [batch]}")
                   .replace("{name: embed, layer: Embedding,", "{name: embed, layer: Embedding, in: tokens,")
                   .replace("outputs: [decoder]", "outputs: [decoder, other]"))
    assert list(subgraph(spec, ["norm"])["inputs"]) == ["tokens"]


def test_subgraph_refuses_unknown_names():
    with pytest.raises(BuildError, match="cannot cut the graph at 'nope'"):
        subgraph(prepare(Z.MLP), ["nope"])


@pytest.mark.parametrize("extra", [{"device": "cuda"}, {"dtype": "float64"}, {"_weight": None}])
def test_build_refuses_arguments_outside_the_vocabulary_even_after_validation(extra):
    """Defence in depth: a dict that skipped validation still cannot pass torch-only kwargs."""
    from modelpack.torch.build import build_validated

    spec = prepare(Z.MLP)
    spec["nodes"][0]["args"].update(extra)
    with pytest.raises(BuildError, match=rf"while building node 'hidden' \(layer Linear\): unexpected "
                                         rf"argument\(s\) {next(iter(extra))}; Linear takes: in_features, "
                                         r"out_features, bias"):
        build_validated(spec)


def test_build_refuses_names_outside_the_tables_even_after_validation():
    from modelpack.torch.build import build_validated

    spec = prepare(Z.MLP)
    spec["nodes"][1] = {"name": "act", "op": "__import__", "in": ["hidden"]}
    with pytest.raises(BuildError, match="unknown op '__import__'; known: relu, relu6"):
        build_validated(spec)


def test_parameter_and_buffer_rows_start_at_zero_when_built_to_train() -> None:
    """build() of a spec to train from scratch: no leftover memory (possibly NaN) in state-holding rows."""
    text = ("modelpack: 1\ninputs: {x: {shape: [batch, 4]}}\nnodes:\n"
            "  - {name: bias, layer: Parameter, args: {shape: [64, 4]}, in: []}\n"
            "  - {name: scale, layer: Buffer, args: {shape: [4], dtype: float16}, in: []}\n"
            "  - {name: y, op: add, in: [x, bias]}\n  - {name: z, op: mul, in: [y, scale]}\noutputs: [z]\n")
    model = build(text)
    assert torch.equal(model.bias, torch.zeros(64, 4)) and torch.equal(model.scale, torch.zeros(4, dtype=torch.float16))
