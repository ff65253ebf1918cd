"""The interpreter frees each value after its last use: same results, smaller live set, training intact."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import mp_models as Z  # noqa: E402
from modelpack.torch.build import SpecModule, build, release_plan  # noqa: E402

CHAIN = """\
modelpack: 1
inputs: {x: {shape: [batch, 8]}}
nodes:
""" + "".join(f"  - {{name: l{i}, layer: Linear, args: {{in_features: 8, out_features: 8}}}}\n"
              f"  - {{name: a{i}, op: relu}}\n" for i in range(12)) + """\
outputs: [a11]
"""


def _without_release(model: SpecModule) -> SpecModule:
    model._release = tuple(() for _ in model._steps)
    return model


def _leaves(value) -> list[torch.Tensor]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    return [value]


def _peak_live(model: SpecModule, *inputs: torch.Tensor) -> int:
    """The most values held by the interpreter at any step (wraps ``_run`` to look at its env)."""
    peak = 0
    run = model._run

    def spy(step, env):
        nonlocal peak
        peak = max(peak, len(env))
        return run(step, env)

    model._run = spy  # type: ignore[method-assign]
    model.__modelpack__.plain = tuple(None for _ in model._steps)  # every step through _run, so the spy sees it
    try:
        model(*inputs)
    finally:
        del model._run
    return peak


def test_plan_frees_each_value_after_its_last_reader_and_never_an_output():
    spec = """\
modelpack: 1
inputs: {x: {shape: [batch, 4]}, unused: {shape: [batch, 4]}}
nodes:
  - {name: a, op: relu, in: x}
  - {name: b, op: sigmoid, in: a}
  - {name: c, op: add, in: [a, b]}
  - {name: d, op: tanh, in: c}
outputs: [b, d]
"""
    model = build(spec)
    plan = dict(zip((s.name for s in model._steps), model._release))
    assert plan == {"a": ("x",), "b": (), "c": ("a",), "d": ("c",)}
    out_b, out_d = model(torch.ones(2, 4), torch.ones(2, 4))
    assert torch.equal(out_b, torch.sigmoid(torch.ones(2, 4)))


def test_refs_in_arguments_keep_their_value_alive_until_read():
    spec = """\
modelpack: 1
inputs: {x: {shape: [batch, 6]}, n: {shape: [], dtype: int64}}
nodes:
  - {name: y, op: relu, in: x}
  - {name: r, op: reshape, in: y, args: {shape: [{ref: n}, -1]}}
outputs: [r]
"""
    model = build(spec)
    plan = dict(zip((s.name for s in model._steps), model._release))
    assert plan["y"] == ("x",) and sorted(plan["r"]) == ["n", "y"]
    assert model(torch.randn(2, 6), torch.tensor(3)).shape == (3, 4)


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_outputs_are_bit_identical_with_and_without_freeing(name):
    freed = Z.built(name, seed=0).eval()
    kept = _without_release(Z.built(name, seed=0).eval())
    inputs = Z.example_inputs(name)
    with torch.no_grad():
        a, b = _leaves(freed(*inputs)), _leaves(kept(*inputs))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_live_values_stay_bounded_on_a_long_chain():
    x = torch.randn(2, 8)
    assert _peak_live(build(CHAIN), x) <= 2
    assert _peak_live(_without_release(build(CHAIN)), x) == 24


def test_training_still_reaches_every_parameter():
    torch.manual_seed(0)
    model = Z.built("resnet").train()
    out = model(*Z.example_inputs("resnet"))
    (out if isinstance(out, torch.Tensor) else out[0]).square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_release_plan_is_public_and_pure():
    model = build(CHAIN)
    assert release_plan(model._steps, ["a11"]) == model._release


# --------------------------------------------------------------------------- in-place ops in inference

HEAD = """\
modelpack: 1
inputs: {x: {shape: [batch, 4]}}
nodes:
  - {name: fc, layer: Linear, args: {in_features: 4, out_features: 4}}
  - {name: act, op: relu, in: fc}
  - {name: both, op: add, in: [act, x]}
