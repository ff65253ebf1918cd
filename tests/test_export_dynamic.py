"""Which sizes stay symbolic on the torch.export path, and the default's fallback when they cannot.

By default every input size is ``Dim.AUTO``. Where torch.export fails on the model's size
arithmetic, or takes longer than ``dynamic_timeout``, export captures again with only the batch
dim symbolic, then with none, warns naming the sizes it fixed, and the file still reproduces the
model bit for bit at those sizes. Sizes the caller names are never fixed behind their back.
"""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.api import read_spec_text  # noqa: E402
from modelpack.errors import ExportError  # noqa: E402
from modelpack.spec import parse_yaml  # noqa: E402
from modelpack.torch.export import ExportWarning  # noqa: E402


class _PadToEven(nn.Module):
    """A stride-16 stem, a pad to an even length, a 2x down and up projection cropped back (timm's cpubone).

    With the length symbolic, torch.export's constraint solver meets ``Eq(2*((n//16)//2), n//16)`` and
    sympy raises NotImplementedError ("cannot be solved"); with the length fixed it captures.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 2, 3, stride=16, padding=1)
        self.down = nn.Conv1d(2, 2, 2, stride=2)
        self.up = nn.ConvTranspose1d(2, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x)
        n = t.shape[-1]
        if (-n) % 2:
            t = F.pad(t, (0, 1))
        return self.up(self.down(t))[..., :n] + t


class _BatchAsLength(nn.Module):
    """The same arithmetic on the batch dim: only a capture with every size fixed succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _PadToEven()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.reshape(1, 1, -1)).sum(1)


class _SlowWhenSymbolic(nn.Module):
    """Stands in for a model whose symbolic size arithmetic takes torch.export minutes (swin, twins):
    each block waits while its last size is symbolic."""

    def __init__(self, wait: float) -> None:
        super().__init__()
        self.wait = wait
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if isinstance(x.shape[-2], torch.SymInt):
                time.sleep(self.wait)
            x = block(x).relu()
        return x


def _shapes(path) -> dict:
    return {k: v["shape"] for k, v in parse_yaml(read_spec_text(path))[0]["inputs"].items()}


def test_a_size_torch_export_cannot_solve_is_fixed_with_a_warning_and_the_batch_stays(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _PadToEven().eval(), torch.randn(3, 1, 128)
    with pytest.warns(ExportWarning, match=r"could not keep every size symbolic \(.*NotImplementedError.*"
                                           r"only the leading \(batch\) dims symbolic: input 'x' dim 2 fixed at 128"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    assert _shapes(tmp_path / "m.mpk") == {"x": ["batch", 1, 128]}
    other = torch.randn(5, 1, 128)
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(other), model(other))


def test_when_the_batch_dim_fails_too_every_size_is_fixed(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _BatchAsLength().eval(), torch.randn(128, 1)
    with pytest.warns(ExportWarning, match=r"every size fixed: input 'x' dim 0 fixed at 128"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export")
    assert _shapes(tmp_path / "m.mpk") == {"x": [128, 1]}
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(x), model(x))


def test_sizes_the_caller_names_are_never_fixed(tmp_path) -> None:
    model, x = _PadToEven().eval(), torch.randn(3, 1, 128)
    with pytest.raises(ExportError, match=r"torch.export could not capture _PadToEven: NotImplementedError"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export", dynamic_dims={"x": {2: "n"}})
    assert not (tmp_path / "m.mpk").exists()


def test_a_capture_past_dynamic_timeout_starts_over_with_fewer_symbolic_sizes(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _SlowWhenSymbolic(wait=0.5).eval(), torch.randn(2, 6, 8)
    with pytest.warns(ExportWarning, match=r"more than dynamic_timeout=0.2 s.*input 'x' dims 1, 2 fixed at 6, 8"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export", dynamic_timeout=0.2)
    assert _shapes(tmp_path / "m.mpk") == {"x": ["batch", 6, 8]}
    other = torch.randn(3, 6, 8)
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(other), model(other))


def test_a_timeout_after_torch_export_returns_falls_back_too(tmp_path, monkeypatch) -> None:
    """The limit holds over the whole capture: run_decompositions after torch.export calls torch too."""
    from modelpack.torch import _export_capture

    real = _export_capture.capture

    def slow_after(model, args, kwargs, shapes):
        program = real(model, args, kwargs, shapes)
        time.sleep(0.3)
        torch.zeros(1)  # the first torch call past the limit raises
        return program

    monkeypatch.setattr(_export_capture, "capture", slow_after)
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8)).eval(), torch.randn(2, 6, 8)
    with pytest.warns(ExportWarning, match=r"more than dynamic_timeout=0.1 s.*input 'input' dims 1, 2 fixed at 6, 8"):
        modelpack.export(model, tmp_path / "m.mpk", x, capture="export", dynamic_timeout=0.1)
    assert _shapes(tmp_path / "m.mpk") == {"input": ["batch", 6, 8]}


def test_without_a_timeout_the_slow_capture_keeps_every_size(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = _SlowWhenSymbolic(wait=0.05).eval(), torch.randn(2, 6, 8)
    modelpack.export(model, tmp_path / "m.mpk", x, capture="export", dynamic_timeout=None)
    assert _shapes(tmp_path / "m.mpk") == {"x": ["batch", "x_1", 8]}
    other = torch.randn(3, 9, 8)
    assert torch.equal(modelpack.load_model(tmp_path / "m.mpk")(other), model(other))


_FORWARD_SHAPES: list[tuple[object, ...]] = []  # module-level: torch.export restores a module's attributes


class _DataDependent(nn.Module):
    """Python control flow on a tensor's values: no choice of sizes lets torch.export capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _FORWARD_SHAPES.append(tuple(x.shape))
        return x * 2 if x.sum() > 0 else x


def test_a_failure_that_does_not_depend_on_sizes_is_raised_after_one_retry(tmp_path) -> None:
    _FORWARD_SHAPES.clear()
    with pytest.raises(ExportError, match=r"torch.export could not capture _DataDependent") as caught:
        modelpack.export(_DataDependent().eval(), tmp_path / "m.mpk", torch.ones(3, 4), capture="export")
    assert "every size symbolic" not in str(caught.value)  # the same failure twice: nothing more to say
    # the reference run, every size symbolic, the batch alone; never every size fixed
    assert [sum(isinstance(n, int) for n in shape) for shape in _FORWARD_SHAPES] == [2, 0, 1]


@pytest.mark.parametrize("timeout", [0, -1, "60", True])
def test_dynamic_timeout_must_be_a_positive_number_or_none(tmp_path, timeout) -> None:
    with pytest.raises(ExportError, match=r"dynamic_timeout=.*give a number of seconds > 0, or None"):
        modelpack.export(nn.Sequential(nn.Linear(2, 2)), tmp_path / "m.mpk", torch.randn(2, 2),
                         dynamic_timeout=timeout)
