"""The torch.export path on constructs real models (timm) use: each class of gap once closed, round-tripped bit-exact.

Each module reproduces, by hand, what a family of real models does: a number on the left of
an operator (``1 - x``, aten.rsub.Scalar), ``arange(start, end)`` (the sibling overload of
``arange(end)``), an in-place op (functionalized, which lowers ``matmul`` to ``_unsafe_view``),
a size turned into a float (``torch.sym_float``), sizes through ``max``/``min``/``math.ceil``/``%``,
antialiased and 1-d resizes, a fold that cannot run; and on the fx path, a norm layer
that calls ``F.batch_norm`` itself.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.torch._export_graph import UnreadTensorsWarning  # noqa: E402


class ReflectedOperators(nn.Module):
    def forward(self, x):
        return (1.0 - x) * (2 / (x.abs() + 1)) + 3 ** x.clamp(-1, 1)


class ArangeFromStart(nn.Module):
    def forward(self, x):
        return x + torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)


class InPlaceThenMatmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))

    def forward(self, x):
        y = x.clone()
        y.mul_(2.0)  # in place: the capture functionalizes the program
        return y @ self.w  # 3-d @ 2-d: view, mm, _unsafe_view once functionalized


class SizeAsFloat(nn.Module):
    def forward(self, x):
        return x * torch.sym_float(x.shape[-1]) ** -0.5


@pytest.mark.parametrize("model", [ReflectedOperators(), ArangeFromStart(), InPlaceThenMatmul(), SizeAsFloat()],
                         ids=lambda m: type(m).__name__)
def test_export_path_round_trips_bit_exact(tmp_path, model):
    x = torch.randn(2, 3, 6)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture="export")
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), model(x))


class SamePaddedMaxPool(nn.Module):
    """"Same" max pooling pads with -inf (timm's hybrid ViTs), masks fill with -inf and NaN: the spec
    writes them as YAML does (``-.inf``, ``.nan``)."""

    def forward(self, x):
        y = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
        masked = y.masked_fill(y > 0, float("-inf"))
        return masked, torch.full_like(y, float("nan")).nan_to_num(2.0) + masked.clamp(min=float("-inf"))


@pytest.mark.parametrize("capture", ["export", "fx"])
def test_non_finite_literals_round_trip_bit_exact(tmp_path, capture):
    class PadPool(nn.Module):  # what the fx path can trace: the pad and the pool
        def forward(self, x):
            return nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)

    model = SamePaddedMaxPool() if capture == "export" else PadPool()
    x = torch.randn(1, 2, 7, 7)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture=capture)
    text = modelpack.api.read_spec_text(path)
    assert "-.inf" in text and (".nan" in text or capture == "fx")
    with torch.no_grad():
        got, want = modelpack.load_model(path)(x), model(x)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


class BatchNormAct(nn.BatchNorm2d):
    """A norm layer that calls F.batch_norm itself, then an activation (timm's BatchNormAct2d)."""

    def forward(self, x):
        x = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                     self.training, self.momentum, self.eps)
        return torch.relu(x)


def test_functional_batch_norm_traces_with_fx_bit_exact(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct(4)).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "m.mpk"
    with warnings.catch_warnings():  # num_batches_tracked, read only in train mode, is kept without a warning
        warnings.simplefilter("error", UnreadTensorsWarning)
        modelpack.export(model, path, x, capture="fx")
    assert "aten.batch_norm" in modelpack.api.read_spec_text(path)
    assert sorted(modelpack.load_model(path).state_dict()) == sorted(model.state_dict())
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), model(x))


class Meshgrid(nn.Module):
    """A coordinate grid for position embeddings (rotary ViTs), built from the input's sizes."""

    def forward(self, x):
        ys, xs = torch.meshgrid(torch.arange(x.shape[-2], dtype=x.dtype), torch.arange(x.shape[-1], dtype=x.dtype),
                                indexing="ij")
        return x + ys * 2 + xs


def test_meshgrid_round_trips_bit_exact(tmp_path):
    x = torch.randn(1, 2, 3, 5)
    path = tmp_path / "m.mpk"
    modelpack.export(Meshgrid(), path, x, capture="export")
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), Meshgrid()(x))


class PadToMultiple(nn.Module):
    """Pads the last dim to a multiple of 4 (window attention): ``size % 4`` of a symbolic size."""

    def forward(self, x):
        pad = (4 - x.shape[-1] % 4) % 4
        return nn.functional.pad(x, (0, pad)) * 2


@pytest.mark.parametrize("width", [5, 8])
def test_size_modulo_round_trips_and_follows_the_size(tmp_path, width):
    x = torch.randn(2, 3, width)
    path = tmp_path / "m.mpk"
    modelpack.export(PadToMultiple(), path, x, capture="export")
    model = modelpack.load_model(path)
    with torch.no_grad():
        assert torch.equal(model(x), PadToMultiple()(x))
        other = torch.randn(2, 3, width + 2)
        assert torch.equal(model(other), PadToMultiple()(other))


