"""The torch.export capture path (``capture="export"``, and the default with ``dynamic_shapes``).

What the rebuilt model keeps beyond its outputs: every state_dict key (tied weights, non-persistent
buffers), the live train/eval mode of dropout, the size bounds torch.export records; what export
leaves out with a warning (a Python object returned beside the tensors); and the fallback to exact
ops when a folded layer would not reproduce the model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.api import read_spec_text  # noqa: E402
from modelpack.spec import parse_yaml  # noqa: E402


class _Cache:
    """A stand-in for a KV cache object: state a model hands back beside its tensors."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []


class _WithCache(nn.Module):
    """Returns a tensor and a Python object; the first call's cache starts as an empty [0] tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.empty = torch.tensor([])  # a plain attribute: torch.export lifts it as a constant

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        cache = _Cache()
        k = torch.cat([self.empty, self.proj(x)], dim=-1)  # torch skips a [0] operand
        cache.keys.append(k)
        return {"y": k.relu() * 2, "cache": cache}


def test_an_object_output_is_left_out_with_a_warning_and_the_tensors_kept(tmp_path) -> None:
    from modelpack.torch.export import ExportWarning

    torch.manual_seed(0)
    model, x = _WithCache().eval(), torch.randn(3, 4)
    with pytest.warns(ExportWarning, match=r"'cache' \(_Cache\) is a Python object, not a tensor.*returns 'y'"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())  # the skipped empty constant is not stored
    got = rebuilt(torch.randn(5, 4) * 0 + x[:1])
    assert list(got) == ["y"] and torch.equal(got["y"], model(x[:1].expand(5, 4))["y"])
    assert "forward" not in vars(model)  # the instance is left as it was


def test_a_layer_that_computes_more_than_its_row_says_stays_as_its_ops(tmp_path) -> None:
    """A forward hook doubles the Linear's output: folded to a Linear node it would not reproduce, so
    export keeps that call as its exact ops instead of approximating it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    model[0].register_forward_hook(lambda module, inputs, out: out * 2)
    x = torch.randn(2, 4)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    spec = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]
    assert not any(n.get("layer") == "Linear" for n in spec["nodes"])
    assert any(n.get("op") == "aten.linear" for n in spec["nodes"])
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert torch.equal(rebuilt(x), model(x))


class _Rotary(nn.Module):
    """A table kept out of the state_dict (register_buffer(persistent=False)), as RoPE caches are."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("inv_freq", torch.arange(8.0) / 8, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.inv_freq.cos()


def test_a_non_persistent_buffer_stays_out_of_state_dict_and_its_values_travel(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _Rotary().eval(), torch.randn(3, 8)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    nodes = {n["name"]: n for n in parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]}
    assert nodes["inv_freq"]["args"]["persistent"] is False
    assert "inv_freq" in modelpack.load(tmp_path / "m.mpk")  # the file holds it
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict()) == ["proj.weight", "proj.bias"]
    assert torch.equal(dict(rebuilt.named_buffers())["inv_freq"], model.inv_freq)
    assert torch.equal(rebuilt(x), model(x))


class _Drops(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.dropout(self.drop(self.a(x)), 0.3, self.training))


def test_dropout_captured_in_eval_mode_follows_the_live_mode_after_reload(tmp_path) -> None:
    """torch.export sees dropout(train=False) in eval mode; the rebuilt model drops out again after .train()."""
    torch.manual_seed(0)
    model, x = _Drops(), torch.randn(4, 8)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    nodes = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]
    assert [n.get("layer") or n.get("op") for n in nodes] == ["Linear", "Dropout", "dropout", "Linear"]
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    for mode in (True, False):
        model.train(mode), rebuilt.train(mode)
        torch.manual_seed(1)
        want = model(x)
        torch.manual_seed(1)
        assert torch.equal(rebuilt(x), want), mode
    model.train()
    torch.manual_seed(1)
    assert not torch.equal(model(x), rebuilt.eval()(x))  # dropout really is active in train mode


class _TiedTwice(nn.Module):
    """An embedding, an output layer sharing its weight, and a third key for it that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Embedding(20, 8)
        self.embed = nn.Embedding(20, 8)
        self.embed.weight = self.shared.weight
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.shared.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


def test_tied_weights_keep_every_key_and_stay_one_tensor_through_torch_export(tmp_path) -> None:
    torch.manual_seed(0)
    model, ids = _TiedTwice().eval(), torch.randint(0, 20, (2, 5))
    modelpack.export(model, tmp_path / "m.mpk", ids, capture="export")
    layers = {n["name"]: n.get("layer") for n in parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]}
    assert layers["embed"] == "Embedding" and layers["head"] == "Linear"  # both calls fold, each owning the tie
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    weights = [p for _, p in rebuilt.named_parameters(remove_duplicate=False) if p.shape == (20, 8)]
    assert len(weights) == 3 and all(w is weights[0] for w in weights)  # one Parameter under three keys
    assert torch.equal(rebuilt(ids), model(ids))


class _Running(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).cumsum(1)


def test_size_bounds_torch_export_records_are_in_the_spec_and_checked_on_every_call(tmp_path) -> None:
    from torch.export import Dim

    from modelpack.errors import ShapeError

    torch.manual_seed(0)
    model = _Running().eval()
    shapes = {"x": {0: Dim("batch"), 1: Dim("seq", min=3, max=16)}}
    modelpack.export(model, tmp_path / "m.mpk", torch.randn(2, 6, 4), dynamic_shapes=shapes)
    spec = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]
    assert spec["inputs"]["x"]["shape"] == ["batch", "seq", 4] and spec["sizes"] == {"seq": {"max": 16, "min": 3}}
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    x = torch.randn(1, 16, 4)  # batch 1: torch.export's 0/1 specialization is not a bound
    assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(ShapeError, match=r"input 'x'.*dim 1 \('seq'\) is 17; the model was exported for "
                                         r"3 <= seq <= 16"):
        rebuilt(torch.randn(2, 17, 4))
    with pytest.raises(ShapeError, match=r"dim 1 \('seq'\) is 2"):
        rebuilt(x=torch.randn(2, 2, 4))


