"""Hostile specs whose ops would allocate without bound: refused with a LimitError before allocating."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpack import limits, tree
from modelpack.api import write_pack
from modelpack.errors import LimitError

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402

# (op, in, args): each asks for far more elements than max_op_elements (16 G) allows
HUGE = [
    ("aten.arange", [], {"end": 10**12}),
    ("aten.arange.start_step", [], {"start": 0, "end": 10**15, "step": 1}),
    ("aten.full", [], {"size": [10**6, 10**6], "fill_value": 0}),
    ("aten.zeros", [], {"size": [2**40]}),
    ("aten.ones", [], {"size": [2**20, 2**20]}),
    ("aten.empty.memory_format", [], {"size": [2**36]}),
    ("aten.new_zeros", ["x"], {"size": [2**20, 2**20]}),
    ("aten.new_full", ["x"], {"size": [2**20, 2**20], "fill_value": 1}),
    ("aten.expand", ["x"], {"size": [2**40, 3]}),
    ("aten.repeat", ["x"], {"repeats": [2**20, 2**20]}),
    ("aten.index_select", ["x"], {"dim": 0, "index": {"ref": "idx"}}),
    ("aten.constant_pad_nd", ["x"], {"pad": [0, 2**36]}),
    # version-1 rows sized by their arguments
    ("interpolate", ["x4"], {"scale_factor": 1.0e+5}),
    ("interpolate", ["x4"], {"size": [2**18, 2**18]}),
    ("pad", ["x"], {"pad": [0, 2**36]}),
    ("adaptive_avg_pool2d", ["x4"], {"output_size": [2**18, 2**18]}),
    # nn.Unfold / nn.Fold: columns of every window of a padded image, and the image they fold into
    ("aten.im2col", ["x4"], {"kernel_size": [1, 1], "dilation": [1, 1], "padding": [2**17, 2**17],
                             "stride": [1, 1]}),
    ("aten.col2im", ["x3"], {"output_size": [2**18, 2**18], "kernel_size": [1, 1], "dilation": [1, 1],
                             "padding": [0, 0], "stride": [2**17, 2**17]}),  # 4 columns, far apart
]


def _spec(op: str, inputs: list[str], args: dict) -> str:
    nodes = []
    if op == "aten.index_select":  # an index of 2**35 elements, itself made by an expand (a view)
        nodes += [{"name": "zero", "op": "aten.zeros", "in": [], "args": {"size": [1], "dtype": "int64"}},
                  {"name": "idx", "op": "aten.expand", "in": ["zero"], "args": {"size": [2**33]}}]
    if inputs == ["x4"]:  # the image (1, 3, 1, 1) im2col takes
        nodes.append({"name": "x4", "op": "aten.reshape", "in": ["x"], "args": {"shape": [1, 3, 1, 1]}})
    if inputs == ["x3"]:  # the 4 columns (1, 3, 4) col2im takes
        nodes += [{"name": "x1", "op": "aten.reshape", "in": ["x"], "args": {"shape": [1, 3, 1]}},
                  {"name": "x3", "op": "aten.expand", "in": ["x1"], "args": {"size": [1, 3, 4]}}]
    nodes.append({"name": "big", "op": op, "in": inputs, "args": args})
    return json.dumps({"modelpack": 2, "inputs": {"x": {"shape": [1, 3]}}, "nodes": nodes, "outputs": ["big"]})


@pytest.mark.parametrize(("op", "inputs", "args"), HUGE, ids=[f"{h[0]}-{sorted(h[2])[-1]}" for h in HUGE])
def test_huge_allocation_is_a_limit_error_not_an_oom(tmp_path: Path, op: str, inputs: list[str], args: dict) -> None:
    tree_json, leaves = tree.encode({})
    write_pack(tmp_path / "h.mpk", tree_json, leaves, spec_text=_spec(op, inputs, args))
    model = modelpack.load_model(tmp_path / "h.mpk")  # loading allocates nothing the spec sizes
    with pytest.raises(LimitError, match="max_op_elements") as info:
        model(torch.ones(1, 3))
    assert info.value.where is not None and "big" in str(info.value) or "idx" in str(info.value)


def test_sizes_computed_in_the_graph_are_checked_too() -> None:
    """A symbolic size (a size node times a huge literal) is evaluated first, then checked."""
    spec = {"modelpack": 2, "inputs": {"x": {"shape": ["batch", 3]}}, "outputs": ["big"], "nodes": [
        {"name": "n", "op": "size", "in": ["x"], "args": {"dim": 0}},
        {"name": "k", "op": "scalar", "in": [], "args": {"value": 10**12}},
        {"name": "m", "op": "mul", "in": ["n", "k"]},
        {"name": "big", "op": "aten.arange", "in": [], "args": {"end": {"ref": "m"}}}]}
    model = modelpack.build(spec)
    with pytest.raises(LimitError, match="aten.arange"):
        model(torch.ones(2, 3))
    with limits.raised(max_op_elements=10**13):  # a trusted file may raise the cap (not run: 8 TB)
        assert limits.current().max_op_elements == 10**13