class SizeMaxMinCeil(nn.Module):
    """Sizes through ``max``/``min`` (vgg's pre-logits pooling), ``math.ceil`` of a ratio (hybrid ViT padding)."""

    def forward(self, x):
        import math

        wide = max(8, x.shape[-1]) - x.shape[-1]  # torch.sym_max
        narrow = min(x.shape[-1], 7)  # torch.sym_min
        extra = math.ceil(x.shape[-1] / 3) - x.shape[-1] // 3  # math.ceil of a float
        return nn.functional.pad(x, (0, wide + extra)) * narrow


@pytest.mark.parametrize("width", [5, 6, 9])
def test_size_max_min_ceil_round_trip_and_follow_the_size(tmp_path, width):
    x = torch.randn(2, 3, width)
    path = tmp_path / "m.mpk"
    modelpack.export(SizeMaxMinCeil(), path, x, capture="export")
    model = modelpack.load_model(path)
    with torch.no_grad():
        for other in (x, torch.randn(2, 3, width + 1), torch.randn(2, 3, width + 4)):
            assert torch.equal(model(other), SizeMaxMinCeil()(other))


@pytest.mark.parametrize("mode,size", [("bicubic", (5, 7)), ("bilinear", (3, 9))])
def test_antialiased_resize_round_trips_bit_exact(tmp_path, mode, size):
    class Resize(nn.Module):  # position-embedding resampling (timm resample_abs_pos_embed)
        def forward(self, x):
            return nn.functional.interpolate(x, size=size, mode=mode, antialias=True)

    x = torch.randn(1, 2, 6, 6)
    path = tmp_path / "m.mpk"
    modelpack.export(Resize(), path, x, capture="export")
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), Resize()(x))


def test_linear_1d_resize_round_trips_bit_exact(tmp_path):
    class Resize1d(nn.Module):  # relative-position tables resampled along one axis (SAM ViT)
        def forward(self, x):
            return nn.functional.interpolate(x, size=11, mode="linear")

    x = torch.randn(1, 2, 6)
    path = tmp_path / "m.mpk"
    modelpack.export(Resize1d(), path, x, capture="export")
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), Resize1d()(x))


class WindowPadding(nn.Module):
    """On the fx path: ``math.ceil`` of a size ratio (volo) and ``size % window`` (davit) as size arithmetic."""

    def forward(self, x):
        import math

        pad = (3 - x.shape[-1] % 3) % 3 + math.ceil(x.shape[-1] / 4) - math.floor(x.shape[-1] / 4)
        return x.sum(-1, keepdim=True).expand(x.shape[0], x.shape[1], pad + 1) * 2  # the size follows


@pytest.mark.parametrize("width", [5, 6, 8])
def test_size_ceil_and_modulo_trace_with_fx_bit_exact(tmp_path, width):
    x = torch.randn(2, 3, width)
    path = tmp_path / "m.mpk"
    modelpack.export(WindowPadding(), path, x, capture="fx", dynamic_dims={"x": {0: "batch", 2: "width"}})
    model = modelpack.load_model(path)
    with torch.no_grad():
        for other in (x, torch.randn(2, 3, width + 1), torch.randn(2, 3, width + 3)):
            assert torch.equal(model(other), WindowPadding()(other))


class SplitThenConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.split(x, 2, 1)[0])


def test_fold_that_cannot_run_keeps_the_ops(tmp_path, monkeypatch):
    """A fold that hands a layer the wrong tensor (seen as torch's own shape error in the check, as in
    timm's selective-kernel and res2net splits) is not reproduced: the layer call stays as its ATen ops."""
    from modelpack.torch import _capture, _fold

    def misfold(nodes, meta, model, outputs, calls):  # the conv reads the unsplit input, as a bad fold would
        folded, renames = _fold.fold_layers(nodes, meta, model, outputs, calls)
        return [{**n, "in": ["x"]} if n.get("layer") == "Conv2d" else n for n in folded], renames

    monkeypatch.setattr(_capture, "fold_layers", misfold)
    model, x = SplitThenConv().eval(), torch.randn(1, 4, 5, 5)
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, x, capture="export")
    assert "layer: Conv2d" not in modelpack.api.read_spec_text(path)
    with torch.no_grad():
        assert torch.equal(modelpack.load_model(path)(x), model(x))


class UnfoldMixFold(nn.Module):
    """Sliding windows as columns, mixed, folded back (volo's outlook attention): aten.im2col, aten.col2im."""

    def __init__(self) -> None:
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=3, padding=1, stride=2)
        self.mix = nn.Linear(18, 18)
        self.fold = nn.Fold(output_size=(7, 7), kernel_size=3, padding=1, stride=2)

    def forward(self, x):
        return self.fold(self.mix(self.unfold(x).transpose(1, 2)).transpose(1, 2))


def test_unfold_and_fold_round_trip_bit_exact(tmp_path):
    model = UnfoldMixFold().eval()
    path = tmp_path / "m.mpk"
    modelpack.export(model, path, torch.randn(2, 2, 7, 7), capture="export")
    text = modelpack.api.read_spec_text(path)
    assert "op: aten.im2col" in text and "op: aten.col2im" in text
    rebuilt = modelpack.load_model(path)
    assert sorted(rebuilt.state_dict()) == sorted(model.state_dict())
    with torch.no_grad():
        for x in (torch.randn(2, 2, 7, 7), torch.randn(3, 2, 7, 7)):  # and another batch size
            assert torch.equal(rebuilt(x), model(x))
