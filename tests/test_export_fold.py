"""Folding on the torch.export path: layers with several inputs and outputs fold with their call's keywords,
each output read through a ``getitem`` of the layer node; a layer fed one item of a split takes that item."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import modelpack  # noqa: E402
import mp_models as Z  # noqa: E402
from modelpack.errors import ShapeError  # noqa: E402
from modelpack.api import read_spec_text  # noqa: E402
from modelpack.spec import parse_yaml  # noqa: E402


def _nodes(path) -> dict[str, dict]:
    return {n["name"]: n for n in parse_yaml(read_spec_text(path))[0]["nodes"]}


def test_multihead_attention_folds_with_need_weights_and_stays_bit_exact_under_no_grad(tmp_path) -> None:
    """Under no_grad in eval, eager runs MHA's fused fast path; only the layer node (not its slow-path ATen
    ops) runs that kernel again, so the call folds, keeping ``need_weights=False`` from the call site."""
    torch.manual_seed(0)
    model, x = Z.SelfAttention().eval(), torch.randn(2, 5, 16)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture="export")
    nodes = _nodes(path)
    assert nodes["mha"]["layer"] == "MultiheadAttention" and nodes["mha"]["in"] == ["x", "x", "x"]
    assert nodes["mha"]["args"]["need_weights"] is False
    assert nodes["mha_0"] == {"name": "mha_0", "op": "getitem", "in": ["mha"], "args": {"index": 0}}
    rebuilt = modelpack.load_model(path).eval()
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    for other in (x, torch.randn(3, 7, 16)):
        with torch.no_grad():
            assert torch.equal(rebuilt(other), model(other))
        assert torch.equal(rebuilt(other), model(other))  # autograd on: the slow path on both sides


class _Recurrent(nn.Module):
    """An LSTM whose (output, (h_n, c_n)) are all read, and a GRU given its h_0 as a second input."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.gru = nn.GRU(6, 6, batch_first=True)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h, c) = self.lstm(x)
        y, h_n = self.gru(out, h0)
        return y + (h + c).transpose(0, 1), h_n


def test_layers_with_two_inputs_and_nested_outputs_fold_into_their_rows(tmp_path) -> None:
    torch.manual_seed(0)
    model, x, h0 = _Recurrent().eval(), torch.randn(2, 5, 4), torch.randn(1, 2, 6)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, (x, h0), capture="export")  # torch.export fixes the LSTM's length (5)
    nodes = _nodes(path)
    assert nodes["lstm"]["layer"] == "LSTM" and nodes["lstm"]["in"] == ["x"]
    assert "train" not in str(nodes["lstm"])  # the layer follows the live mode, nothing recorded as eval
    assert nodes["gru"]["layer"] == "GRU" and nodes["gru"]["in"] == ["lstm_0", "h0"]
    assert [nodes[n]["in"] + [nodes[n]["args"]["index"]] for n in ("lstm_1", "lstm_1_0", "lstm_1_1")] == [
        ["lstm", 1], ["lstm_1", 0], ["lstm_1", 1]]  # (h_n, c_n) is one tuple, read item by item
    assert not any(n.get("op", "").startswith("aten.lstm") or n.get("op", "").startswith("aten.gru")
                   for n in nodes.values())
    rebuilt = modelpack.load_model(path)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        for args in ((x, h0), (torch.randn(3, 5, 4), torch.randn(1, 3, 6))):
            for got, want in zip(rebuilt(*args), model(*args)):
                assert torch.equal(got, want)
        with pytest.raises(ShapeError, match="dim 1 is 8; the spec declares 5"):
            rebuilt(torch.randn(3, 8, 4), torch.randn(1, 3, 6))


