"""modelpack.export: what it writes, what it refuses (and how it says so), and its fixed point."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import modelpack  # noqa: E402
import mp_models as Z  # noqa: E402
from modelpack import ExportError  # noqa: E402
from modelpack.api import Pack, read_spec_text  # noqa: E402
from modelpack.spec import parse_yaml, validate  # noqa: E402
from modelpack.torch.export import ReproductionWarning, export_spec  # noqa: E402

from zoo_models import ZOO, SeedMLP, TiedLM  # noqa: E402

X = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _fx_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    """This file pins the torch.fx tracer's behaviour (the fallback path); the torch.export path is
    tested in tests/test_export_capture.py and tests/models/."""
    import modelpack.torch.export as export_module

    monkeypatch.setattr(export_module, "DEFAULT_CAPTURE", "fx")



def spec_of(model, example=(X,), **kw):
    text, _ = export_spec(model, example, **kw)
    return text, parse_yaml(text)[0]


# ----------------------------------------------------------------------------- the seed's MLP


def test_seed_mlp_lazy_layers_are_materialised_and_recorded(tmp_path):
    torch.manual_seed(0)
    net = SeedMLP()
    x = torch.randn(2, 20)
    modelpack.export(net, tmp_path / "mlp.mpk", (x,))
    nodes = parse_yaml(read_spec_text(tmp_path / "mlp.mpk"))[0]["nodes"]
    assert nodes == [
        {"name": "hidden", "layer": "Linear", "args": {"in_features": 20, "out_features": 256}},
        {"name": "relu", "op": "relu"},
        {"name": "output", "layer": "Linear", "args": {"in_features": 256, "out_features": 10}},
    ]
    clone = modelpack.load_model(tmp_path / "mlp.mpk")
    assert torch.equal(clone(x), net(x))


def test_lazy_module_the_example_never_reaches_is_refused(tmp_path):
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.LazyLinear(4)
            self.spare = nn.LazyLinear(4)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ExportError, match="never called by the example run") as info:
        modelpack.export(Partial(), tmp_path / "m.mpk", (X,))
    assert info.value.where == "spare"
    assert not (tmp_path / "m.mpk").exists()


# ----------------------------------------------------------------------------- the written file


def test_metadata_goes_to_the_manifest(tmp_path):
    model, example, _ = ZOO["mlp"]()
    modelpack.export(model, tmp_path / "m.mpk", example, metadata={"task": "demo", "author": "me"})
    with Pack(tmp_path / "m.mpk") as pack:
        assert pack.metadata == {"task": "demo", "author": "me"}


def test_weights_are_the_state_dict_with_batchnorm_buffers(tmp_path):
    model, example, _ = ZOO["resnet"]()
    modelpack.export(model, tmp_path / "r.mpk", example)
    weights = modelpack.load(tmp_path / "r.mpk")
    state = model.state_dict()
    assert list(weights) == list(state)
    assert all(torch.equal(weights[k], state[k]) for k in state)
    assert "layer2.0.downsample.1.running_var" in weights and "bn1.num_batches_tracked" in weights


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    torch.manual_seed(0)
    model = TiedLM().eval()
    tokens = torch.randint(0, 40, (2, 5))
    modelpack.export(model, tmp_path / "lm.mpk", (tokens,))
    with Pack(tmp_path / "lm.mpk") as pack:
        assert len(pack) == len(model.state_dict()) - 1
    clone = modelpack.load_model(tmp_path / "lm.mpk")
    assert clone.decoder.weight is clone.embed.weight
    assert torch.equal(clone(tokens), model(tokens))


def test_train_flags_and_batchnorm_statistics_are_left_alone(tmp_path):
    model, example, _ = ZOO["resnet"]()
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    flags = {n: m.training for n, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    modelpack.export(model, tmp_path / "r.mpk", example)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


@pytest.mark.parametrize("name", ["resnet", "lstm_classifier", "two_heads", "unet"])
def test_exported_specs_pass_the_shape_checker(name):
    model, example, _ = ZOO[name]()
    modelpack.validate(export_spec(model, example)[0], shapes=True)


def test_export_spec_writes_nothing_and_returns_valid_text():
    model, example, _ = ZOO["unet"]()
    text, spec = export_spec(model, example)
    assert validate(text)["name"] == "UNet"
    assert parse_yaml(text)[0] == spec


# ----------------------------------------------------------------------------- the fixed point


@pytest.mark.parametrize("name", ["seed_mlp", "resnet", "lstm_classifier", "two_heads", "tiny_transformer"])
def test_export_load_export_is_a_fixed_point(tmp_path, name):
    model, example, _ = ZOO[name]()
    modelpack.export(model, tmp_path / "a.mpk", example)
    clone = modelpack.load_model(tmp_path / "a.mpk")
    modelpack.export(clone, tmp_path / "b.mpk", example)
    assert read_spec_text(tmp_path / "b.mpk") == read_spec_text(tmp_path / "a.mpk")
    assert (tmp_path / "b.mpk").read_bytes() == (tmp_path / "a.mpk").read_bytes()


# ----------------------------------------------------------------------------- readability


def test_spec_reads_like_a_hand_written_one():
    model, example, _ = ZOO["resnet"]()
    text, spec = spec_of(model, example)
    node_lines = [line for line in text.splitlines() if line.startswith("  - {")]
    assert len(node_lines) == len(spec["nodes"])  # one node per line
    for noise in ("_tensor_constant", "getattr", "placeholder", "call_module", "bias: true", "stride: 1,",
                  "dilation", "padding_mode", "[3, 3]", "[1, 1]"):
        assert noise not in text, noise
    assert "{name: layer1.0.conv1, layer: Conv2d, args: {in_channels: 8, out_channels: 8, kernel_size: 3, " \
           "padding: 1, bias: false}}" in text
    # `in` only where the input is not the previous node
    assert "{name: add, op: add, in: [layer1.0.bn2, relu]}" in text
    assert spec["inputs"] == {"x": {"shape": ["batch", 3, 16, 16], "dtype": "float32"}}


def test_a_stateless_module_called_twice_gets_one_node_per_call():
    model, example, _ = ZOO["resnet"]()
    names = [n["name"] for n in spec_of(model, example)[1]["nodes"]]
    assert "layer1.0.relu" in names and "layer1.0.relu_1" in names


def test_sequential_indices_are_quoted_names():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    text, spec = spec_of(model)
    assert [n["name"] for n in spec["nodes"]] == ["0", "1", "2"]
    assert '{name: "0", layer: Linear' in text
    assert spec["name"] == "Sequential"


def test_floats_are_written_as_floats_for_any_yaml_reader():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8, eps=1e-6), nn.LeakyReLU(0.2))
    text, spec = spec_of(model)
    assert "eps: 1.0e-06" in text and "negative_slope: 0.2" in text
    assert spec["nodes"][1]["args"]["eps"] == 1e-6


# ----------------------------------------------------------------------------- inputs


def test_inputs_are_named_after_forward_and_keep_their_dtype():
    model, example, _ = ZOO["lstm_classifier"]()
    spec = spec_of(model, example)[1]
    assert spec["inputs"] == {"tokens": {"shape": ["batch", 7], "dtype": "int64"}}


def test_dynamic_dims_name_more_free_sizes(tmp_path):
    model, example, _ = ZOO["lstm_classifier"]()
    modelpack.export(model, tmp_path / "m.mpk", example, dynamic_dims={"tokens": {0: "batch", 1: "seq"}})
    spec = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]
    assert spec["inputs"]["tokens"]["shape"] == ["batch", "seq"]
    longer = torch.randint(1, 50, (3, 11))
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(longer), model(longer))


def test_dynamic_dims_empty_means_every_size_fixed():
    assert spec_of(nn.Sequential(nn.Linear(8, 2)), dynamic_dims={})[1]["inputs"]["input"]["shape"] == [2, 8]


@pytest.mark.parametrize("dims, match", [({"x": {2: "batch"}}, "out of range"),
                                         ({"x": {0: "two words"}}, "not an identifier")])
def test_dynamic_dims_mistakes(dims, match):
    with pytest.raises(ExportError, match=match):
        export_spec(nn.Sequential(nn.Linear(8, 2)), (X,), dynamic_dims={"input": dims["x"]})


def test_keyword_examples_and_fixed_flags():
    class Flagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x, mask=None, log=False):
            y = self.fc(x)
            return F.log_softmax(y, dim=1) if log else y

    spec = spec_of(Flagged(), {"x": X, "log": True})[1]
    assert [n.get("op") for n in spec["nodes"]] == [None, "log_softmax"]
    assert list(spec["inputs"]) == ["x"]


def test_torch_compile_wrapper_is_looked_through():
    class OptimizedModule(nn.Module):  # what torch.compile returns, minus importing torch._dynamo
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, *args):
            return self._orig_mod(*args)

    spec = spec_of(OptimizedModule(nn.Sequential(nn.Linear(8, 2))))[1]
    assert [n["name"] for n in spec["nodes"]] == ["0"]  # not _orig_mod.0


# ----------------------------------------------------------------------------- refusals


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = nn.TransformerDecoderLayer(8, 2)

    def forward(self, x):
        return self.dec(x, x)


class _FFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.fft(self.fc(x)).real


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class _HasBranchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = _Branchy()

    def forward(self, x):
        return self.gate(x)


class _Free(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.scale


class _Const(nn.Module):
    def forward(self, x):
        return x + torch.ones(8)


class _SizeView(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class _Scalar(nn.Module):
    def forward(self, x):
        return x * 0.5


class _Slice(nn.Module):
    def forward(self, x):
        return x[:, 0]


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.fc(x))


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.aux = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(x)


class _Indices(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool1d(2, return_indices=True)

    def forward(self, x):
        return self.pool(x)[0]


class _SoftmaxDtype(nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1, dtype=torch.float64)


class _Len(nn.Module):
    def forward(self, x):
        return x.flatten(len(x) - 1)


class _Iterate(nn.Module):
    def forward(self, x):
        return torch.stack([row for row in x])


class _Hooked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.fc.register_forward_hook(lambda m, i, out: out * 2)

    def forward(self, x):
        return self.fc(x)


_LINE = r"\S*test_export\.py:\d+ `"

REFUSALS = [
    ("unknown layer", _Decoder, X, None,
     r"torch\.nn\.TransformerDecoderLayer is not in the modelpack vocabulary.*nearest: TransformerEncoderLayer"),
    ("unknown function", _FFT, X, None, r"torch\.fft\.fft is not in the modelpack vocabulary.*ops: relu, "),
    ("control flow", _HasBranchy, X, "gate", r"Python control flow on a tensor value.*" + _LINE + r"if x\.sum"),
    ("traced constant", _Const, X, None, r"baked into the trace as a constant"),
    ("shared layer", _Twice, X, "fc", r"'fc' is called more than once"),
    ("omitted argument", _Indices, torch.randn(2, 3, 8), "pool",
     r"MaxPool1d was built with return_indices=True; the spec cannot express return_indices"),
    ("omitted op argument", _SoftmaxDtype, X, None, r"torch\.softmax with dtype=torch\.float64"),
    ("len", _Len, X, None, r"len\(\) of a tensor at " + _LINE),
    ("iteration", _Iterate, X, None, r"iteration over a tensor"),
    ("hook", _Hooked, X, None, r"does not reproduce the original: max abs difference .*forward hooks .*: fc"),
]


@pytest.mark.parametrize("case, make, x, where, match", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_say_what_where_and_why(tmp_path, case, make, x, where, match):
    with pytest.raises(ExportError, match=match) as info:
        modelpack.export(make(), tmp_path / "m.mpk", (x,))
    if where is not None:
        assert info.value.where == where
    assert not (tmp_path / "m.mpk").exists()


def test_a_bare_layer_is_refused_with_the_fix():
    with pytest.raises(ExportError, match=r"single Linear.*nn\.Sequential\(model\)"):
        export_spec(nn.Linear(8, 2), (X,))


def test_source_line_is_the_models_own():
    with pytest.raises(ExportError) as info:
        export_spec(_FFT(), (X,))
    assert re.search(_LINE + r"return torch\.fft\.fft", str(info.value))


def test_trace_errors_are_chained():
    with pytest.raises(ExportError) as info:
        export_spec(_HasBranchy(), (X,))
    assert type(info.value.__cause__).__name__ == "TraceError"


# ----------------------------------------------------------------------------- reproduction policy


class _Nudged(nn.Module):
    """A hook adds 1e-6: the spec (which has no hooks) differs by exactly that."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.fc.register_forward_hook(lambda m, i, out: out + 1e-6)

    def forward(self, x):
        return self.fc(x)


