"""A built model is an ordinary nn.Module: devices, training, state dicts, torch.compile, torch.export."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import mp_models as Z  # noqa: E402
from modelpack.torch.build import build  # noqa: E402


def test_to_meta_and_back_to_an_empty_cpu_model():
    model = build(Z.RESNET)
    model.to("meta")
    assert all(t.is_meta for t in model.state_dict().values())
    model.to_empty(device="cpu")
    assert not any(t.is_meta for t in model.state_dict().values())


def test_training_backward_and_an_optimizer_step():
    torch.manual_seed(0)
    model = build(Z.RESNET).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    before = model.layer1[0].conv1.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert not torch.equal(before, model.layer1[0].conv1.weight)
    assert int(model.layer1[0].bn1.num_batches_tracked) == 1


def test_load_state_dict_between_two_builds():
    torch.manual_seed(0)
    a = build(Z.LSTM).eval()
    torch.manual_seed(1)
    b = build(Z.LSTM).eval()
    tokens = Z.example_inputs("lstm")[0]
    assert not torch.equal(a(tokens), b(tokens))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(tokens), b(tokens))


def test_deepcopy_is_independent():
    model = build(Z.MLP)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.output.bias.add_(1)
    x = torch.randn(2, 20)
    assert not torch.equal(model(x), twin(x))


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    model = build(Z.RESNET).eval()
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))


@pytest.mark.slow
def test_torch_compile_inductor_runs():
    model = build(Z.MLP).eval()
    x = torch.randn(3, 20)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_reproduces_the_model(strict):
    model = build(Z.GRU).eval()
    tokens = Z.example_inputs("gru")[0]
    program = torch.export.export(model, (tokens,), strict=strict)
    got, want = program.module()(tokens), model(tokens)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert set(program.state_dict) == set(model.state_dict())


@pytest.mark.slow
def test_torch_export_with_a_dynamic_batch():
    model = build(Z.UNET).eval()
    x = torch.randn(2, 2, 16, 16)
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes={"inputs": ({0: batch},)})
    y = torch.randn(5, 2, 16, 16)
    torch.testing.assert_close(program.module()(y), model(y))
