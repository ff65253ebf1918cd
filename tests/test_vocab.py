"""The vocabulary table: closed, frozen, torch-free, and faithful to torch's own argument names."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from modelpack.errors import SpecError
from modelpack.vocab import LAYERS, OPS, REQUIRED, VOCAB_VERSION, Arg, LayerDef, OpDef, lookup, suggest
from modelpack.vocab.types import freeze_table

ISSUE_LAYERS = """Linear Bilinear Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d BatchNorm1d BatchNorm2d
LayerNorm GroupNorm InstanceNorm2d Dropout Dropout2d Embedding LSTM GRU MultiheadAttention
TransformerEncoderLayer MaxPool1d MaxPool2d AvgPool1d AvgPool2d AdaptiveAvgPool1d AdaptiveAvgPool2d
AdaptiveMaxPool1d AdaptiveMaxPool2d Flatten Unflatten Identity Upsample ReLU ReLU6 LeakyReLU PReLU ELU GELU
SiLU Mish Hardswish Hardsigmoid Sigmoid Tanh Softmax LogSoftmax""".split()
ISSUE_OPS = """add sub mul div matmul cat stack flatten reshape permute transpose mean sum getitem chunk relu relu6
leaky_relu elu gelu silu mish hardswish hardsigmoid sigmoid tanh softmax log_softmax""".split()

# A value for each required argument, to instantiate/call with every argument by keyword.
SAMPLES = {
    "in_features": 4, "out_features": 4, "in1_features": 4, "in2_features": 4, "in_channels": 4,
    "out_channels": 4, "kernel_size": 1, "num_features": 4, "normalized_shape": 4, "num_groups": 2,
    "num_channels": 4, "num_embeddings": 10, "embedding_dim": 4, "input_size": 4, "hidden_size": 4,
    "embed_dim": 4, "num_heads": 2, "d_model": 4, "nhead": 2, "output_size": 1, "dim": 0,
    "unflattened_size": [2, 2], "chunks": 2, "index": 0, "shape": [-1], "dims": [1, 0], "dim0": 0, "dim1": 1,
    "shifts": 1, "pad": [1, 1],
}
# Rows bound to torch's own class/function of the same name; "modelpack" rows are implemented in
# modelpack.torch.ops (tests/test_zoo_real.py and test_build_bindings.py exercise those).
TORCH_LAYERS = sorted(n for n, e in LAYERS.items() if e.impl == "torch")
TORCH_OPS = sorted(n for n, e in OPS.items() if e.impl == "torch")
# ops that need an image-shaped input or one non-default argument to run at all
_OP_CALLS = {"adaptive_avg_pool2d": {}, "avg_pool2d": {}, "pad": {}, "interpolate": {"size": 2}}


def _kwargs(entry: LayerDef | OpDef) -> dict[str, object]:
    return {a.name: (SAMPLES[a.name] if a.required else a.default) for a in entry.args if not a.call}


# --------------------------------------------------------------------------- the table itself


def test_issue_v1_list_is_covered() -> None:
    assert set(ISSUE_LAYERS) <= set(LAYERS)
    assert set(ISSUE_OPS) <= set(OPS)


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        LAYERS["Evil"] = LAYERS["Linear"]  # type: ignore[index]
    with pytest.raises(TypeError):
        OPS["system"] = OPS["relu"]  # type: ignore[index]


def test_duplicate_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        freeze_table([LayerDef("A", 1), LayerDef("A", 1)])


def test_duplicate_arguments_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        LayerDef("A", 1, (Arg("x", "int"), Arg("x", "int")))
    with pytest.raises(ValueError, match="unknown type"):
        Arg("x", "tensor")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_names_are_torch_nn_style(name: str) -> None:
    assert name[0].isupper() and LAYERS[name].name == name


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_names_are_functional_style(name: str) -> None:
    if OPS[name].impl == "aten":  # aten.<op>[.<Overload>], as torch names the overload
        _, op, *overload = name.split(".")  # the op as torch spells it (aten.mT)
        assert name.startswith("aten.") and op and len(overload) <= 1 and OPS[name].name == name
        return
    assert name == name.lower() and OPS[name].name == name


@pytest.mark.parametrize("entry", [*LAYERS.values(), *OPS.values()], ids=lambda e: e.name)
def test_entries_are_consistent(entry: LayerDef | OpDef) -> None:
    assert 1 <= entry.since <= VOCAB_VERSION
    names = [a.name for a in entry.args]
    assert "device" not in names and ("dtype" not in names or entry.impl in ("modelpack", "aten"))
    assert not set(names) & set(entry.omitted)
    assert entry.impl in ("torch", "modelpack", "aten")
    assert (entry.impl == "aten") == (entry.since == 2 and entry.name.startswith("aten."))
    low, high = entry.inputs
    assert low >= (0 if entry.impl in ("modelpack", "aten") else 1) and (high is None or high >= low)
    for a in entry.args:
        if a.choices and not a.required and a.default is not None:
            assert a.default in a.choices


def test_multi_output_entries() -> None:
    assert LAYERS["LSTM"].outputs == 2 and LAYERS["GRU"].outputs == 2
    assert LAYERS["MultiheadAttention"].outputs == 2 and LAYERS["MultiheadAttention"].inputs == (3, 3)
    assert OPS["chunk"].outputs is None
    assert OPS["add"].inputs == (2, 2) and OPS["cat"].inputs == (1, None)


def test_conv_arguments_match_the_brief() -> None:
    conv = {a.name: a for a in LAYERS["Conv2d"].args}
    assert list(conv) == ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                          "groups", "bias", "padding_mode"]
    assert conv["kernel_size"].type == "ints" and conv["kernel_size"].length == 2 and conv["kernel_size"].required
    assert conv["padding"].keywords == ("same", "valid") and conv["padding"].default == 0
    assert conv["padding_mode"].choices == ("zeros", "reflect", "replicate", "circular")
    assert [a.name for a in OPS["flatten"].args] == ["start_dim", "end_dim"]
    assert OPS["flatten"].args[0].default == 0 and LAYERS["Flatten"].args[0].default == 1


# --------------------------------------------------------------------------- lookup


def test_lookup_finds_and_refuses_with_suggestions() -> None:
    assert lookup("Linear", "layer") is LAYERS["Linear"]
    with pytest.raises(SpecError, match="unknown layer 'Linearr'; did you mean 'Linear'"):
        lookup("Linearr", "layer")
    with pytest.raises(SpecError, match="'relu' is an op, write `op: relu`"):
        lookup("relu", "layer")
    with pytest.raises(SpecError, match="known ops: relu"):
        lookup("zzzz", "op")


def test_suggest_prefers_case_insensitive_matches() -> None:
    assert suggest("conv2d", "layer")[0] == "Conv2d"
    assert suggest("LayerNrom", "layer")[0] == "LayerNorm"


def test_vocab_imports_no_torch() -> None:
    code = "import sys, modelpack.vocab; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- faithful to torch


def _torch_params(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p for p in params if p.name not in ("device", "dtype")]


@pytest.mark.parametrize("name", TORCH_LAYERS)
def test_layer_matches_torch_constructor(name: str) -> None:
    nn = pytest.importorskip("torch.nn")
    entry, cls = LAYERS[name], getattr(nn, name)
    module = cls(**_kwargs(entry))  # every argument by keyword: a wrong name is a TypeError
    params = _torch_params(cls)
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:  # LSTM, GRU, Identity, Sigmoid...
        for a in entry.args:
            if not a.required:
                assert getattr(module, a.name) == a.default, a.name
        return
    torch_names = [p.name for p in params if p.name not in entry.omitted]
    assert [a.name for a in entry.args if not a.call] == torch_names
    for a, p in zip([a for a in entry.args if not a.call], (p for p in params if p.name not in entry.omitted)):
        torch_default = REQUIRED if p.default is inspect.Parameter.empty else p.default
        if callable(torch_default):  # TransformerEncoderLayer(activation=F.relu)
            torch_default = torch_default.__name__
        assert a.default == torch_default, a.name


@pytest.mark.parametrize("name", [n for n in TORCH_LAYERS if any(a.call for a in LAYERS[n].args)])
def test_layer_call_arguments_are_forward_keywords_with_torchs_defaults(name: str) -> None:
    nn = pytest.importorskip("torch.nn")
    params = inspect.signature(getattr(nn, name).forward).parameters
    for a in (a for a in LAYERS[name].args if a.call):
        assert a.name in params and params[a.name].default == a.default, a.name


@pytest.mark.parametrize("name", TORCH_OPS)
def test_op_accepts_its_arguments_by_keyword(name: str) -> None:
    torch = pytest.importorskip("torch")
    import operator

    import torch.nn.functional as F

    entry = OPS[name]
    x = torch.ones(2, 2)
    if name == "getitem":
        assert operator.getitem((x, x), SAMPLES["index"]) is x
        return
    fn = getattr(F, name, None) or getattr(torch, name)
    if name in _OP_CALLS:
        x = torch.ones(1, 2, 4, 4)
    low = entry.inputs[0]
    inputs = [[x, x]] if entry.inputs[1] is None else [x] * low
    fn(*inputs, **{**_kwargs(entry), **_OP_CALLS.get(name, {})})  # a wrong keyword is a TypeError


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "softmax", "log_softmax", "silu"])
def test_op_omitted_arguments_exist_in_torch(name: str) -> None:
    pytest.importorskip("torch")
    import torch.nn.functional as F

    params = inspect.signature(getattr(F, name)).parameters
    assert set(OPS[name].omitted) <= set(params)
    for a in OPS[name].args:
        assert a.name in params


def test_spec_doc_names_every_entry() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "SPEC.md").read_text()
    # the generated ATen rows are listed by their own module (vocab/aten.py), which the doc points to
    missing = [name for name in [*LAYERS, *OPS] if f"`{name}`" not in doc and OPS.get(name, LAYERS.get(name)).impl != "aten"]
    assert not missing, f"docs/SPEC.md does not list {missing}"
    assert "modelpack/vocab/aten.py" in doc