outputs: [both]
"""


def test_inplace_plan_takes_only_values_nobody_else_sees():
    model = build(HEAD)
    assert set(model._inplace) == {"act", "both"}  # fc's output is fresh; act overwrites it; both overwrites act
    spec = HEAD.replace("outputs: [both]", "outputs: [both, fc]")
    assert set(build(spec)._inplace) == {"both"}  # fc is an output: relu must not overwrite it (act is fresh)


def test_inplace_in_inference_is_bit_identical_and_never_touches_inputs():
    torch.manual_seed(0)
    model = build(HEAD).eval()
    x = torch.randn(5, 4)
    before = x.clone()
    expected = model(x).detach()  # grad enabled: out of place
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got, expected) and torch.equal(x, before)


def test_swapping_a_producer_turns_inplace_off():
    """``model.fc = nn.Identity()`` makes fc return the caller's tensor: relu must not overwrite it."""
    model = build(HEAD).eval()
    model.fc = torch.nn.Identity()
    x = torch.randn(5, 4)
    before = x.clone()
    with torch.no_grad():
        got = model(x)
    assert torch.equal(x, before)
    assert torch.equal(got, torch.relu(before) + before)


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_zoo_inplace_plan_changes_no_result(name, monkeypatch):
    """In inference the interpreter writes some ops in place; the result must be the one without.

    The oracle is the same model under no_grad with the plan switched off, not grad mode: torch
    itself picks other kernels for some layers without autograd (a 2-layer LSTM differs by 2e-8).
    """
    model = Z.built(name, seed=0).eval()
    inputs = Z.example_inputs(name)
    with torch.no_grad():
        with monkeypatch.context() as m:
            m.setattr(SpecModule, "_inplace", property(lambda self: {}))
            expected = _leaves(model(*inputs))
        got = _leaves(model(*inputs))
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))


# --------------------------------------------------------------------------- the residual add: into the second input

RESIDUAL = """\
modelpack: 1
inputs: {x: {shape: SHAPE, dtype: DTYPE}, y: {shape: [5, 4]}}
nodes:
  - {name: fc, layer: Linear, in: y, args: {in_features: 4, out_features: 4}}
  - {name: res, op: OP, in: [x, fc]}
outputs: [res]
"""


def _residual(op: str, shape=(5, 4), dtype: str = "float32", args: str = "") -> SpecModule:
    torch.manual_seed(0)
    spec = RESIDUAL.replace("OP", op).replace("SHAPE", str(list(shape))).replace("DTYPE", dtype)
    if op.startswith("aten."):  # the ATen rows came with spec version 2
        spec = spec.replace("modelpack: 1", "modelpack: 2")
    return build(spec.replace("in: [x, fc]}", f"in: [x, fc]{args}}}")).eval()


@pytest.mark.parametrize("op, which", [("add", 1), ("mul", 1), ("sub", None), ("div", None)])
def test_only_commutative_ops_write_into_their_second_input(op, which):
    plan = _residual(op)._inplace
    assert (plan["res"][0] if "res" in plan else None) == which


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("shape, dtype", [((5, 4), "float32"), ((4,), "float32"), ((1, 4), "float32"),
                                          ((), "float32"), ((3, 5, 4), "float32"), ((5, 4), "float64")])
def test_second_input_in_place_is_bit_identical_and_leaves_the_callers_tensor(op, shape, dtype):
    """x op fc(y) writes into fc's output, never into x; an x that does not fit (bigger, another dtype) falls back."""
    model = _residual(op, shape, dtype)
    x = torch.randn(shape, dtype=getattr(torch, dtype)) * 1e-3
    y = torch.randn(5, 4) * 1e3
    x_before, y_before = x.clone(), y.clone()
    with torch.no_grad():
        got = model(x, y)
        expected = getattr(torch, op)(x, model.fc(y))
        model.__modelpack__.inplace = {}
        off = model(x, y)
    assert torch.equal(got, expected) and torch.equal(got, off) and got.dtype == expected.dtype
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


