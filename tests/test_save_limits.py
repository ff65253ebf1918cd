"""A file that save accepted loads: save refuses, with the reader's own checks, what load would refuse.

Each cap is lowered with ``modelpack.limits.raised`` around both the save and the load, the way a
user raises one to save something big; the same holds for the defaults with inputs too big for a test.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError, LimitError, api, limits, tree
from modelpack.errors import FormatError, UnsupportedObjectError

SPEC_ONLY = {"max_nodes", "max_yaml_aliases", "max_param_bytes", "max_spec_values", "max_modules"}  # checked by spec validation, on both sides

# cap -> (lowered value, object that needs more, where the save error points)
REFUSED = {
    "max_tree_items": (5, {"x": list(range(10)), "w": np.ones(2)}, "obj['x']"),
    "max_members": (2, {"a": np.ones(2), "b": np.ones(2)}, "central directory"),
    "max_manifest_bytes": (100, {"a": np.ones(2), "note": "x" * 50}, "manifest.json"),
    "max_dims": (2, {"a": np.zeros((1, 1, 1))}, "tensor 'a'"),
    "max_tensors": (1, {"a": np.ones(2), "b": np.ones(2)}, None),
    "max_depth": (2, {"a": [[[np.ones(1)]]]}, "obj['a'][0][0]"),
}


@pytest.mark.parametrize("cap", sorted(REFUSED))
def test_save_refuses_what_load_would_refuse(tmp_path: Path, cap: str) -> None:
    lowered, obj, where = REFUSED[cap]
    path = tmp_path / "x.mpk"
    with limits.raised(**{cap: lowered}):
        with pytest.raises(LimitError, match=rf"exceeds the limit {cap}={lowered}\b") as info:
            modelpack.save(obj, path)
    assert f"modelpack.limits.raised({cap}=...)" in str(info.value)
    if where is not None:
        assert info.value.where == where
    assert os.listdir(tmp_path) == []  # nothing written, no temp file left
    modelpack.save(obj, path)  # the defaults take it, and load it back
    assert list(modelpack.load(path)) == list(obj)


def test_a_spec_past_max_spec_bytes_is_refused_at_save(tmp_path: Path) -> None:
    tree_json, leaves = tree.encode({"w": np.ones(2)})
    with limits.raised(max_spec_bytes=3), pytest.raises(LimitError, match="load would refuse the file"):
        api.write_pack(tmp_path / "s.mpk", tree_json, leaves, spec_text="a: 1\n")
    assert os.listdir(tmp_path) == []


MIXED = {
    "weights": {"linear.weight": np.arange(6.0).reshape(2, 3), "a_rather_long_tensor_name": np.ones(1)},
    "nested": [[[1, 2]], ("abcdef", np.int8(3))],
    "ids": list(range(8)),
}


@pytest.mark.parametrize("cap", sorted({f.name for f in dataclasses.fields(limits.Limits)} - SPEC_ONLY))
def test_whatever_save_accepts_loads_under_the_same_limits(tmp_path: Path, cap: str) -> None:
    """Every cap, at every small value: save either refuses with a LimitError or writes a file load reads."""
    for value in (0, 1, 2, 3, 4, 6, 8, 16, 64, 1000):
        path = tmp_path / f"{value}.mpk"
        with limits.raised(**{cap: value}):
            try:
                modelpack.save(MIXED, path)
            except LimitError:
                assert not path.exists()
                continue
            back = modelpack.load(path)
        assert list(back) == list(MIXED) and back["ids"] == MIXED["ids"], (cap, value)


def test_long_names_saved_under_a_raised_limit_load_under_it(tmp_path: Path) -> None:
    names = ["k" * 700, "m" * 3000]
    path = tmp_path / "long.mpk"
    with limits.raised(max_name_length=4000):
        modelpack.save({n: np.full(2, i) for i, n in enumerate(names)}, path)
        back = modelpack.load(path)
        with modelpack.open(path) as pack:
            assert pack.keys() == names
    assert list(back) == names and back[names[1]].tolist() == [1, 1]
    with pytest.raises(LimitError, match="name length .* exceeds the limit max_name_length=512"):
        modelpack.load(path)  # a LimitError naming the cap, not "not a .mpk file"


def test_a_name_no_zip_can_hold_is_refused_at_save(tmp_path: Path) -> None:
    with limits.raised(max_name_length=100_000), pytest.raises(FormatError, match="at most 65,535 bytes"):
        modelpack.save({"n" * 70_000: np.ones(1)}, tmp_path / "z.mpk")
    assert os.listdir(tmp_path) == []


def test_checkpointer_refuses_a_checkpoint_restore_would_skip(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from modelpack.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path)
    with limits.raised(max_tree_items=40):  # the checkpoint's own strings count too
        ckpt.save(1, extra={"ids": [1, 2]})
        with pytest.raises(CheckpointError, match="max_tree_items") as info:
            ckpt.save(2, extra={"ids": list(range(50))})
        assert isinstance(info.value.__cause__, LimitError)
        assert [f.step for f in ckpt.checkpoints()] == [1]
        again = Checkpointer(tmp_path)
        assert again.restore() == 2  # resumes after step 1, the last checkpoint written, with no warning
        assert again.restored.extra == {"ids": [1, 2]}


def test_an_int_json_cannot_carry_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedObjectError, match="cannot save the tree: .*digits"):
        modelpack.save({"n": 10**5000}, tmp_path / "n.mpk")
    assert os.listdir(tmp_path) == []
