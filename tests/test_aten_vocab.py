"""The generated ATen rows: regenerated exactly, faithful to torch's schemas, callable, size-checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelpack import limits
from modelpack.errors import LimitError
from modelpack.spec.migrations import migrate
from modelpack.vocab import OPS, REQUIRED, VOCAB_VERSION
from modelpack.vocab.aten import ATEN_OPS, ATEN_TORCH_VERSION

torch = pytest.importorskip("torch")

from modelpack.torch import build  # noqa: E402
from modelpack.torch.bindings import OP_BINDINGS  # noqa: E402

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(torch.__version__ != ATEN_TORCH_VERSION,
                    reason=f"the table was generated with torch {ATEN_TORCH_VERSION}; this is {torch.__version__}")
def test_committed_table_is_regenerated_exactly() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_aten_vocab.py")], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    committed = (ROOT / "modelpack" / "vocab" / "aten.py").read_text()
    assert out.stdout == committed, "torch's schemas changed: run `python tools/gen_aten_vocab.py > modelpack/vocab/aten.py`"


def test_rule_covers_the_ops_transformers_ir_uses() -> None:
    wanted = {"aten.linear", "aten.conv2d", "aten.layer_norm", "aten.group_norm", "aten.batch_norm",
              "aten.scaled_dot_product_attention", "aten.gelu", "aten.silu", "aten.embedding", "aten.pad",
              "aten.upsample_nearest2d.vec", "aten.arange", "aten.full", "aten.zeros", "aten.cat", "aten.split.Tensor",
              "aten.add.Tensor", "aten.index.Tensor", "aten.to.dtype", "aten.cumsum", "aten.__and__.Tensor"}
    assert wanted <= set(ATEN_OPS) and set(ATEN_OPS) <= set(OPS)
    assert all(row.since == 2 == VOCAB_VERSION for row in ATEN_OPS.values())


@pytest.mark.parametrize("name", sorted(ATEN_OPS))
def test_row_matches_its_overload_schema(name: str) -> None:
    row, overload = ATEN_OPS[name], OP_BINDINGS[name]
    schema = {a.name: a for a in overload._schema.arguments}
    low, high = row.inputs
    for arg in row.args:
        assert arg.name in schema, f"{name}: torch has no argument {arg.name!r}"
        if arg.default is not REQUIRED and arg.type not in ("dtype", "str"):
            assert schema[arg.name].default_value == arg.default, arg.name
    stored = {a.name for a in row.args} | set(row.omitted)
    assert len(stored) + (1 if high is None else low) == len(schema)


def test_rows_are_dispatcher_ops_returning_tensors() -> None:
    """TorchScript-only overloads (``split.str`` on Python strings, ``to.prim_dtype``) and ops returning
    numbers (``sym_size``) are not rows: torch.export never emits them as tensor ops."""
    for name in ATEN_OPS:
        schema = OP_BINDINGS[name]._schema
        torch._C._dispatch_find_schema_or_throw(schema.name, schema.overload_name)
        assert all(str(r.type) in ("Tensor", "List[Tensor]") for r in schema.returns), name
    assert not {"aten.split.str", "aten.to.prim_dtype", "aten.sym_size", "aten.mT.a"} & set(ATEN_OPS)


def test_v1_documents_migrate_unchanged() -> None:
    v1 = {"modelpack": 1, "inputs": {"x": {"shape": [1, 2]}}, "nodes": [{"name": "r", "op": "relu", "in": "x"}],
          "outputs": ["r"]}
    assert migrate(v1) == {**v1, "modelpack": 2}
    model = build.build(v1)
    assert model.spec["modelpack"] == 2


def _spec(nodes: list[dict], shape: list[int] = [2, 3]) -> dict:
    return {"modelpack": 2, "inputs": {"x": {"shape": shape}}, "nodes": nodes, "outputs": [nodes[-1]["name"]]}


def test_aten_rows_build_and_run_with_refs_and_dtypes() -> None:
    spec = _spec([
        {"name": "n", "op": "aten.arange", "in": [], "args": {"end": 3, "dtype": "float32"}},
        {"name": "y", "op": "aten.add.Tensor", "in": ["x", "n"], "args": {"alpha": 2}},
        {"name": "z", "op": "aten.masked_fill.Scalar", "in": ["y", "m"], "args": {"value": -1}},
    ])
    spec["nodes"].insert(2, {"name": "m", "op": "aten.gt.Scalar", "in": ["x"], "args": {"other": 0}})
    model = build.build(spec)
    x = torch.tensor([[1.0, -1.0, 2.0], [0.0, 3.0, -2.0]])
    expected = (x + 2 * torch.arange(3.0)).masked_fill(x > 0, -1)
    assert torch.equal(model(x), expected)


def test_created_tensors_follow_the_inputs_device() -> None:
    spec = _spec([{"name": "z", "op": "aten.zeros", "in": [], "args": {"size": [2]}}])
    model = build.build(spec)
    assert model(torch.ones(2, 3, device="meta")).device.type == "meta"
    assert model(torch.ones(2, 3)).device.type == "cpu"


@pytest.mark.parametrize("node", [
    {"name": "big", "op": "aten.arange", "in": [], "args": {"end": 10**12}},
    {"name": "big", "op": "aten.full", "in": [], "args": {"size": [10**6, 10**6], "fill_value": 1}},
    {"name": "big", "op": "aten.zeros", "in": [], "args": {"size": [2**20, 2**20]}},
    {"name": "big", "op": "aten.new_ones", "in": ["x"], "args": {"size": [2**20, 2**20]}},
    {"name": "big", "op": "aten.repeat", "in": ["x"], "args": {"repeats": [2**20, 2**20]}},
    {"name": "big", "op": "aten.expand", "in": ["x"], "args": {"size": [2**30, 2**10, 3]}},
], ids=lambda n: n["op"])
def test_allocating_ops_are_sized_before_they_allocate(node: dict) -> None:
    model = build.build(_spec([node], shape=[1, 3]))
    with pytest.raises(LimitError, match="max_op_elements"):
        model(torch.ones(1, 3))


def test_the_size_limit_can_be_raised() -> None:
    model = build.build(_spec([{"name": "a", "op": "aten.arange", "in": [], "args": {"end": 100}}]))
    with limits.raised(max_op_elements=10), pytest.raises(LimitError, match="aten.arange"):
        model(torch.ones(2, 3))
    assert model(torch.ones(2, 3)).shape == (100,)


@pytest.mark.parametrize(("op", "kwargs"), [
    ("arange.default", {"end": 17}),
    ("arange.start", {"start": 3, "end": 17}),
    ("arange.start_step", {"start": 0.5, "end": 7.25, "step": 0.5}),
    ("arange.start_step", {"start": 10, "end": 2, "step": -3}),
    ("arange.start_step", {"start": 0, "end": 1, "step": 3}),
    ("full.default", {"size": (4, 0, 3), "fill_value": 1.0}),
    ("zeros.default", {"size": (5, 6)}),
    ("empty.memory_format", {"size": ()}),
])
def test_factory_sizes_in_closed_form_match_torch(op: str, kwargs: dict) -> None:
    from modelpack.torch._aten import _closed_form

    name, overload = op.split(".")
    made = getattr(getattr(torch.ops.aten, name), overload)(**kwargs, device="meta")
    assert _closed_form("node", op, kwargs) == made.numel()
