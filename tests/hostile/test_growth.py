"""Work bounded by input size (issue 16, class 1): each path at n and 8n, quadratic growth fails.

Every test builds a hostile input whose size grows linearly with n and measures one reader on
it at n and 8n (see growth.py): allocations, CPU time or a count. Quadratic work gives 64x;
the bound is 24x.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelpack import limits, tree
from modelpack.errors import LimitError, ModelPackError, SpecError
from modelpack.spec import validate
from modelpack.spec.shape_rules import dim_text, sizes

from .growth import assert_linear
from .mpkcraft import mpk

pytestmark = pytest.mark.budget(120)


def _doc(nodes: list[dict[str, Any]], blocks: dict[str, Any] | None = None, inputs: int = 1) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "modelpack": 1,
        "inputs": {f"x{i}" if i else "x": {"shape": ["batch", 4], "dtype": "float32"} for i in range(inputs)},
        "nodes": nodes,
        "outputs": [nodes[-1]["name"]],
    }
    if blocks:
        doc["blocks"] = blocks
    return doc


def _validate(doc: Any) -> None:
    validate(json.dumps(doc).encode() if isinstance(doc, dict) else doc)


# ----------------------------------------------------------------------- tree decode


def test_tree_decode_long_key_over_many_items_is_linear() -> None:
    """A path text per element made one long key above many items quadratic (14 MB: no `open`)."""
    def make(n: int) -> Any:  # the key long enough that copying it outweighs the per-item work
        return {"k" * (16 * n): list(range(n))}

    assert_linear(lambda t: tree.decode(t, tree.TensorRef), make, 4000, how="time")


def test_tree_decode_error_still_names_the_path() -> None:
    bad = {"a": [0, {"$dict": [["x", {"$float": "one"}]]}]}
    with pytest.raises(ModelPackError) as info:
        tree.decode(bad, tree.TensorRef)
    assert info.value.where == "manifest.json.tree['a'][1]['x']"


# ----------------------------------------------------------------------- flattened keys


def _long_key_tree(n: int) -> Any:
    return {"k" * n: [{"$tensor": "a"}] * n}


def test_flattened_keys_are_bounded() -> None:
    """key length x references: 1 MB in was 3.5 GB of keys in `diff` and `load_weights`."""
    with limits.raised(max_key_bytes=1 << 18):
        assert_linear(tree.flat_refs, _long_key_tree, 1000, expect=(LimitError,))


def test_flattened_keys_cap_names_itself_and_lets_legit_trees_through() -> None:
    with limits.raised(max_key_bytes=1000), pytest.raises(LimitError, match="max_key_bytes=1,000"):
        tree.flat_refs(_long_key_tree(100))
    assert len(tree.flat_refs(_long_key_tree(100))) == 100


def test_diff_refuses_a_key_bomb(tmp_path: Any) -> None:
    from modelpack.cli import main

    n = 3000  # 9 MB of keys from a 3 KB tree and one tensor
    path = tmp_path / "bomb.mpk"
    path.write_bytes(mpk({"a": np.zeros(1, np.float32)}, tree=_long_key_tree(n)).bytes())
    with limits.raised(max_key_bytes=1 << 20):
        assert main(["diff", str(path), str(path)]) != 0


# ----------------------------------------------------------------------- spec references and names


def test_unknown_dotted_reference_is_linear() -> None:
    """Resolving `a.a.a....` tried every prefix, each joined anew: quadratic in `validate`."""
    def make(n: int) -> Any:
        ref = ".".join(["a"] * n)
        return _doc([{"name": "b", "block": "blk", "in": "x"}, {"name": "y", "op": "relu", "in": ref}],
                    {"blk": {"inputs": ["i"], "nodes": [{"name": "r", "op": "relu", "in": "i"}], "outputs": ["r"]}})

    assert_linear(_validate, make, 3000, how="time", expect=(SpecError,))


def test_long_dotted_node_names_are_linear() -> None:
    """A name cannot also be a parent: checked per prefix, which joined each prefix anew."""
    def make(n: int) -> Any:
        return _doc([{"name": ".".join(["a"] * n), "op": "relu", "in": "x"}])

    assert_linear(_validate, make, 3000, how="time", expect=(SpecError,))


def test_did_you_mean_is_bounded() -> None:
    """Every unknown name compared with every name in scope: a 44 KB spec took 9.5 s."""
    def make(n: int) -> Any:
        nodes = [{"name": f"node{i:05d}", "op": "relu", "in": "x"} for i in range(n)]
        nodes += [{"name": f"use{i:05d}", "op": "relu", "in": f"nodf{i:05d}"} for i in range(n)]
        return _doc(nodes)

    assert_linear(_validate, make, 100, how="time", expect=(SpecError,))


def test_did_you_mean_still_suggests() -> None:
    doc = _doc([{"name": "encoder", "op": "relu", "in": "x"}, {"name": "y", "op": "relu", "in": "encodr"}])
    with pytest.raises(SpecError, match="did you mean 'encoder'"):
        _validate(doc)


def test_unique_items_on_mixed_arrays_is_linear() -> None:
    """jsonschema compares every pair when items do not sort (a 110 KB spec hung)."""
    def make(n: int) -> Any:
        params = [x for i in range(n) for x in (f"p{i}", i, [i], {"k": i})]
        block = {"params": params, "inputs": ["i"], "nodes": [{"name": "r", "op": "relu", "in": "i"}],
                 "outputs": ["r"]}
        return _doc([{"name": "y", "op": "relu", "in": "x"}], {"blk": block})

    assert_linear(_validate, make, 150, how="time", expect=(SpecError,))


def test_unique_items_still_finds_duplicates() -> None:
    block = {"params": ["p", "q", "p"], "inputs": ["i"], "nodes": [{"name": "r", "op": "relu", "in": "i"}],
             "outputs": ["r"]}
    with pytest.raises(SpecError, match="has the element 'p' twice"):
        _validate(_doc([{"name": "y", "op": "relu", "in": "x"}], {"blk": block}))


# ----------------------------------------------------------------------- block expansion


def _literal_bomb(n: int) -> Any:
    """An n-value literal written once, reaching n expanded nodes through a block used n times."""
    inner = {"params": ["v"], "inputs": ["i"], "outputs": ["r"],
             "nodes": [{"name": "r", "op": "relu", "in": "i", "args": {"inplace": {"param": "v"}}}]}
    outer = {"inputs": ["i"], "outputs": ["u"],
             "nodes": [{"name": "u", "block": "inner", "in": "i", "args": {"v": list(range(n))}}]}
    nodes = [{"name": f"b{i}", "block": "outer", "in": "x" if i == 0 else f"b{i - 1}"} for i in range(n)]
    return _doc(nodes, {"inner": inner, "outer": outer})


def test_block_literal_is_shared_not_copied() -> None:
    """A block parameter literal was deep-copied into every expanded node (204 KB: 87 s, 772 MB)."""
    assert_linear(_validate, _literal_bomb, 200, expect=(SpecError, LimitError))


def test_expanded_values_are_capped() -> None:
    with pytest.raises(LimitError, match="max_spec_values=4,000,000"):
        _validate(_literal_bomb(2100))  # 2100 nodes x 2100 values > 4M
    with limits.raised(max_spec_values=1000), pytest.raises(LimitError, match="max_spec_values=1,000"):
        _validate(_literal_bomb(40))
    with pytest.raises(SpecError):  # under the cap: the args checks run (a list is no bool)
        _validate(_literal_bomb(40))


# ----------------------------------------------------------------------- symbolic dims


def test_many_symbolic_dims_are_linear() -> None:
    """Primes by trial division per symbol, and each dim compared with every symbol."""
    def make(n: int) -> list[str]:
        return [f"s{i}" for i in range(n)]

    def run(names: list[str]) -> None:
        runs = [sizes(names, 0), sizes(names, 1)]
        for s in names:
            dim_text(runs[0][s] // 2 + 3, runs[1][s] // 2 + 3, runs)

    assert_linear(run, make, 800, how="time", bound=16)


# ----------------------------------------------------------------------- inspect


def test_inspect_groups_tensors_in_one_pass() -> None:
    """Each node scanned every tensor name: nodes x tensors."""
    from modelpack.inspect import _rows_by_node

    def make(n: int) -> Any:
        nodes = [{"name": f"layer{i}"} for i in range(n)]
        rows = [{"name": f"layer{i}.{p}"} for i in range(n) for p in ("weight", "bias")]
        return nodes, rows

    assert_linear(lambda a: _rows_by_node(*a), make, 2000, how="time")
    owned = _rows_by_node(*make(3))
    assert [r["name"] for r in owned["layer1"]] == ["layer1.weight", "layer1.bias"]


# ----------------------------------------------------------------------- namespace modules


def _dotted_layers(n: int, parts: int = 250) -> dict[str, Any]:
    nodes = [{"name": f"n{i}." + ".".join(["p"] * (parts - 1)), "layer": "Identity", "in": "x"} for i in range(n)]
    doc = _doc(nodes)
    doc["outputs"] = [n["name"] for n in nodes]
    return doc


def test_dotted_names_count_modules_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dotted part became a namespace module: 10k nodes of 250 parts exhausted memory."""
    build = pytest.importorskip("modelpack.torch.build")
    created = []
    original = build.Namespace.__init__
    monkeypatch.setattr(build.Namespace, "__init__", lambda self, *a, **k: (created.append(1), original(self, *a, **k))[1])
    spec = json.dumps(_dotted_layers(40)).encode()  # 40 layers need 10,001 modules (the root included)
    with limits.raised(max_modules=10_000), pytest.raises(LimitError, match="max_modules=10,000"):
        build.build(spec, device="meta")
    assert created == []
    with limits.raised(max_modules=10_001):
        model = build.build(spec, device="meta")
    assert len(created) == 40 * 249  # the namespaces, on the meta device
    assert sum(1 for _ in model.modules()) == 1 + 40 * 250
