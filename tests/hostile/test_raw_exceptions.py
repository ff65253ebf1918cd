"""Lies that used to escape as raw exceptions (issue 16, class 4) and names matched too loosely (class 7).

A zero-size tensor whose other dims overflow int64 (``[0, 2**62]``) holds no
byte, yet numpy cannot describe it: every reader refuses it as a FormatError,
and checkpoint restore falls back past it like past any other damage.
Checkpoint names are matched with ASCII digits only: a file named with other
Unicode digits is not ours, so it is neither listed nor deleted by retention.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack.cli import main
from modelpack.errors import FormatError

from .guards import guarded, write
from .mpkcraft import mpk

HAS_TORCH = importlib.util.find_spec("torch") is not None


class _Claimed:
    """Looks like an empty array of any shape to the crafting helper (no such numpy array exists)."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "float32") -> None:
        self.shape, self.dtype, self.nbytes = shape, np.dtype(dtype), 0

    def astype(self, dtype: Any) -> _Claimed:
        return self

    def tobytes(self) -> bytes:
        return b""


def _empty_but_huge(tree: Any = None) -> bytes:
    tensors = {"w": np.ones(3, np.float32), "z": _Claimed((0, 2**62))}
    return mpk(tensors, tree=tree).bytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("shape, refused", [((0, 2**62), True), ((2**61, 0, 3), True), ((0, 2**60), False)])
def test_zero_size_shape_spanning_2_63_is_refused_on_open(tmp_path: Path, shape: tuple[int, ...], refused: bool) -> None:
    path = write(tmp_path, mpk({"z": _Claimed(shape)}).bytes())  # type: ignore[dict-item]
    with guarded(tmp_path):
        if not refused:
            assert modelpack.load(path)["z"].shape == shape
            return
        with pytest.raises(FormatError, match=r"spans 2\*\*63 bytes or more"):
            modelpack.open(path)


@pytest.mark.parametrize("verb", ["verify", "load", "load-nommap", "diff", "cli-verify", "cli-diff"])
def test_every_reader_refuses_the_zero_size_overflow(tmp_path: Path, verb: str) -> None:
    path = write(tmp_path, _empty_but_huge())
    other = write(tmp_path, mpk().bytes(), "other.mpk")
    with guarded(tmp_path):
        if verb.startswith("cli-"):
            err = io.StringIO()
            import contextlib

            with contextlib.redirect_stderr(err):
                code = main([verb[4:], str(path), str(other)] if verb == "cli-diff" else [verb[4:], str(path)],
                            out=err)
            assert code == 1 and "spans 2**63" in err.getvalue() and len(err.getvalue().splitlines()) == 1
            return
        with pytest.raises(FormatError, match=r"spans 2\*\*63"):
            if verb == "verify":
                modelpack.verify(path)
            elif verb == "diff":
                from modelpack.diff import diff_report

                diff_report(path, other, atol=0.0, out=io.StringIO())
            else:
                modelpack.load(path, mmap=verb == "load")


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_load_model_refuses_the_zero_size_overflow(tmp_path: Path) -> None:
    spec = (b"modelpack: 1\ninputs: {x: {shape: [batch, 3]}}\nnodes:\n"
            b"  - {name: w, layer: Parameter, args: {shape: [3]}, in: []}\n  - {name: y, op: add, in: [x, w]}\n"
            b"outputs: [y]\n")
    tensors = {"w": np.ones(3, np.float32), "z": _Claimed((0, 2**62))}
    path = write(tmp_path, mpk(tensors, spec=spec, tree={"w": {"$tensor": "w"}, "z": {"$tensor": "z"}}).bytes())  # type: ignore[arg-type]
    with guarded(tmp_path), pytest.raises(FormatError, match=r"spans 2\*\*63"):
        modelpack.load_model(path)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_restore_falls_back_past_the_zero_size_overflow(tmp_path: Path) -> None:
    import torch

    from modelpack.checkpoint import Checkpointer, CheckpointWarning
    from modelpack.checkpoint._core import FORMAT, VERSION

    model = torch.nn.Linear(2, 2)
    Checkpointer(tmp_path).save(1, model=model)
    state = {"format": FORMAT, "version": VERSION, "step": 2, "model": {"z": {"$tensor": "z"}}}
    (tmp_path / "ckpt-000000000002.mpk").write_bytes(mpk({"z": _Claimed((0, 2**62))}, tree=state).bytes())  # type: ignore[dict-item]
    with guarded(tmp_path), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Checkpointer(tmp_path).restore(model=torch.nn.Linear(2, 2)) == 2
    assert any(issubclass(w.category, CheckpointWarning) and "spans 2**63" in str(w.message) for w in caught)


UNICODE_DIGITS = ["\u0660" * 12, "\uff11" * 12, "00000000000\u0661", "\U0001d7ce" * 12]  # Arabic-Indic, fullwidth, math


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
@pytest.mark.parametrize("digits", UNICODE_DIGITS, ids=["arabic", "fullwidth", "mixed", "math"])
def test_checkpoint_names_take_ascii_digits_only(tmp_path: Path, digits: str) -> None:
    import torch

    from modelpack.checkpoint import Checkpointer

    foreign = tmp_path / f"ckpt-{digits}.mpk"
    foreign.write_bytes(b"someone else's file")
    ck = Checkpointer(tmp_path, keep_last=1)
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3):
        ck.save(step, model=model)
    assert [c.step for c in ck.checkpoints()] == [3]
    assert foreign.read_bytes() == b"someone else's file"