def test_second_input_in_place_happens():
    """The claim is taken: the result is fc's own buffer, written in place."""
    model = _residual("add")
    seen = {}
    linear = model.fc.forward
    model.fc.forward = lambda t: seen.setdefault("fc", linear(t))  # type: ignore[method-assign]
    with torch.no_grad():
        out = model(torch.randn(5, 4), torch.randn(5, 4))
    assert out.data_ptr() == seen["fc"].data_ptr()


def test_swapping_the_second_producer_turns_the_claim_off():
    model = _residual("add")
    model.fc = torch.nn.Identity()  # fc now returns the caller's y: it must not be written
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    y_before = y.clone()
    with torch.no_grad():
        out = model(x, y)
    assert torch.equal(y, y_before) and torch.equal(out, x + y_before)


def test_the_eager_shortcut_changes_no_result_and_keeps_node_notes():
    """Plain steps are called straight from the loop: same values as through _run, same error note."""
    model = build(CHAIN).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        fast = model(x)
        model.__modelpack__.plain = tuple(None for _ in model._steps)
        slow = model(x)
    assert torch.equal(fast, slow)
    with pytest.raises(RuntimeError) as info:
        build(CHAIN)(torch.randn(3, 8, dtype=torch.float64))
    assert any("node 'l0' (layer Linear)" in note for note in info.value.__notes__)


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_zoo_eager_shortcut_changes_no_result(name):
    model = Z.built(name, seed=0).eval()
    inputs = Z.example_inputs(name)
    with torch.no_grad():
        fast = _leaves(model(*inputs))
        model.__modelpack__.plain = tuple(None for _ in model._steps)
        slow = _leaves(model(*inputs))
    assert len(fast) == len(slow) and all(torch.equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.parametrize("alpha, which", [(1, 1), (2, None)])
def test_aten_add_trades_inputs_only_without_alpha(alpha, which):
    """x + alpha * fc(y) is not fc(y) + alpha * x: only alpha 1 may write into the second input."""
    model = _residual("aten.add.Tensor", args=f", args: {{alpha: {alpha}}}")
    plan = model._inplace
    assert (plan["res"][0] if "res" in plan else None) == which
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    x_before = x.clone()
    with torch.no_grad():
        assert torch.equal(model(x, y), torch.add(x, model.fc(y), alpha=alpha))
    assert torch.equal(x, x_before)


MHA_BLOCK = """\
modelpack: 1
inputs: {x: {shape: [batch, 6, 8]}}
nodes:
  - {name: ln, layer: LayerNorm, in: x, args: {normalized_shape: [8]}}
  - {name: att, layer: MultiheadAttention, in: [ln, ln, ln], args: {embed_dim: 8, num_heads: 2, batch_first: true}}
  - {name: out, op: getitem, in: att, args: {index: 0}}
  - {name: drop, layer: Dropout, in: out}
  - {name: res, op: add, in: [drop, x]}
outputs: [res]
"""


def test_attention_output_is_owned_through_getitem():
    """ViT's ``x = dropout(attention(ln(x))[0]) + x``: the attention's output is new memory, written in place."""
    torch.manual_seed(0)
    model = build(MHA_BLOCK).eval()
    assert model._inplace["res"][0] == 0
    x = torch.randn(2, 6, 8)
    x_before = x.clone()
    with torch.no_grad():
        got = model(x)
        model.__modelpack__.inplace = {}
        off = model(x)
    assert torch.equal(got, off) and torch.equal(x, x_before)
    assert "res" not in build(MHA_BLOCK.replace("outputs: [res]", "outputs: [res, out]"))._inplace