def test_default_is_bit_exact():
    with pytest.raises(ExportError, match=r"max abs difference 1\.\d+e-06 > atol=0; pass atol="):
        export_spec(_Nudged(), (X,))


def test_atol_accepts_a_bounded_difference_with_a_warning():
    with pytest.warns(ReproductionWarning, match=r"max abs difference 1\.\d+e-06"):
        export_spec(_Nudged(), (X,), atol=1e-4)


# ----------------------------------------------------------------------------- tables


@pytest.mark.parametrize("model", [_Free, _SizeView, _Scalar, _Slice, _Unused], ids=lambda m: m.__name__)
def test_constructs_real_models_need_now_export(model, tmp_path):
    """Refused in vocabulary version 1 before issue 5: free parameters, shape arithmetic, literal operands,
    slicing, a module forward never calls (its tensors are kept)."""
    m = model().eval()
    modelpack.export(m, tmp_path / "m.mpk", X)
    clone = modelpack.load_model(tmp_path / "m.mpk")
    assert list(clone.state_dict()) == list(m.state_dict())
    with torch.no_grad():
        assert torch.equal(clone(X), m(X))


def test_every_vocabulary_layer_and_op_is_exportable():
    from modelpack.torch._export_layers import LAYER_TYPES
    from modelpack.torch._export_ops import FUNCTION_RULES, METHOD_RULES
    from modelpack.vocab import LAYERS, OPS

    assert set(LAYER_TYPES.values()) == set(LAYERS)
    from modelpack.torch._export_ops import ATTRIBUTE_RULES, OWN_RULES, QUALIFIED_RULES

    rules = (*FUNCTION_RULES.values(), *METHOD_RULES.values(), *OWN_RULES.values(), *QUALIFIED_RULES.values(),
             *ATTRIBUTE_RULES.values())
    ops = {r.op for r in rules} | {"getitem", "index", "scalar"}  # written by the converter itself
    aten = {n for n, e in OPS.items() if e.impl == "aten"}  # ATen rows: the torch.export path, and a few fx rules
    assert ops - aten == set(OPS) - aten  # (F.batch_norm -> aten.batch_norm)


def test_a_layers_forward_keyword_is_kept_so_the_same_kernel_runs(tmp_path) -> None:
    """need_weights=False picks another attention kernel; dropped, the rebuilt model differs under autograd."""
    torch.manual_seed(0)
    model, x = Z.SelfAttention().eval(), torch.randn(2, 5, 16)
    modelpack.export(model, tmp_path / "m.mpk", x)
    node = next(n for n in parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"] if n["name"] == "mha")
    assert node["layer"] == "MultiheadAttention" and node["args"]["need_weights"] is False
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert torch.equal(rebuilt(x), model(x))  # autograd on: no fast path, the need_weights=False kernel
    again, _ = export_spec(rebuilt, x)  # and the rebuilt model exports to the same node
    assert "need_weights: false" in again


def test_a_forward_keyword_the_row_cannot_say_is_refused() -> None:
    class _Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, is_causal=False)[0]

    with pytest.raises(ExportError, match=r"keyword arguments \(is_causal\).*can say need_weights"):
        export_spec(_Masked(), torch.randn(2, 5, 16), capture="fx")
