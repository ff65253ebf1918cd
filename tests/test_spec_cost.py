"""spec/cost.py's closed forms agree with torch (meta device), and limits refuse before building (issue 16, class 3)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack import limits  # noqa: E402
from modelpack.errors import LimitError  # noqa: E402
from modelpack.spec.cost import FORMULAS, layer_cost, spec_cost  # noqa: E402
from modelpack.torch.build import _construct  # noqa: E402
from modelpack.vocab import LAYERS  # noqa: E402

CASES: list[tuple[str, dict[str, Any]]] = [
    ("Linear", {"in_features": 7, "out_features": 5}), ("Linear", {"in_features": 7, "out_features": 5, "bias": False}),
    ("Bilinear", {"in1_features": 3, "in2_features": 4, "out_features": 5}),
    ("Conv1d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}),
    ("Conv2d", {"in_channels": 4, "out_channels": 8, "kernel_size": [3, 5], "bias": False}),
    ("Conv3d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3}),
    ("ConvTranspose1d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}),
    ("ConvTranspose2d", {"in_channels": 4, "out_channels": 8, "kernel_size": [2, 3]}),
    ("BatchNorm1d", {"num_features": 5}), ("BatchNorm2d", {"num_features": 5, "affine": False}),
    ("BatchNorm2d", {"num_features": 5, "track_running_stats": False}), ("InstanceNorm2d", {"num_features": 3}),
    ("InstanceNorm2d", {"num_features": 3, "affine": True, "track_running_stats": True}),
    ("LayerNorm", {"normalized_shape": [4, 5]}), ("LayerNorm", {"normalized_shape": [6], "bias": False}),
    ("LayerNorm", {"normalized_shape": [6], "elementwise_affine": False}),
    ("GroupNorm", {"num_groups": 2, "num_channels": 6}), ("GroupNorm", {"num_groups": 2, "num_channels": 6, "affine": False}),
    ("Embedding", {"num_embeddings": 11, "embedding_dim": 3}), ("PReLU", {"num_parameters": 4}), ("PReLU", {}),
    ("LSTM", {"input_size": 3, "hidden_size": 5}),
    ("LSTM", {"input_size": 3, "hidden_size": 5, "num_layers": 3, "bidirectional": True, "proj_size": 2}),
    ("LSTM", {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bias": False}),
    ("GRU", {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True}),
    ("MultiheadAttention", {"embed_dim": 8, "num_heads": 2}),
    ("MultiheadAttention", {"embed_dim": 8, "num_heads": 2, "kdim": 3, "vdim": 5, "add_bias_kv": True}),
    ("MultiheadAttention", {"embed_dim": 8, "num_heads": 2, "bias": False}),
    ("TransformerEncoderLayer", {"d_model": 8, "nhead": 2, "dim_feedforward": 16}),
    ("TransformerEncoderLayer", {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "bias": False}),
    ("Parameter", {"shape": [3, 4]}), ("Buffer", {"shape": [5], "dtype": "int64"}),
    ("ReLU", {}), ("Flatten", {}), ("MaxPool2d", {"kernel_size": 2}),
]


def _torch_cost(layer: str, args: dict[str, Any]) -> tuple[int, int, int, int]:
    full = {a.name: args.get(a.name, a.default) for a in LAYERS[layer].args if not a.call}
    with torch.device("meta"):
        made = _construct(layer, full, None)
    if isinstance(made, torch.Tensor):
        return made.numel(), made.numel() * made.element_size(), 1, 0
    tensors = list(made.parameters()) + list(made.buffers())
    return (sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors), len(tensors),
            len(list(made.modules())))


@pytest.mark.parametrize("layer, args", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_closed_form_matches_torch(layer: str, args: dict[str, Any]) -> None:
    assert tuple(layer_cost(layer, args)) == _torch_cost(layer, args)


def test_every_stateful_layer_has_a_formula() -> None:
    """A layer row whose torch module holds tensors must have a formula (else its cost would read as zero)."""
    covered = {layer for layer, _ in CASES}
    assert set(FORMULAS) <= set(LAYERS) and set(FORMULAS) <= covered
    for layer, row in LAYERS.items():
        if layer in FORMULAS:
            continue
        args = {a.name: {"int": 3, "ints": 3, "int_list": [3]}[a.type] for a in row.args if a.required}
        assert _torch_cost(layer, args)[2] == 0, f"{layer} holds tensors: give it a formula in spec/cost.py"


def _lstm_spec(num_layers: int) -> str:
    return ("modelpack: 1\ninputs: {x: {shape: [batch, 7, 4]}}\nnodes:\n"
            f"  - {{name: r, layer: LSTM, args: {{input_size: 4, hidden_size: 4, num_layers: {num_layers}}}}}\n"
            "  - {name: y, op: getitem, in: [r], args: {index: 0}}\noutputs: [y]\n")


def test_huge_lstm_is_refused_before_building() -> None:
    """510 bytes asking for 10**6 LSTM layers: refused in milliseconds by the tensor count, not built for minutes."""
    text = _lstm_spec(10**6)
    assert len(text) < 600
    t = time.perf_counter()
    with pytest.raises(LimitError, match="tensors implied by the spec"):
        modelpack.build(text, device="meta")
    assert time.perf_counter() - t < 5.0  # generous: it used to take minutes (the closed form takes microseconds)


def test_module_cap_counts_dotted_levels() -> None:
    nodes = "\n".join(f"  - {{name: a{i}.b.c.d, layer: ReLU, in: [x]}}" for i in range(50))
    text = "modelpack: 1\ninputs: {x: {shape: [2]}}\nnodes:\n" + nodes + "\noutputs: [a0.b.c.d]\n"
    from modelpack.spec.blocks import expand_blocks

    assert spec_cost(expand_blocks(modelpack.validate(text))).modules == 1 + 50 * 4  # root, a_i, a_i.b, a_i.b.c, leaf
    with limits.raised(max_modules=100), pytest.raises(LimitError, match="max_modules"):
        modelpack.build(text)
    assert modelpack.build(text) is not None


def test_param_bytes_limit_sees_the_formula() -> None:
    text = _lstm_spec(2)
    with limits.raised(max_param_bytes=1000), pytest.raises(LimitError, match="max_param_bytes"):
        modelpack.build(text, device="meta")


def test_load_model_refuses_a_spec_the_file_cannot_hold(tmp_path: Path) -> None:
    """The file's tensor count bounds what its spec may imply: checked before anything is built."""
    from modelpack.api import write_pack

    path = tmp_path / "m.mpk"
    write_pack(path, {}, [], spec_text=_lstm_spec(1000))
    with pytest.raises(LimitError, match="the file holds 0"):
        modelpack.load_model(path)
