"""Hugging Face models (tiny configs, random weights) through the default export, reloaded without transformers.

Each model is exported with default settings, then loaded in a fresh interpreter
that asserts ``transformers`` was never imported (nor ``torch._dynamo`` and
sympy, which cost a process its first second); outputs must equal the
original's bit for bit at the export shape and at another batch size and
sequence length (the sizes torch.export kept symbolic).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="tests/models needs transformers (the test extra)")

import modelpack  # noqa: E402
from tests.conftest import run_python  # noqa: E402
from tests.models.hf_zoo import MODELS  # noqa: E402

_CHECK = r"""
import sys
import torch
import modelpack
path, data = sys.argv[1], sys.argv[2]
model = modelpack.load_model(path)
cases = torch.load(data, weights_only=True)
for i, (inputs, expected) in enumerate(cases):
    with torch.no_grad():
        got = model(**inputs)
    got = got if isinstance(got, dict) else {"out": got}
    for key, want in expected.items():
        assert want.dtype == got[key].dtype and want.shape == got[key].shape, (i, key, want.shape, got[key].shape)
        assert torch.equal(want, got[key]), (i, key, (want - got[key]).abs().max().item())
assert "transformers" not in sys.modules, "loading imported transformers"
# a second or more of a process's first load: nothing on the load and run path may pull these in
assert "torch._dynamo" not in sys.modules and "sympy" not in sys.modules, "loading imported torch._dynamo/sympy"
print("OK", len(cases))
"""


def _outputs(result) -> dict:
    if isinstance(result, torch.Tensor):
        return {"out": result}
    return {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}


def _ties(model: torch.nn.Module) -> set[frozenset[str]]:
    """Groups of state_dict keys that name one tensor."""
    groups: dict[int, set[str]] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), set()).add(key)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exports_and_reloads_bit_exactly_at_two_shapes(name: str, tmp_path: Path) -> None:
    build, make_inputs, fixed = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    example = make_inputs(2, 8)
    modelpack.export(model, tmp_path / "m.mpk", {**example, **fixed})
    cases = []
    for batch, seq in ((2, 8), (3, 5)):
        inputs = make_inputs(batch, seq)
        with torch.no_grad():
            cases.append((inputs, _outputs(model(**inputs, **fixed))))
    torch.save(cases, tmp_path / "cases.pt")
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert _ties(rebuilt) == _ties(model)  # GPT-2's lm_head and wte, T5's shared and embed_tokens: one tensor
    done = run_python(_CHECK, str(tmp_path / "m.mpk"), str(tmp_path / "cases.pt"), timeout=300)
    assert done.returncode == 0 and "OK 2" in done.stdout, done.stderr[-3000:]


def test_a_decoder_fine_tunes_after_reload(tmp_path: Path) -> None:
    build, make_inputs, fixed = MODELS["llama"]
    torch.manual_seed(0)
    model = build().eval()
    modelpack.export(model, tmp_path / "m.mpk", {**make_inputs(2, 8), **fixed})
    rebuilt = modelpack.load_model(tmp_path / "m.mpk").train()
    ids = make_inputs(4, 12)["input_ids"]
    optimizer = torch.optim.AdamW(rebuilt.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        logits = rebuilt(input_ids=ids)["logits"]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in rebuilt.parameters())  # gradients reach every parameter
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, losses


def test_a_decoder_exported_with_its_kv_cache_on_keeps_only_the_logits(tmp_path: Path) -> None:
    """use_cache defaults to True: the cache object is left out (with a warning), and nothing it held lands in the file."""
    from modelpack.torch.export import ExportWarning

    build, make_inputs, _ = MODELS["llama"]
    torch.manual_seed(0)
    model = build().eval()
    assert model.config.use_cache
    with pytest.warns(ExportWarning, match=r"is a Python object, not a tensor, and is left out of the spec"):
        modelpack.export(model, tmp_path / "m.mpk", make_inputs(2, 8))
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    # the same keys: no emptied cache tensor stored, and the RoPE table a non-persistent buffer as in the original
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert {n for n, _ in rebuilt.named_buffers()} <= {n for n, _ in model.named_buffers()}  # those forward reads
    inputs = make_inputs(3, 5)
    with torch.no_grad():
        got, want = rebuilt(**inputs), model(**inputs)
    assert list(got) == ["logits"] and torch.equal(got["logits"], want.logits)


def test_inference_writes_aten_ops_in_place_with_the_same_bits(tmp_path: Path, monkeypatch) -> None:
    """Without autograd the interpreter runs elementwise ATen rows (RMSNorm's mul, SiLU, residual adds) in place
    over values nobody else reads; the logits are those of the plan switched off, and the input is untouched."""
    from modelpack.torch.build import SpecModule

    build, make_inputs, fixed = MODELS["llama"]
    torch.manual_seed(0)
    modelpack.export(build().eval(), tmp_path / "m.mpk", {**make_inputs(2, 8), **fixed})
    rebuilt = modelpack.load_model(tmp_path / "m.mpk")
    assert {s.what for s in rebuilt._steps if s.name in rebuilt._inplace} >= {"aten.mul.Tensor", "aten.silu",
                                                                               "aten.rsqrt", "aten.add.Tensor"}
    inputs = make_inputs(3, 5)
    before = inputs["input_ids"].clone()
    with torch.no_grad():
        got = rebuilt(**inputs)["logits"]
        with monkeypatch.context() as m:
            m.setattr(SpecModule, "_inplace", property(lambda self: {}))
            expected = rebuilt(**inputs)["logits"]
    assert torch.equal(got, expected) and torch.equal(inputs["input_ids"], before)
