"""A rebuilt model checks each call's input shapes against the spec before any node runs.

A declared int is a fixed size: a graph captured at that size may bake sizes
derived from it (window partitions, reshapes), so running another size could
give wrong numbers without an error. Names are symbolic and take any size (within
``sizes``). The checker lives in ``modelpack.spec.shapes`` (torch-free), shared
with ``modelpack run``.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelpack.errors import ShapeError
from modelpack.spec.shapes import check_inputs, input_rules

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack.torch.build import build  # noqa: E402
from torch import nn  # noqa: E402

FIXED = """\
modelpack: 1
inputs: {x: {shape: [batch, 3, 8]}}
nodes:
  - {name: fc, layer: Linear, args: {in_features: 8, out_features: 2}}
outputs: [fc]
"""


class Windows(nn.Module):
    """Sums windows of 32 along the length: torch.export bakes the window count when the length is fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, 32, x.shape[-1]).sum(2)


def test_a_torch_export_model_refuses_another_fixed_size_before_running(tmp_path) -> None:
    path = tmp_path / "m.mpk"
    modelpack.export(Windows(), path, torch.randn(2, 128, 4), capture="export", dynamic_dims={"x": {0: "batch"}})
    model = modelpack.load_model(path)
    assert model.spec["inputs"]["x"]["shape"] == ["batch", 128, 4]
    x = torch.randn(3, 128, 4)  # the batch is symbolic: another one runs
    assert torch.equal(model(x), Windows()(x))
    message = (r"input 'x': dim 1 is 160; the spec declares 128 \(a fixed size: export with that dim dynamic "
               r"\u2014 dynamic_dims / dynamic_shapes \u2014 to run other sizes\)")
    with pytest.raises(ShapeError, match=message) as info:
        model(torch.randn(2, 160, 4))
    assert info.value.where == "input 'x'"
    assert not getattr(info.value, "__notes__", None)  # raised before any node ran


class Centered(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(1, keepdim=True)


def test_naming_the_dim_at_export_makes_it_symbolic(tmp_path) -> None:
    path = tmp_path / "m.mpk"
    modelpack.export(Centered(), path, torch.randn(2, 128, 4), capture="export",
                     dynamic_dims={"x": {0: "batch", 1: "length"}})
    model = modelpack.load_model(path)
    assert model.spec["inputs"]["x"]["shape"] == ["batch", "length", 4]
    for x in (torch.randn(1, 160, 4), torch.randn(5, 64, 4)):
        assert torch.equal(model(x), Centered()(x))


def test_the_fx_path_keeps_the_batch_symbolic_and_the_rest_fixed(tmp_path) -> None:
    path = tmp_path / "m.mpk"
    modelpack.export(nn.Sequential(nn.Linear(8, 2)), path, torch.randn(2, 3, 8), capture="fx")
    model = modelpack.load_model(path)
    assert model.spec["inputs"]["input"]["shape"] == ["batch", 3, 8]
    assert model(torch.randn(7, 3, 8)).shape == (7, 3, 2)
    with pytest.raises(ShapeError, match=r"input 'input': dim 1 is 4; the spec declares 3 \(a fixed size"):
        model(torch.randn(7, 4, 8))


@pytest.mark.parametrize("shape, rank", [((3, 8), 2), ((1, 2, 3, 8), 4)])
def test_a_wrong_rank_is_a_shape_error(shape, rank) -> None:
    with pytest.raises(ShapeError, match=rf"input 'x': expected shape \[batch, 3, 8\] \(rank 3\), got "
                                         rf"\[.*\] \(rank {rank}\)"):
        build(FIXED)(torch.randn(*shape))


@pytest.mark.parametrize("batch", [0, 1, 9])
def test_a_hand_written_fixed_dim_is_checked_and_names_are_not(batch) -> None:
    model = build(FIXED)
    assert model(torch.randn(batch, 3, 8)).shape == (batch, 3, 2)
    with pytest.raises(ShapeError, match=r"input 'x': dim 1 is 4; the spec declares 3"):
        model(x=torch.randn(batch, 4, 8))


def test_one_checker_for_arrays_and_tensors_with_bounds() -> None:
    """The spec layer's checker reads any ``shape`` tuple (numpy here: no torch needed), skipping non-arrays."""
    rules = input_rules({"inputs": {"x": {"shape": ["batch", "seq", 4]}, "n": {"shape": [], "dtype": "int64"}},
                         "sizes": {"seq": {"min": 2, "max": 8}}})
    check_inputs(rules, {"x": np.zeros((1, 8, 4)), "n": np.int64(3)})
    check_inputs(rules, {"x": object()})  # a tracer's proxy: no tuple shape, nothing to check
    with pytest.raises(ShapeError, match=r"dim 2 is 5; the spec declares 4"):
        check_inputs(rules, {"x": np.zeros((1, 8, 5))})
    with pytest.raises(ShapeError, match=r"dim 1 \('seq'\) is 9; the model was exported for 2 <= seq <= 8"):
        check_inputs(rules, {"x": np.zeros((1, 9, 4))})
    with pytest.raises(ShapeError, match=r"input 'n': expected shape \[\] \(rank 0\), got \[2\]"):
        check_inputs(rules, {"x": np.zeros((1, 8, 4)), "n": np.zeros(2)})


def test_a_traced_rebuilt_model_is_not_pinned_by_the_check(tmp_path) -> None:
    """Re-exporting a rebuilt model (fx proxies, torch.export fakes) keeps its symbolic sizes."""
    path = tmp_path / "m.mpk"
    modelpack.export(build(FIXED), path, torch.randn(2, 3, 8), capture="export")
    [decl] = modelpack.load_model(path).spec["inputs"].values()
    assert decl["shape"][0] == "batch"


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).softmax(-1) * x.shape[0]


def test_a_batch_of_one_on_the_torch_export_path_is_fixed_and_said_so(tmp_path) -> None:
    """torch.export specializes example sizes 0 and 1: export warns, the call names the cure."""
    from modelpack.errors import ExportError
    from modelpack.torch.export import ExportWarning

    model, x = _Scaled().eval(), torch.randn(1, 3, 4)
    with pytest.warns(ExportWarning, match=r"leading dim of input 'x' is 1 in the example; torch.export fixes"):
        modelpack.export(model, tmp_path / "m.mpk", {"x": x}, capture="export")
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(ShapeError, match="dim 0 is 5; the spec declares 1 .*example of 2 or more in that dim"):
        rebuilt(torch.randn(5, 3, 4))
    with pytest.raises(ExportError, match=r"dim 0 \('batch'\) of input 'x' is 1 in the example.*2 or more"):
        modelpack.export(model, tmp_path / "n.mpk", {"x": x}, capture="export", dynamic_dims={"x": {0: "batch"}})
    modelpack.export(model, tmp_path / "b2.mpk", {"x": torch.randn(2, 3, 4)}, capture="export")
    free = modelpack.load_model(tmp_path / "b2.mpk")
    y = torch.randn(5, 3, 4)
    assert torch.equal(free(y), model(y))
