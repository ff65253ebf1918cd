"""torch.export capture writes repeated module calls as blocks: nested, parameterised, and bit exact."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.api import read_spec_text  # noqa: E402
from modelpack.spec import parse_yaml  # noqa: E402


class Norm(nn.Module):
    """An RMSNorm made of ops (not a vocabulary layer)."""

    def __init__(self, n: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class MLP(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.up = nn.Linear(n, 2 * n)
        self.down = nn.Linear(2 * n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


class Layer(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.norm = Norm(n, eps)
        self.mlp = MLP(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Stack(nn.Module):
    def __init__(self, eps: tuple[float, ...] = (1e-6, 1e-6, 1e-6), n: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(n, e) for e in eps)
        self.norm = Norm(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def _export(model: nn.Module, tmp_path, x: torch.Tensor, **kw) -> tuple[dict, nn.Module]:
    path = tmp_path / "m.mpk"
    modelpack.export(model.eval(), path, (x,), capture="export", **kw)
    rebuilt = modelpack.load_model(path)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    return parse_yaml(read_spec_text(path))[0], rebuilt


def test_repeated_layers_become_nested_blocks_and_round_trip_bit_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = Stack()
    x = torch.randn(2, 5, 8)
    spec, rebuilt = _export(model, tmp_path, x)
    blocks = spec["blocks"]
    assert set(blocks) == {"Norm", "MLP", "Layer"}
    assert [n.get("block") for n in blocks["Layer"]["nodes"]] == ["Norm", "MLP", None]
    assert [n["name"] for n in spec["nodes"]] == ["layers.0", "layers.1", "layers.2", "norm"]
    assert torch.equal(rebuilt(x), model(x))
    y = torch.randn(3, 9, 8)  # other sizes: the block reads no baked size
    assert torch.equal(rebuilt(y), model(y))


def test_a_literal_that_differs_between_calls_becomes_a_block_parameter(tmp_path) -> None:
    torch.manual_seed(0)
    model = Stack(eps=(1e-6, 1e-5, 1e-6))
    x = torch.randn(2, 5, 8)
    spec, rebuilt = _export(model, tmp_path, x)
    assert spec["blocks"]["Layer"]["params"] and spec["blocks"]["Norm"]["params"]
    given = [next(iter(n["args"].values())) for n in spec["nodes"][:3]]
    assert given == [1e-6, 1e-5, 1e-6]
    assert torch.equal(rebuilt(x), model(x))


class Heads(nn.Module):
    """Reads the batch and length sizes of its input: size refs from outside the call."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.proj(x).view(b, s, 2, -1).transpose(1, 2)
        return h.softmax(-1).transpose(1, 2).reshape(b, s, -1)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Heads(8)
        self.b = Heads(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_sizes_read_from_outside_become_block_inputs(tmp_path) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    x = torch.randn(2, 5, 8)
    spec, rebuilt = _export(model, tmp_path, x, dynamic_dims={"x": {0: "batch", 1: "seq"}})
    block = spec["blocks"]["Heads"]
    assert len(block["inputs"]) == 3  # the tensor, then the two sizes
    assert [n["name"] for n in spec["nodes"] if "block" in n] == ["a", "b"]
    y = torch.randn(3, 11, 8)
    assert torch.equal(rebuilt(y), model(y))


def test_a_class_called_once_stays_flat(tmp_path) -> None:
    torch.manual_seed(0)
    model = Layer(8, 1e-6)
    x = torch.randn(2, 5, 8)
    spec, rebuilt = _export(model, tmp_path, x)
    assert "blocks" not in spec
    assert torch.equal(rebuilt(x), model(x))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n1 = Norm(8)
        self.n2 = Norm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.n2(self.n1(self.n1(x)))  # n1 runs twice: its calls are not one instance each


def test_a_module_called_twice_is_not_an_instance(tmp_path) -> None:
    torch.manual_seed(0)
    model = Twice()
    x = torch.randn(2, 5, 8)
    spec, rebuilt = _export(model, tmp_path, x)
    assert all(n.get("block") is None or n["name"] != "n1" for n in spec["nodes"])
    assert torch.equal(rebuilt(x), model(x))


class Unit(nn.Module):
    """Two body shapes of one class: with and without an extra projection."""

    def __init__(self, n: int, project: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.proj = nn.Linear(n, n) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.fc(x))
        return x + (self.proj(y) if self.proj is not None else y)


class Alternating(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.units = nn.ModuleList(Unit(8, i % 2 == 1) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x


def test_two_body_shapes_of_one_class_become_two_blocks_reading_each_other(tmp_path) -> None:
    torch.manual_seed(0)
    model = Alternating()
    x = torch.randn(2, 8)
    spec, rebuilt = _export(model, tmp_path, x)
    assert set(spec["blocks"]) == {"Unit", "Unit_1"}
    assert [n["in"] for n in spec["nodes"]] == [["x"], ["units.0"], ["units.1"], ["units.2"]]
    assert torch.equal(rebuilt(x), model(x))


def _nested(levels: int) -> type:
    """Classes Level0..Level{levels-1}: each level holds two calls of the one below it."""
    class Leaf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x) * 0.5

    below = Leaf
    for k in range(levels):
        def init(self, inner=below) -> None:
            nn.Module.__init__(self)
            self.a, self.b = inner(), inner()

        below = type(f"Level{k}", (nn.Module,), {"__init__": init, "forward": lambda self, x: self.b(self.a(x))})
    return below


def test_blocks_nest_no_deeper_than_the_format_allows(tmp_path) -> None:
    model = _nested(10)()
    x = torch.randn(2, 3)
    spec, rebuilt = _export(model, tmp_path, x)

    def depth(body: list) -> int:
        return max((1 + depth(spec["blocks"][n["block"]]["nodes"]) for n in body if "block" in n), default=0)

    assert depth(spec["nodes"]) == 8  # Leaf..Level6 as blocks; the outer levels stay flat around them
    assert torch.equal(rebuilt(x), model(x))


def test_a_hugging_face_llama_decoder_layer_reads_as_its_six_steps(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      use_cache=False)
    model = transformers.LlamaForCausalLM(config).eval()
    path = tmp_path / "llama.mpk"
    modelpack.export(model, path, {"input_ids": torch.randint(0, 64, (2, 7))})
    spec = parse_yaml(read_spec_text(path))[0]
    layer = spec["blocks"]["LlamaDecoderLayer"]["nodes"]
    assert [n.get("block") or n.get("op") for n in layer] == [
        "LlamaRMSNorm", "LlamaAttention", "aten.add.Tensor", "LlamaRMSNorm", "LlamaMLP", "aten.add.Tensor"]
    assert [n["name"] for n in spec["nodes"] if n.get("block") == "LlamaDecoderLayer"] == [
        "model.layers.0", "model.layers.1"]
    rebuilt = modelpack.load_model(path)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        for shape in ((2, 7), (1, 11)):
            ids = torch.randint(0, 64, shape)
            assert torch.equal(rebuilt(input_ids=ids)["logits"], model(input_ids=ids).logits)
