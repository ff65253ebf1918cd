"""load_model: a .mpk -> the model, zero-copy, checked against its spec before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import mp_models as Z  # noqa: E402
from conftest import run_python  # noqa: E402
import modelpack  # noqa: E402
from modelpack import api  # noqa: E402
from modelpack.errors import BuildError, SpecError, WeightsMismatchError  # noqa: E402
from modelpack.torch.build import SpecModule  # noqa: E402
from modelpack.torch.load import cross_check, load_model  # noqa: E402


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and torch.equal(a, b)


def _file_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges where ``path`` is mapped into this process (Linux)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    ranges = []
    for line in maps.read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(Z.ZOO))
def test_round_trip_is_bit_exact(tmp_path, name):
    path, model = Z.packed(tmp_path, name)
    clone = load_model(path)
    assert isinstance(clone, SpecModule) and not clone.training
    inputs = Z.example_inputs(name)
    with torch.no_grad():
        assert _equal(clone(*inputs), model(*inputs))
    for key, value in model.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key


def test_parameters_are_the_mapped_file_bytes(tmp_path):
    path, _ = Z.packed(tmp_path, "resnet")
    clone = load_model(path)
    ranges = _file_ranges(path)
    assert ranges, "the file is mapped"
    for name, t in clone.state_dict().items():
        assert any(lo <= t.data_ptr() < hi for lo, hi in ranges), f"{name} was copied"
    with api.Pack(path) as pack:  # the same bytes the checked reader hands out, at the same offset
        entry = pack.entries["layer1.0.conv1.weight"]
        assert entry["offset"] % 64 == 0
        assert torch.equal(pack["layer1.0.conv1.weight"], clone.layer1[0].conv1.weight)


def test_mmap_false_reads_into_fresh_memory(tmp_path):
    path, model = Z.packed(tmp_path, "mlp")
    clone = load_model(path, mmap=False)
    ranges = _file_ranges(path)
    assert not any(lo <= clone.hidden.weight.data_ptr() < hi for lo, hi in ranges)
    assert torch.equal(clone(torch.ones(1, 20)), model(torch.ones(1, 20)))


def test_parameters_train_and_buffers_stay_buffers(tmp_path):
    path, _ = Z.packed(tmp_path, "resnet")
    clone = load_model(path)
    params = dict(clone.named_parameters())
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params.values())
    buffers = dict(clone.named_buffers())
    assert "layer1.0.bn1.running_mean" in buffers and "layer1.0.bn1.running_mean" not in params
    assert buffers["layer1.0.bn1.num_batches_tracked"].dtype == torch.int64
    assert int(buffers["layer1.0.bn1.num_batches_tracked"]) == 7


def test_fine_tuning_never_writes_the_file(tmp_path):
    path, model = Z.packed(tmp_path, "mlp")
    before = path.read_bytes()
    clone = load_model(path).train()
    opt = torch.optim.SGD(clone.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        clone(torch.randn(8, 20)).pow(2).mean().backward()
        opt.step()
    assert not torch.equal(clone.hidden.weight, model.hidden.weight)
    assert path.read_bytes() == before
    assert torch.equal(load_model(path).hidden.weight, model.hidden.weight)


def test_tied_weights_come_back_as_one_parameter(tmp_path):
    path, model = Z.packed(tmp_path, "tied_lm")
    with api.Pack(path) as pack:
        assert len(pack) == 3  # embed.weight stored once for both keys
    clone = load_model(path)
    assert clone.decoder.weight is clone.embed.weight
    assert len(list(clone.parameters())) == 3
    # one optimizer step updates the shared weight once, exactly like the original tied model
    tokens = Z.example_inputs("tied_lm")[0]
    for m in (model, clone):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m(tokens).sum().backward()
        opt.step()
    assert torch.equal(clone.embed.weight, model.embed.weight)
    assert clone.decoder.weight is clone.embed.weight


def test_map_location_moves_the_model_and_keeps_ties(tmp_path):
    path, _ = Z.packed(tmp_path, "tied_lm")
    clone = load_model(path, map_location="meta")
    assert clone.embed.weight.is_meta and clone.decoder.weight is clone.embed.weight
    assert load_model(path, map_location="cpu").embed.weight.device.type == "cpu"


def test_a_fresh_process_rebuilds_the_model_without_its_class(tmp_path):
    path, model = Z.packed(tmp_path, "resnet")
    x = Z.example_inputs("resnet")[0]
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        np.save(tmp_path / "y.npy", model(x).numpy())
    code = """