class _Paths(nn.Module):
    """timm's selective kernel: each path takes one item of a split of the block's input."""

    def __init__(self) -> None:
        super().__init__()
        self.paths = nn.ModuleList([nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = torch.split(x, 2, 1)
        return torch.stack([p(xs[i]) for i, p in enumerate(self.paths)], 1).sum(1)


class _SplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU(inplace=True)  # an in-place op: the program is functionalized (re-traced)
        self.block = _Paths()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.act(self.stem(x)))


def test_a_layer_fed_one_item_of_a_split_never_takes_the_unsplit_tensor(tmp_path, monkeypatch) -> None:
    """The re-trace records the split under the conv that reads its item; the fold must not hand the conv
    the split's input. Export succeeds on the first (folded) try; the layers around the split fold."""
    from modelpack.torch import export as export_module

    tries: list[bool] = []
    program = export_module._export_program
    monkeypatch.setattr(export_module, "_export_program", lambda *a, **k: tries.append(k["fold"]) or program(*a, **k))
    torch.manual_seed(0)
    model, x = _SplitNet().eval(), torch.randn(1, 3, 6, 6)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture="export")
    assert tries == [True]
    nodes = _nodes(path)
    assert nodes["stem"]["layer"] == "Conv2d" and nodes["act"]["layer"] == "ReLU"
    assert all(n["in"][0] != "act" for n in nodes.values() if n.get("layer") == "Conv2d")
    rebuilt = modelpack.load_model(path)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


class _PreNorm(nn.Module):
    """Registers the projection before the norm that runs first (a pre-norm block)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.gate = nn.Module()
        self.gate.weight = nn.Parameter(torch.ones(8))  # read directly: a Parameter node, at first use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x) * self.gate.weight)


def test_the_rebuilt_state_dict_keeps_the_original_key_order_where_execution_order_differs(tmp_path) -> None:
    model, x = _PreNorm().eval(), torch.randn(2, 8)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture="export")
    names = [n["name"] for n in parse_yaml(read_spec_text(path))[0]["nodes"]]
    assert names.index("norm") < names.index("gate.weight") < names.index("proj")  # nodes: execution order
    assert list(modelpack.load(path)) == list(model.state_dict())  # the file keeps the original's order
    rebuilt = modelpack.load_model(path)
    assert list(rebuilt.state_dict()) == ["proj.weight", "proj.bias", "norm.weight", "norm.bias", "gate.weight"]
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


class _WithAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 2)  # called only in training, like an auxiliary head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) if not self.training else self.aux(self.body(x))


def test_tensors_of_a_module_forward_never_calls_are_kept_in_order_with_a_warning(tmp_path) -> None:
    from modelpack.torch._export_graph import UnreadTensorsWarning

    model, x = _WithAux().eval(), torch.randn(2, 4)
    with pytest.warns(UnreadTensorsWarning, match="forward never calls module.s. aux"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert torch.equal(rebuilt.state_dict()["aux.weight"], model.aux.weight)


class _Windows(nn.Module):
    """Shape arithmetic on symbolic sizes (h // 2) and a tensor created from them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        windows = x.reshape(b, c, h // 2, 2, w).sum(3)
        return windows + torch.zeros(b, c, h // 2, w)


def test_a_rebuilt_model_is_captured_again_by_torch_export(tmp_path) -> None:
    """The rebuilt model's size arithmetic stays on sizes (no data-dependent guard), and the limits' meta
    check does not run while torch.export traces it."""
    model, x = _Windows(), torch.randn(2, 3, 8, 5)
    modelpack.export(model, tmp_path / "a.mpk", x, capture="export")
    clone = modelpack.load_model(tmp_path / "a.mpk")
    modelpack.export(clone, tmp_path / "b.mpk", x, capture="export")
    again = modelpack.load_model(tmp_path / "b.mpk")
    for other in (x, torch.randn(3, 2, 6, 7)):
        assert torch.equal(again(other), model(other))


class _MaskedEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0)  # batch_first off: no fast path

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.enc(x, src_mask=mask)


def test_the_layers_inside_a_layer_that_cannot_fold_still_fold(tmp_path) -> None:
    """TransformerEncoderLayer's row takes no mask: its call stays unfolded, but its norms and projections
    fold; its attention, called with the mask its row cannot say either, stays as ops."""
    torch.manual_seed(0)
    model, x, mask = _MaskedEncoder().eval(), torch.randn(5, 2, 16), torch.triu(torch.full((5, 5), -1e4), 1)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, (x, mask), capture="export")
    nodes = _nodes(path).values()
    layers = {n["name"]: n["layer"] for n in nodes if n.get("layer") not in (None, "Parameter", "Buffer")}
    assert layers == {"enc.norm1": "LayerNorm", "enc.linear1": "Linear", "enc.linear2": "Linear",
                      "enc.norm2": "LayerNorm"}
    rebuilt = modelpack.load_model(path)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x, mask), model(x, mask))
