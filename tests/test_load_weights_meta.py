"""load_weights into a module built on the meta device: never a silent no-op; ``assign=True`` loads it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import modelpack  # noqa: E402
from modelpack.errors import WeightsMismatchError  # noqa: E402
from modelpack.torch.load import load_weights  # noqa: E402


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.emb.weight
        self.norm = nn.BatchNorm1d(4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(ids)))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = _Tied()
    path = tmp_path / "w.mpk"
    modelpack.save(model.state_dict(), path)
    return path, model


def _meta() -> _Tied:
    with torch.device("meta"):
        return _Tied()


def test_strict_refuses_to_copy_into_meta_tensors(saved):
    path, _ = saved
    with pytest.raises(WeightsMismatchError, match=r"emb.weight: the module's tensor is on the meta device.*"
                                                   r"pass assign=True"):
        load_weights(_meta(), path)


def test_non_strict_warns_like_torch_and_reports_nothing_loaded(saved):
    path, _ = saved
    target = _meta()
    with pytest.warns(UserWarning, match=r"tensor\(s\) of the module are on the meta device and were not loaded.*"
                                         "pass assign=True"):
        report = load_weights(target, path, strict=False)
    assert report.matched == [] and len(report.mismatched) == len(target.state_dict())
    assert target.emb.weight.is_meta


def test_assign_makes_the_file_tensors_the_module_s(saved):
    path, model = saved
    target = _meta()
    report = load_weights(target, path, assign=True)
    assert report.ok and len(report.matched) == len(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert isinstance(target.emb.weight, nn.Parameter) and target.emb.weight.requires_grad
    assert target.head.weight is target.emb.weight, "a tie stored once stays one Parameter"
    assert not any(t.is_meta for t in (*target.parameters(), *target.buffers()))
    assert torch.equal(target.eval()(torch.tensor([1, 2])), model.eval()(torch.tensor([1, 2])))
