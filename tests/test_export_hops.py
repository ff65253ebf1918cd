"""Higher-order ops on the torch.export path: grad-mode regions inlined, autocast and control flow refused.

``with torch.no_grad():`` inside forward reaches the converter as a
``wrap_with_set_grad_enabled`` call on a subgraph; the rebuilt model computes
the same values and, like the original, sends no gradient into the region.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.errors import ExportError  # noqa: E402


class _NoGradPart(nn.Module):
    """``inner`` runs without grad (its output is a constant to the rest); ``outer`` trains as usual."""

    def __init__(self, mode: str = "no_grad") -> None:
        super().__init__()
        self.mode = mode
        self.inner = nn.Linear(4, 4)
        self.outer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = torch.no_grad() if self.mode == "no_grad" else torch.set_grad_enabled(self.mode == "enable")
        with region:
            y = self.inner(x).relu()
            z = y * 2
        return self.outer(x) + y + z


def _pair(tmp_path, model: nn.Module, x: torch.Tensor) -> nn.Module:
    modelpack.export(model, tmp_path / "m.mpk", x)
    return modelpack.load_model(tmp_path / "m.mpk")


@pytest.mark.parametrize("mode", ["no_grad", "disable", "enable"])
def test_a_grad_mode_region_exports_and_round_trips_bit_exactly(tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    model, x = _NoGradPart(mode).eval(), torch.randn(3, 4)
    rebuilt = _pair(tmp_path, model, x)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    other = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(rebuilt(other), model(other))


@pytest.mark.parametrize("mode", ["no_grad", "disable", "enable"])
def test_in_train_mode_gradients_reach_the_region_as_in_the_original(tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    model, x = _NoGradPart(mode).eval(), torch.randn(3, 4)
    rebuilt = _pair(tmp_path, model, x)
    for m in (model, rebuilt):
        m.train()
        m.zero_grad(set_to_none=True)
        m(x).sum().backward()
    stopped = mode != "enable"
    for m in (model, rebuilt):
        assert (m.inner.weight.grad is None) == stopped
        assert m.outer.weight.grad is not None
    if not stopped:
        assert torch.equal(rebuilt.inner.weight.grad, model.inner.weight.grad)
    assert torch.equal(rebuilt.outer.weight.grad, model.outer.weight.grad)


def test_an_explicit_detach_stops_gradients_in_the_rebuilt_model_too(tmp_path) -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x).detach() + self.b(x)

    torch.manual_seed(0)
    model, x = Detached().eval(), torch.randn(3, 4)
    rebuilt = _pair(tmp_path, model, x)
    rebuilt.train()
    rebuilt(x).sum().backward()
    assert rebuilt.a.weight.grad is None and rebuilt.b.weight.grad is not None


def test_nested_regions_are_inlined_innermost_first(tmp_path) -> None:
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                y = self.a(x)
                with torch.enable_grad():
                    y = y + 1
                y = y.relu()
            return self.b(x) * y

    torch.manual_seed(0)
    model, x = Nested().eval(), torch.randn(3, 4)
    rebuilt = _pair(tmp_path, model, x)
    with torch.no_grad():
        assert torch.equal(rebuilt(x * 3), model(x * 3))


class _Autocast(nn.Module):
    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.enabled):
            y = self.lin(x)
        return y.float() + 1


def test_an_autocast_region_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"torch\.autocast inside forward is not supported by the spec"):
        modelpack.export(_Autocast(True).eval(), tmp_path / "m.mpk", torch.randn(3, 4))
    assert not (tmp_path / "m.mpk").exists()


def test_a_disabled_autocast_region_is_a_no_op_and_exports(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _Autocast(False).eval(), torch.randn(3, 4)
    rebuilt = _pair(tmp_path, model, x)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")  # torch.cond's own tracing
def test_torch_cond_is_refused_naming_the_op(tmp_path) -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))

    with pytest.raises(ExportError, match=r"higher-order op 'cond' \(torch\.cond\)"):
        modelpack.export(Branchy().eval(), tmp_path / "m.mpk", torch.randn(3, 4))


def test_the_fx_tracer_refuses_a_grad_mode_switch_it_cannot_record(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"forward switches autograd mode .*capture='export' carries it"):
        modelpack.export(_NoGradPart().eval(), tmp_path / "m.mpk", torch.randn(3, 4), capture="fx")
