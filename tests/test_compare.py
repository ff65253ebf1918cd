"""modelpack.torch.compare: exact tensor comparison, and export's reproduction check built on it."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from modelpack import ExportError  # noqa: E402
from modelpack.torch.compare import compare_tensors  # noqa: E402
from modelpack.torch.export import ReproductionWarning, export_spec  # noqa: E402

BIG = 2**60  # int64 values above 2**53 collapse when cast to float64


def _nan(payload: int) -> torch.Tensor:
    return torch.tensor([0x7FC00000 + payload], dtype=torch.int32).view(torch.float32)


@pytest.mark.parametrize("a, b, words", [
    (torch.tensor([1 + 2j, 3 + 4j]), torch.tensor([1 + 2j, 3 + 5j]), r"1 of 2 elements differ; first at \[1\]: "
     r"\(3\+4j\) vs \(3\+5j\); max abs difference 1$"),
    (torch.tensor([BIG, 5]), torch.tensor([BIG + 1, 5]), rf"first at \[0\]: {BIG} vs {BIG + 1}; max abs difference 1$"),
    (torch.tensor([2**63 + 5], dtype=torch.uint64), torch.tensor([2**63 + 7], dtype=torch.uint64), "difference 2$"),
    (torch.tensor(-0.0), torch.tensor(0.0), r"first at \[\]: -0.0 vs 0.0; max abs difference 0$"),
    (_nan(0), _nan(1), r"nan \(0x7fc00000\) vs nan \(0x7fc00001\); max abs difference 0$"),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, float("nan")]), r"2.0 vs nan \(0x7fc00000\); max abs difference inf"),
    (torch.tensor([True, False]), torch.tensor([True, True]), "False vs True; max abs difference 1$"),
    (torch.tensor([1.0, 2.0]).to(torch.float8_e4m3fn), torch.tensor([1.0, 3.0]).to(torch.float8_e4m3fn), "1$"),
    (torch.arange(12.0).reshape(3, 4).t(), torch.tensor([[0, 4, 8], [1, 5, 9], [2, 99, 10], [3, 7, 12.0]]),
     r"2 of 12 elements differ; first at \[2, 1\]: 6.0 vs 99.0; max abs difference 93$"),
])
def test_differences_are_found_and_described(a, b, words):
    found = compare_tensors(a, b, where="out")
    assert found is not None and found.kind == "values"
    assert re.search(words, str(found)), str(found)
    assert compare_tensors(a, a.clone()) is None


def test_what_float64_would_hide_is_a_difference():
    a, b = torch.tensor([1 + 2j]), torch.tensor([1 + 3j])
    assert torch.equal(a.real.to(torch.float64), b.real.to(torch.float64))
    assert compare_tensors(a, b) is not None
    x, y = torch.tensor([BIG]), torch.tensor([BIG + 1])
    assert torch.equal(x.to(torch.float64), y.to(torch.float64))
    assert compare_tensors(x, y).max_abs == 1


def test_dtype_and_shape_differences():
    assert str(compare_tensors(torch.zeros(2), torch.zeros(2, dtype=torch.int32), where="o")) == \
        "o: dtype int32 where float32 was expected"
    assert compare_tensors(torch.zeros(2, 3), torch.zeros(3, 2)).kind == "shape"
    assert compare_tensors(torch.zeros(0, 3), torch.zeros(0, 3)) is None


def test_packed_float4_is_compared_by_its_bytes():
    a = torch.tensor([1, 2], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    b = torch.tensor([1, 3], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    assert "first at [1]: 0x02 vs 0x03" in str(compare_tensors(a, b))


# ----------------------------------------------------------------------------- export's check


class _Hooked(nn.Module):
    """A hook changes the output; the fx path's spec has the layer, not its hook, so the rebuilt model
    differs by ``delta`` (torch.export would capture the hook's op: these tests check the comparison)."""

    def __init__(self, delta):
        super().__init__()
        self.body = nn.Identity()
        self.body.register_forward_hook(lambda m, i, out: out + delta)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("x, delta, words", [
    (torch.ones(3, dtype=torch.complex64), 1e-3j, r"max abs difference 0.001 > atol=0.*\(1\+0.001\d*j\) vs \(1\+0j\)"),
    (torch.full((3,), BIG), 1, rf"max abs difference 1 > atol=0.*{BIG + 1} vs {BIG}"),
])
def test_export_sees_differences_float64_hides(x, delta, words):
    with pytest.raises(ExportError, match=words):
        export_spec(_Hooked(delta), (x,), capture="fx")
    with pytest.warns(ReproductionWarning, match="not bit for bit"):
        export_spec(_Hooked(delta), (x,), atol=1.0, capture="fx")


def test_export_at_atol_0_wants_the_same_bits():
    with pytest.raises(ExportError, match=r"the bits differ.*first at \[0\]: 0.0 vs -0.0; max abs difference 0"):
        export_spec(_Hooked(0.0), (torch.full((2,), -0.0),), capture="fx")  # -0.0 + 0.0 is 0.0: equal, but not the same bits
