"""Named limits: each cap is enforced where its reason says, names itself, and can be raised.

For each cap, a legitimate file is refused once the cap is lowered below what it needs (with a
LimitError naming the cap and the way to raise it) and accepted again at the default; caps whose
default a test can cheaply exceed are also raised above it to let a bigger legitimate input in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import api, limits, save
from modelpack.errors import FormatError, LimitError, UnsupportedObjectError

from .guards import guarded, refused, write
from .mpkcraft import mpk


def _deep(depth: int) -> Any:
    node: Any = np.arange(3, dtype=np.int32)
    for _ in range(depth):
        node = [node]
    return node


# cap -> (lowered value, file bytes, expected where)
CASES: dict[str, tuple[int, Callable[[], bytes], str | None]] = {
    "max_members": (2, lambda: mpk().bytes(), "central directory"),
    "max_manifest_bytes": (64, lambda: mpk().bytes(), "manifest.json"),
    "max_manifest_containers": (2, lambda: mpk().bytes(), "manifest.json"),
    "max_spec_bytes": (3, lambda: mpk(spec=b"a: 1\n").bytes(), "spec.yaml"),
    "max_tensors": (1, lambda: mpk().bytes(), "manifest.json.tensors"),
    "max_dims": (1, lambda: mpk().bytes(), "tensor 'a'"),
    "max_depth": (3, lambda: mpk(tree={"a": [[[[{"$tensor": "a"}]]]], "b": {"$tensor": "b"}}).bytes(),
                  "manifest.json.tree['a'][0][0][0]"),
    "max_tree_items": (2, lambda: mpk(tree={"a": {"$tensor": "a"}, "b": {"$tensor": "b"}, "c": "abc"}).bytes(),
                       "manifest.json.tree"),
}


def test_every_container_cap_is_covered() -> None:
    """A new cap must come with a case here (or in the spec suite, for the spec-only caps)."""
    spec_caps = {"max_nodes", "max_yaml_aliases", "max_param_bytes", "max_spec_values", "max_modules",
                 "max_key_bytes", "max_op_elements"}  # test_growth.py, test_spec_cost.py, test_ops.py
    fields = {f.name for f in dataclasses.fields(limits.Limits)}
    assert fields - spec_caps == set(CASES) | {"max_name_length"}


@pytest.mark.parametrize("cap", sorted(CASES))
def test_lowered_cap_refuses_and_default_accepts(tmp_path: Path, cap: str) -> None:
    lowered, build, where = CASES[cap]
    path = write(tmp_path, build())
    with limits.raised(**{cap: lowered}):
        err = refused(path, LimitError, f"exceeds the limit {cap}={lowered:,}", readers=("open", "verify"))
    assert f"modelpack.limits.raised({cap}=...)" in str(err)
    if where is not None:
        assert err.where is not None and err.where.startswith(where), err.where
    with guarded(tmp_path):
        api.Pack(path).close()


def test_name_length_cap(tmp_path: Path) -> None:
    name = "t" * 40
    path = write(tmp_path, mpk({name: np.zeros(2, np.int8)}).bytes())
    with limits.raised(max_name_length=39):  # a LimitError that names the cap, as every other cap
        refused(path, LimitError, "exceeds the limit max_name_length=39", "central directory entry 0")
    with guarded(tmp_path):
        api.Pack(path).close()


def test_raising_depth_lets_a_deep_legit_tree_through(tmp_path: Path) -> None:
    deep = {"x": _deep(80)}
    with pytest.raises(LimitError, match="max_depth"):
        save(deep, tmp_path / "deep.mpk")
    with limits.raised(max_depth=100):
        save(deep, tmp_path / "deep.mpk")
    refused(tmp_path / "deep.mpk", LimitError, "exceeds the limit max_depth=64")
    with limits.raised(max_depth=100), guarded(tmp_path):
        back = api.load(tmp_path / "deep.mpk")
    node = back["x"]
    for _ in range(80):
        node = node[0]
    assert node.tolist() == [0, 1, 2]


def test_raising_members_and_tensors_lets_a_big_legit_file_through(tmp_path: Path) -> None:
    many = {f"t{i}": np.full(1, i, np.int16) for i in range(300)}
    save(many, tmp_path / "many.mpk")
    with limits.raised(max_members=250):
        refused(tmp_path / "many.mpk", LimitError, "max_members", readers=("open",))
    with limits.raised(max_members=250, max_tensors=250):
        refused(tmp_path / "many.mpk", LimitError, "max_members", readers=("open",))
    with limits.raised(max_members=301, max_tensors=299):
        refused(tmp_path / "many.mpk", LimitError, "max_tensors", readers=("open",))
    with limits.raised(max_members=301, max_tensors=300), guarded(tmp_path):
        assert len(api.load(tmp_path / "many.mpk")) == 300


def test_limits_are_scoped_and_named() -> None:
    before = limits.current()
    with limits.raised(max_dims=3) as inside:
        assert inside.max_dims == 3 and limits.current().max_dims == 3
    assert limits.current() == before
    with pytest.raises(TypeError, match="unknown limit"):
        with limits.raised(max_everything=1):
            pass


def test_saving_what_cannot_be_loaded_is_refused_early(tmp_path: Path) -> None:
    """The writer checks the same depth cap, so a default reader can load whatever a default writer wrote."""
    with pytest.raises((LimitError, UnsupportedObjectError)):
        save({"x": _deep(70)}, tmp_path / "d.mpk")
    assert not (tmp_path / "d.mpk").exists()
