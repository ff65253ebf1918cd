"""load_weights: a subset of a file's tensors into an existing module, with a report."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import mp_models as Z  # noqa: E402
from modelpack import api  # noqa: E402
from modelpack.errors import WeightsMismatchError  # noqa: E402
from modelpack.torch.load import LoadReport, load_weights  # noqa: E402


class Block(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)


@pytest.fixture
def resnet(tmp_path):
    return Z.packed(tmp_path, "resnet")


def test_prefix_selects_and_strips(resnet):
    path, model = resnet
    target = nn.Sequential(Block(), Block())
    weight = target[0].conv1.weight
    report = load_weights(target, path, prefix="layer1.")
    assert isinstance(report, LoadReport) and report.ok
    assert len(report.matched) == len(target.state_dict()) and not report.missing and not report.unused
    assert target[0].conv1.weight is weight, "tensors are copied into the existing parameters"
    for key, value in target.state_dict().items():
        assert torch.equal(value, model.state_dict()["layer1." + key]), key


def test_a_prefix_that_selects_nothing_is_an_error(resnet):
    path, _ = resnet
    with pytest.raises(WeightsMismatchError, match=r"prefix 'backbone\.' selects no tensor; the file's keys start "
                                                   r"with: fc, layer1, stem"):
        load_weights(nn.Linear(2, 2), path, prefix="backbone.")


def test_strict_raises_before_copying_anything(resnet):
    path, _ = resnet
    target = nn.Sequential(Block(), Block(), Block())
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_weights(target, path, prefix="layer1.")
    assert "2.conv1.weight: in the module, missing from the file's selection" in info.value.lines
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_non_strict_loads_what_matches_and_reports_the_rest(resnet):
    path, model = resnet
    target = nn.Module()
    target.stem = nn.Conv2d(3, 8, 3, padding=1)
    target.fc = nn.Linear(8, 7)  # a new head: same key, different shape
    target.extra = nn.Linear(2, 2)
    report = load_weights(target, path, strict=False)
    assert report.matched == ["stem.weight", "stem.bias"]
    assert report.missing == ["extra.weight", "extra.bias"]
    assert report.mismatched == ["fc.weight: the module has [7, 8] float32, file has [5, 8] float32",
                                 "fc.bias: the module has [7] float32, file has [5] float32"]
    assert "layer1.0.conv1.weight" in report.unused and not report.ok
    assert torch.equal(target.stem.weight, model.stem.weight)
    assert str(report).startswith("2 loaded, 2 missing, ")


def test_dtype_must_match_too(tmp_path):
    path, _ = Z.packed(tmp_path, "mlp")
    target = nn.Module()
    target.hidden = nn.Linear(20, 64).double()
    with pytest.raises(WeightsMismatchError, match=r"hidden.weight: the module has \[64, 20\] float64, "
                                                   r"file has \[64, 20\] float32"):
        load_weights(target, path, prefix=None, rename=None, strict=True)


def test_rename_maps_file_keys_to_module_keys(resnet):
    path, model = resnet
    target = nn.Linear(8, 5)
    report = load_weights(target, path, prefix="fc.")
    assert report.ok and torch.equal(target.weight, model.fc.weight)
    head = nn.Module()
    head.out = nn.Linear(8, 5)
    report = load_weights(head, path, prefix="fc.", rename=lambda k: "out." + k)
    assert report.ok and torch.equal(head.out.bias, model.fc.bias)
    report = load_weights(head, path, prefix="fc.", rename={"weight": "out.weight", "bias": "out.bias"})
    assert report.matched == ["out.weight", "out.bias"]


def test_a_rename_that_collides_is_an_error(resnet):
    path, _ = resnet
    with pytest.raises(WeightsMismatchError, match="rename maps two file keys to 'same'"):
        load_weights(nn.Linear(8, 5), path, prefix="fc.", rename=lambda k: "same")


def test_any_saved_tensor_dict_is_a_source(tmp_path):
    model = Z.built("mlp")
    path = tmp_path / "checkpoint.mpk"
    api.save({"model": model.state_dict(), "step": 12, "optimizer": {"lr": 0.1}}, path)
    target = nn.Module()
    target.hidden = nn.Linear(20, 64)
    target.output = nn.Linear(64, 10)
    report = load_weights(target, path, prefix="model.")
    assert report.ok and torch.equal(target.output.weight, model.output.weight)


def test_tied_keys_in_the_file_load_into_both_module_keys(tmp_path):
    path, model = Z.packed(tmp_path, "tied_lm")
    target = nn.Module()
    target.embed = nn.Embedding(40, 12)
    target.decoder = nn.Linear(12, 40, bias=False)
    report = load_weights(target, path, strict=False)
    assert set(report.matched) == {"embed.weight", "decoder.weight"}
    assert torch.equal(target.decoder.weight, model.embed.weight)
    assert report.unused == ["norm.weight", "norm.bias"]