import sys, numpy as np, torch, modelpack
clone = modelpack.load_model(sys.argv[1])
y = clone(torch.from_numpy(np.load(sys.argv[2])))
assert torch.equal(y, torch.from_numpy(np.load(sys.argv[3]))), "outputs differ"
assert not any("mp_models" in m or m.startswith("tests") for m in sys.modules), "test code was imported"
print("OK", type(clone).__module__, sorted(clone.state_dict())[0])
"""
    result = run_python(code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["OK", "modelpack.torch.build"]


# --------------------------------------------------------------------------- cutting


def test_cut_at_a_node_keeps_only_what_it_needs(tmp_path):
    path, model = Z.packed(tmp_path, "mlp")
    cut = load_model(path, outputs=["hidden"])
    assert set(cut.state_dict()) == {"hidden.weight", "hidden.bias"}
    x = torch.randn(4, 20)
    assert torch.equal(cut(x), model.hidden(x))
    assert cut.spec["outputs"] == ["hidden"]


def test_cut_with_several_outputs_and_a_tuple_node(tmp_path):
    path, model = Z.packed(tmp_path, "lstm")
    cut = load_model(path, outputs=["seq_out", "last"])
    assert not any(k.startswith("head.") for k in cut.state_dict())
    tokens = Z.example_inputs("lstm")[0]
    seq_out, last = cut(tokens)
    out, (h_n, _) = model.rnn(model.embed(tokens))
    assert torch.equal(seq_out, out) and torch.equal(last, h_n[0])


def test_cut_at_an_unknown_node_is_an_error(tmp_path):
    path, _ = Z.packed(tmp_path, "mlp")
    with pytest.raises(BuildError, match="cannot cut the graph at 'hiden'.*nodes: hidden, act, output"):
        load_model(path, outputs=["hiden"])


# --------------------------------------------------------------------------- mismatches


def _pack_state(tmp_path, spec_text, state, name="m.mpk"):
    return Z.pack_model(tmp_path / name, spec_text, nn.Module(), state=state)


def test_wrong_shape_is_reported_per_key(tmp_path):
    torch.manual_seed(0)
    other = Z.built("mlp")
    state = dict(other.state_dict())
    state["hidden.weight"] = torch.zeros(64, 19)
    path = _pack_state(tmp_path, Z.MLP, state)
    with pytest.raises(WeightsMismatchError, match=r"hidden.weight: expected \[64, 20\] float32, "
                                                   r"file has \[64, 19\] float32"):
        load_model(path)


def test_all_mismatches_come_in_one_error(tmp_path):
    state = dict(Z.built("mlp").state_dict())
    del state["hidden.bias"]
    state["output.weight"] = torch.zeros(10, 65)
    state["extra.weight"] = torch.zeros(3)
    path = _pack_state(tmp_path, Z.MLP, state)
    with pytest.raises(WeightsMismatchError) as info:
        load_model(path)
    assert info.value.lines == [
        "hidden.bias: expected [64] float32, missing from the file",
        "output.weight: expected [10, 64] float32, file has [10, 65] float32",
        "extra.weight: in the file ([3] float32) but not implied by the spec",
    ]
    assert str(info.value).startswith(f"{path}: 3 mismatch(es) between the spec and the weights:")


def test_strict_false_tolerates_extra_tensors_only(tmp_path):
    model = Z.built("mlp")
    state = {**model.state_dict(), "notes.weight": torch.zeros(2)}
    path = _pack_state(tmp_path, Z.MLP, state)
    clone = load_model(path, strict=False)
    assert "notes.weight" not in clone.state_dict()
    del state["output.bias"]
    path = _pack_state(tmp_path, Z.MLP, state, "missing.mpk")
    with pytest.raises(WeightsMismatchError, match="output.bias: expected .* missing from the file"):
        load_model(path, strict=False)


def test_a_float16_file_builds_a_float16_model(tmp_path):
    model = Z.built("mlp").half()
    path = Z.pack_model(tmp_path / "half.mpk", Z.MLP, model)
    clone = load_model(path)
    assert {p.dtype for p in clone.parameters()} == {torch.float16}
    x = torch.randn(2, 20).half()
    assert torch.equal(clone(x), model(x))


def test_mixed_dtypes_inside_one_layer_are_refused(tmp_path):
    state = dict(Z.built("mlp").state_dict())
    state["output.bias"] = state["output.bias"].half()
    path = _pack_state(tmp_path, Z.MLP, state)
    with pytest.raises(WeightsMismatchError, match=r"output.(weight|bias): expected .* float32, file has \[10\] "
                                                   r"float16 \(the tensors of this layer have different"):
        load_model(path)


def test_integer_buffers_are_never_cast(tmp_path):
    state = dict(Z.built("resnet").state_dict())
    state["layer1.0.bn1.num_batches_tracked"] = state["layer1.0.bn1.num_batches_tracked"].int()
    path = _pack_state(tmp_path, Z.RESNET, state)
    with pytest.raises(WeightsMismatchError, match=r"num_batches_tracked: expected \[\] int64, file has \[\] int32"):
        load_model(path)


def test_a_tensor_file_without_spec_is_explained(tmp_path):
    path = tmp_path / "weights.mpk"
    api.save(Z.built("mlp").state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="no model spec .* modelpack.load_weights"):
        load_model(path)


def test_a_broken_spec_in_the_file_is_a_spec_error_naming_the_file(tmp_path):
    path = Z.pack_model(tmp_path / "bad.mpk", Z.MLP.replace("out_features: 64", "out_features: 0"), Z.built("mlp"))
    with pytest.raises(SpecError, match=r"bad.mpk:spec.yaml:\d+:\d+: .*out_features"):
        load_model(path)


def test_verify_runs_the_cross_check(tmp_path):
    path, _ = Z.packed(tmp_path, "mlp")
    modelpack.verify(path)
    state = dict(Z.built("mlp").state_dict())
    state["output.bias"] = torch.zeros(11)
    bad = _pack_state(tmp_path, Z.MLP, state)
    with pytest.raises(WeightsMismatchError, match=r"output.bias: expected \[10\]"):
        modelpack.verify(bad)


def test_cross_check_reads_no_tensor_data(tmp_path):
    path, _ = Z.packed(tmp_path, "lenet")
    with api.Pack(path) as pack:
        refs = cross_check(pack.spec_text, pack)
        assert pack._map is None  # nothing was mapped, so no tensor was read
    assert refs["conv1.weight"] == "conv1.weight"

