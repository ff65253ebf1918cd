"""Non-finite floats (``.inf``, ``-.inf``, ``.nan``) in hostile specs: accepted only where torch takes a float.

A spec may write ``-.inf`` as a pad or mask value; where a number sizes something (an int,
a size, arange's bounds, a resize factor) a non-finite one is a SpecError naming the node and
the argument, found by the torch-free validator where the schema can say it, else before
anything is allocated.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modelpack.errors import SpecError
from modelpack.spec import validate

HEAD = "modelpack: 2\ninputs:\n  x: {shape: [1, 3]}\nnodes:\n"


def _spec(node: str) -> str:
    return HEAD + f"  - {{name: big, {node}}}\noutputs: [big]\n"


# (node fields, where the validator points): sizes are torch's SymInt/SymInt[], never floats
AT_VALIDATE = [
    ("op: aten.full, in: [], args: {size: [.inf], fill_value: 0}", "nodes[0].args.size[0]"),
    ("op: aten.zeros, in: [], args: {size: [2, .nan]}", "nodes[0].args.size[1]"),
    ("op: aten.new_full, in: [x], args: {size: [-.inf], fill_value: 1}", "nodes[0].args.size[0]"),
    ("op: aten.expand, in: [x], args: {size: [.inf, 3]}", "nodes[0].args.size[0]"),
    ("op: aten.repeat, in: [x], args: {repeats: [.inf, 1]}", "nodes[0].args.repeats[0]"),
    ("op: aten.constant_pad_nd, in: [x], args: {pad: [0, .inf]}", "nodes[0].args.pad[1]"),
    ("op: reshape, in: [x], args: {shape: [.nan]}", "nodes[0].args.shape[0]"),
    ("op: aten.arange, in: [], args: {end: 3, dtype: .inf}", "nodes[0].args.dtype"),
    ("layer: Linear, args: {in_features: .inf, out_features: 2}", "nodes[0].args.in_features"),
    ("layer: Dropout, args: {p: .nan}", "nodes[0].args.p"),
]


@pytest.mark.parametrize(("node", "where"), AT_VALIDATE, ids=[c[1] + "-" + c[0].split(",")[0] for c in AT_VALIDATE])
def test_non_finite_size_is_refused_by_the_validator(node: str, where: str) -> None:
    with pytest.raises(SpecError) as info:
        validate(_spec(node))
    assert info.value.where == where
    assert "finite" in str(info.value) or "is not one of" in str(info.value)


torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack import tree  # noqa: E402
from modelpack.api import write_pack  # noqa: E402

# (node fields, the argument named): a Scalar or float that sizes the output, checked before allocating
AT_RUN = [
    ("op: aten.arange, in: [], args: {end: .inf}", "'end'"),
    ("op: aten.arange.start, in: [], args: {start: -.inf, end: 4}", "'start'"),
    ("op: aten.arange.start_step, in: [], args: {start: 0, end: 4, step: .nan}", "'step'"),
    ("op: aten.arange.start, in: [], args: {start: -1.0e+308, end: 1.0e+308}", "no finite number of elements"),
    ("op: aten.upsample_nearest2d.vec, in: [x4], args: {output_size: null, scale_factors: [.inf, .inf]}",
     "'scale_factors'"),
    ("op: interpolate, in: [x4], args: {scale_factor: .inf}", "'scale_factor'"),
]


def _pack(tmp_path: Path, text: str) -> Path:
    tree_json, leaves = tree.encode({})
    path = tmp_path / "h.mpk"
    write_pack(path, tree_json, leaves, spec_text=text)
    return path


@pytest.mark.parametrize(("node", "words"), AT_RUN, ids=[c[0].split(",")[0] for c in AT_RUN])
def test_non_finite_number_that_sizes_an_output_is_refused_before_allocating(tmp_path: Path, node: str,
                                                                           words: str) -> None:
    text = (HEAD + "  - {name: x4, op: aten.reshape, in: [x], args: {shape: [1, 1, 1, 3]}}\n"
            f"  - {{name: big, {node}}}\noutputs: [big]\n")
    model = modelpack.load_model(_pack(tmp_path, text))
    with pytest.raises(SpecError, match=words) as info:
        model(torch.ones(1, 3))
    assert info.value.where == "big"


def test_non_finite_fill_and_pad_values_run(tmp_path: Path) -> None:
    text = (HEAD + "  - {name: fill, op: aten.full, in: [], args: {size: [1, 2], fill_value: -.inf}}\n"
            "  - {name: padded, op: aten.constant_pad_nd, in: [x], args: {pad: [1, 0], value: .inf}}\n"
            "  - {name: m, op: aten.gt.Scalar, in: [x], args: {other: 0}}\n"
            "  - {name: masked, op: aten.masked_fill.Scalar, in: [x, m], args: {value: .nan}}\n"
            "outputs: [fill, padded, masked]\n")
    fill, padded, masked = modelpack.load_model(_pack(tmp_path, text))(torch.tensor([[1.0, -2.0, 3.0]]))
    assert torch.equal(fill, torch.full((1, 2), -math.inf))
    assert torch.equal(padded, torch.tensor([[math.inf, 1.0, -2.0, 3.0]]))
    assert masked.isnan().tolist() == [[True, False, True]]