def test_default_capture_records_no_bound_so_batch_one_runs(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Running().eval()
    modelpack.export(model, tmp_path / "m.mpk", torch.randn(2, 6, 4), capture="export")
    assert "sizes" not in parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]
    x = torch.randn(1, 1, 4)
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(x), model(x))


class _SameNames(nn.Module):
    """Modules named like the ops they run (`lstm`, `linear`): an op node may not take a module's name."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return F.linear(y, self.linear.weight) + self.linear(y)


def test_op_nodes_never_take_a_module_path_as_their_name(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _SameNames().eval(), torch.randn(2, 5, 4)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    nodes = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]
    ops = [n["name"] for n in nodes if "op" in n]
    paths = {p for p, _ in model.named_modules()}
    assert ops and not paths & set(ops)  # `linear` is read with F.linear too, so its ops stay, none named `linear`
    assert {n["name"]: n.get("layer") for n in nodes}["lstm"] == "LSTM"  # the LSTM call folds at its path
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert torch.equal(rebuilt(x), model(x))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def test_a_layer_whose_ops_share_sizes_with_the_rest_still_folds(tmp_path) -> None:
    """The encoder layer's reshapes compute batch*seq, which ops after it reuse; sizes are read from the
    inputs, so the call folds into one TransformerEncoderLayer node and its fast kernel runs again."""
    torch.manual_seed(0)
    model = _Encoder().eval()
    modelpack.export(model, tmp_path / "m.mpk", torch.randint(0, 30, (2, 7)), capture="export")
    nodes = parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]
    assert [n["name"] for n in nodes if n.get("layer") == "TransformerEncoderLayer"] == ["encoder"]
    assert all(n["in"][0] == "tokens" for n in nodes if n.get("op") == "size")  # sizes come from the input
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    for shape in ((2, 7), (3, 4)):
        tokens = torch.randint(0, 30, shape)
        with torch.no_grad():
            assert torch.equal(rebuilt(tokens), model(tokens)), shape


class _Frac(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.frac(self.proj(x) * 3)


class _LogAddExp(_Frac):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return torch.logaddexp(y, x)


def test_an_op_without_a_row_is_decomposed_into_table_ops_with_a_warning(tmp_path) -> None:
    from modelpack.torch.export import ExportWarning

    torch.manual_seed(0)
    model, x = _Frac().eval(), torch.randn(3, 4)
    with pytest.warns(ExportWarning, match=r"aten\.frac has no row in the vocabulary: decomposed into table ops"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    ops = {n.get("op") for n in parse_yaml(read_spec_text(tmp_path / "m.mpk"))[0]["nodes"]}
    assert "aten.frac" not in ops and "aten.trunc" in ops
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(x), model(x))  # this one stays exact


def test_a_decomposition_that_rounds_differently_is_caught_by_the_bit_exact_check(tmp_path) -> None:
    from modelpack import ExportError
    from modelpack.torch.export import ExportWarning, ReproductionWarning

    torch.manual_seed(0)
    model, x = _LogAddExp().eval(), torch.randn(64, 4)
    with pytest.warns(ExportWarning, match="aten.logaddexp has no row"):
        with pytest.raises(ExportError, match=r"does not reproduce the original: max abs difference"):
            modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    with pytest.warns(ReproductionWarning, match="not bit for bit"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export", atol=1e-5)
    assert torch.allclose(modelpack.load_model(tmp_path / "m.mpk")(x), model(x), atol=1e-5, rtol=0)


class _AddIntoPermuted(nn.Module):
    """A permuted view plus a fresh Linear output: eager's sum takes the view's (permuted) strides."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.transpose(1, 2)
        return a + self.proj(a)


def test_inference_in_place_keeps_the_strides_eager_gives(tmp_path) -> None:
    """Writing the sum into the Linear output would give contiguous strides, and a later reduction or
    matmul over them can round differently (torchvision's maxvit_t): the rebuilt model keeps eager's."""
    torch.manual_seed(0)
    model, x = _AddIntoPermuted().eval(), torch.randn(2, 4, 6)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    with torch.no_grad():
        want, got = model(x), rebuilt(x)
    assert torch.equal(got, want) and got.stride() == want.stride()


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * mask


def test_a_loaded_model_exports_again_with_its_inputs_by_keyword(tmp_path) -> None:
    """A rebuilt model takes ``**named_inputs``; torch.export mis-pairs keyword values that land in ``**kwargs``
    with dynamic_shapes, so export passes a SpecModule's keyword example positionally, in declared order."""
    torch.manual_seed(0)
    x, mask = torch.randn(2, 3, 4), torch.ones(2, 3, 1)
    modelpack.export(_TwoInputs().eval(), tmp_path / "a.mpk", {"x": x, "mask": mask}, capture="export")
    loaded = modelpack.load_model(tmp_path / "a.mpk")
    modelpack.export(loaded, tmp_path / "b.mpk", {"mask": mask, "x": x}, capture="export")
    again = modelpack.load_model(tmp_path / "b.mpk")
    assert list(parse_yaml(read_spec_text(tmp_path / "b.mpk"))[0]["inputs"]) == ["x", "mask"]
    assert list(again.state_dict()) == list(loaded.state_dict())
    with torch.no_grad():
        other = torch.randn(5, 7, 4), torch.rand(5, 7, 1)
        assert torch.equal(again(*other), loaded(*other))
