"""Shape arithmetic on plain values is bounded (issue 16, class 2): ints in int64, short sequences, else SpecError.

Before, ``pow`` of a size by a big scalar ran for minutes and a string scalar
times a big int allocated gigabytes, in ``validate --shapes``, ``build`` + run
and ``modelpack run`` alike. Each case here must come back at once (the
hostile guard's time budget) with a SpecError naming the operation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.errors import SpecError  # noqa: E402
from modelpack.torch import _arith, ops  # noqa: E402

from .guards import guarded  # noqa: E402


def _spec(op: str, value: str, first: str = "s") -> str:
    return ("modelpack: 1\ninputs: {x: {shape: [batch, 4]}}\nnodes:\n"
            "  - {name: s, op: size, in: [x], args: {dim: 0}}\n"
            f"  - {{name: c, op: scalar, args: {{value: {value}}}, in: []}}\n"
            f"  - {{name: r, op: {op}, in: [{first}, c]}}\n"
            "  - {name: y, op: mul, in: [x, r]}\n"
            "outputs: [y]\n")


HOSTILE = {
    "pow-huge-exponent": _spec("pow", "1000000000"),
    "pow-int64-overflow": _spec("pow", "64"),
    "str-times-big-int": _spec("mul", "1000000000000", first="c").replace("value: 1000000000000", "value: abc")
    .replace("in: [c, c]", "in: [c, s]").replace("{name: s, op: size, in: [x], args: {dim: 0}}",
                                                 "{name: s, op: scalar, args: {value: 1000000000000}, in: []}"),
    "list-times-big-int": _spec("mul", "[1, 2]", first="c").replace("in: [c, c]", "in: [c, s]")
    .replace("{name: s, op: size, in: [x], args: {dim: 0}}", "{name: s, op: scalar, args: {value: 1000000000}, in: []}"),
    "add-int64-overflow": _spec("add", "9223372036854775807"),
    "mul-int64-overflow": _spec("mul", "9223372036854775807"),
    "div-by-zero": _spec("div", "0"),
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_validate_shapes_reports_a_spec_error(text: str) -> None:
    with guarded():
        with pytest.raises(SpecError) as info:
            modelpack.validate(text, shapes=True)
    assert any(w in str(info.value) for w in ("int64", "items", "not str", "ZeroDivisionError")), str(info.value)


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_built_model_raises_a_spec_error(text: str) -> None:
    model = modelpack.build(text)
    with guarded(), pytest.raises(SpecError):
        model(torch.zeros(2, 4))


def test_doubling_chain_is_bounded() -> None:
    """``t = t + t`` 40 times would build a tuple of 2**40 items: refused once past MAX_ITEMS."""
    nodes = ["  - {name: t0, op: size, in: [x]}"]
    nodes += [f"  - {{name: t{i}, op: add, in: [t{i - 1}, t{i - 1}]}}" for i in range(1, 41)]
    text = "modelpack: 1\ninputs: {x: {shape: [2, 4]}}\nnodes:\n" + "\n".join(nodes) + "\noutputs: [t40]\n"
    model = modelpack.build(text)
    with guarded(), pytest.raises(SpecError, match="more than 1024"):
        model(torch.zeros(2, 4))


def test_cli_run_gives_one_line(tmp_path: Path) -> None:
    model = modelpack.build(HOSTILE["pow-huge-exponent"].replace("value: 1000000000", "value: 2"))
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, (torch.zeros(2, 4),))
    # swap the exponent in the stored spec for a huge one: the weights stay valid
    import zipfile

    with zipfile.ZipFile(path) as z:
        spec = z.read("spec.yaml").decode()
    assert "value: 2" in spec
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4), np.float32))
    hostile = tmp_path / "h.mpk"
    from modelpack.api import write_pack

    write_pack(hostile, {}, [], spec_text=spec.replace("value: 2", "value: 1000000000"))
    err = io.StringIO()
    import contextlib

    with guarded(tmp_path), contextlib.redirect_stderr(err):
        code = main(["run", str(hostile), "--input", str(x), "--output", str(tmp_path / "y.npy")], out=err)
    assert code == 1 and "int64" in err.getvalue() and len(err.getvalue().splitlines()) == 1, err.getvalue()


@pytest.mark.parametrize("fn, args, ok", [
    (ops.add, (3, 4), 7), (ops.mul, (4, 0.5), 2.0), (ops.pow, (64, -0.5), 0.125), (ops.pow, (3, 39), 3**39),
    (ops.add, ((1, 2), (3,)), (1, 2, 3)), (ops.mul, ((1,), 3), (1, 1, 1)), (ops.div, (7, 2, "floor"), 3),
    (ops.div, (-7, 2, "trunc"), -3), (ops.neg, (5,), -5), (ops.sub, (torch.Size([2, 3])[0], 1), 1),
])
def test_legitimate_shape_arithmetic_still_works(fn, args, ok) -> None:  # type: ignore[no-untyped-def]
    assert fn(*args) == ok


@pytest.mark.parametrize("fn, args", [
    (ops.pow, (2, 10**9)), (ops.pow, (-8, 0.5)), (ops.mul, ("ab", 10**12)), (ops.mul, ([0], 10**12)),
    (ops.add, ("a", "b")), (ops.add, (2**63 - 1, 1)), (ops.neg, (-(2**63),)), (ops.mul, (1e308, 10.0)),
    (ops.pow, (10.0, 400)), (ops.div, (1, 0)), (ops.add, (None, 1)), (ops.add, (((1,),), (2,))),
])
def test_unbounded_or_foreign_arithmetic_is_a_spec_error(fn, args) -> None:  # type: ignore[no-untyped-def]
    with guarded(), pytest.raises(SpecError):
        fn(*args)


def test_plain_values_only() -> None:
    assert _arith.is_plain(3) and _arith.is_plain((1, 2)) and _arith.is_plain("a")
    assert not _arith.is_plain(torch.zeros(1)) and _arith.is_plain(None)
