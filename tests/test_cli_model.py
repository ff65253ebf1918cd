"""The model commands end to end on packed models: run, inspect, verify, diff."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mp_models as Z  # noqa: E402
from conftest import ROOT  # noqa: E402
from modelpack import api  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.diff import compare_arrays, spec_differences  # noqa: E402


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([str(a) for a in argv], out=out), out.getvalue()


@pytest.fixture
def mlp(tmp_path):
    path, model = Z.packed(tmp_path, "mlp")
    x = torch.randn(3, 20)
    np.save(tmp_path / "x.npy", x.numpy())
    return path, model, x


# --------------------------------------------------------------------------- run


def test_run_writes_the_output_bit_exactly(tmp_path, mlp):
    path, model, x = mlp
    code, text = cli("run", path, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert code == 0
    assert text.startswith(f"{path}: x [3, 20] float32 -> output [3, 10] float32 in ")
    assert text.count("\n") == 1
    with torch.no_grad():
        assert np.array_equal(np.load(tmp_path / "y.npy"), model(x).numpy())


def test_run_named_inputs_and_named_outputs_to_npz(tmp_path):
    path, model = Z.packed(tmp_path, "gru")
    tokens = Z.example_inputs("gru")[0]
    np.save(tmp_path / "t.npy", tokens.numpy())
    code, _ = cli("run", path, "--input", f"tokens={tmp_path / 't.npy'}", "--output", tmp_path / "o.npz")
    assert code == 0
    saved = np.load(tmp_path / "o.npz")
    want = model(tokens)
    assert sorted(saved.files) == ["hidden", "logits"]
    assert np.array_equal(saved["logits"], want["logits"].detach().numpy())


def test_run_takes_inputs_from_an_npz(tmp_path, mlp):
    path, model, x = mlp
    np.savez(tmp_path / "in.npz", x=x.numpy())
    assert cli("run", path, "--input", tmp_path / "in.npz", "--output", tmp_path / "y.npy")[0] == 0


@pytest.mark.parametrize("make, message", [
    (lambda d: np.save(d / "a.npy", np.zeros((3, 20))), "input 'x': expected float32 .* holds float64"),
    (lambda d: np.save(d / "a.npy", np.zeros((3, 21), np.float32)), r"input 'x': dim 1 is 21; the spec "
                                                                    r"declares 20 \(a fixed size"),
    (lambda d: np.save(d / "a.npy", np.zeros((20,), np.float32)), r"input 'x': expected shape \[batch, 20\] "
                                                                  r"\(rank 2\), got \[20\] \(rank 1\)"),
    (lambda d: np.save(d / "a.npy", np.array([object()]), allow_pickle=True), "cannot read .*a.npy"),
])
def test_run_refuses_inputs_it_would_have_to_guess(tmp_path, mlp, capsys, make, message):
    path = mlp[0]
    make(tmp_path)
    code, _ = cli("run", path, "--input", tmp_path / "a.npy", "--output", tmp_path / "y.npy")
    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "y.npy").exists()


def test_run_with_several_outputs_needs_an_npz(tmp_path, capsys):
    path, _ = Z.packed(tmp_path, "gru")
    np.save(tmp_path / "t.npy", Z.example_inputs("gru")[0].numpy())
    code, _ = cli("run", path, "--input", tmp_path / "t.npy", "--output", tmp_path / "o.npy")
    assert code == 1
    assert "the model has 2 outputs (logits, hidden); write them to one .npz" in capsys.readouterr().err


def test_run_unknown_or_missing_inputs(tmp_path, mlp, capsys):
    path = mlp[0]
    assert cli("run", path, "--input", f"y={tmp_path / 'x.npy'}", "--output", tmp_path / "o.npy")[0] == 1
    assert "unknown input 'y'; the model's inputs are: x" in capsys.readouterr().err


def test_run_in_a_subprocess(tmp_path, mlp):
    path, model, x = mlp
    result = subprocess.run([sys.executable, "-m", "modelpack", "run", str(path), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "-> output [3, 10] float32" in result.stdout
    with torch.no_grad():
        assert np.array_equal(np.load(tmp_path / "y.npy"), model(x).numpy())


# --------------------------------------------------------------------------- inspect / verify


def test_inspect_shows_the_node_table(tmp_path):
    path, _ = Z.packed(tmp_path, "lstm")
    code, text = cli("inspect", path)
    assert code == 0
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert rows["rnn"].split()[1] == "LSTM" and "([batch, seq, 24], ([1, batch, 24], [1, batch, 24]))" in rows["rnn"]
    assert "[batch, 3]" in rows["head"] and "147" in rows["head"].split()  # 48*3 + 3 parameters
    code, text = cli("inspect", "--json", path)
    info = json.loads(text)
    assert {n["node"]: n["output_shape"] for n in info["model"]["nodes"]}["pooled"] == "[batch, 24]"


def test_verify_passes_a_good_file_and_fails_a_mismatched_one(tmp_path):
    path, model = Z.packed(tmp_path, "mlp")
    assert cli("verify", path) == (0, f"{path}: OK\n")
    state = dict(model.state_dict())
    state["output.weight"] = torch.zeros(10, 63)
    bad = Z.pack_model(tmp_path / "bad.mpk", Z.MLP, model, state=state)
    code, text = cli("verify", path, bad)
    assert code == 1
    assert f"{bad}: FAILED: " in text and "output.weight: expected [10, 64] float32, file has [10, 63]" in text


# --------------------------------------------------------------------------- diff


def test_diff_of_a_file_with_itself_is_empty(mlp):
    path = mlp[0]
    code, text = cli("diff", path, path)
    assert code == 0
    assert "spec: identical" in text and "4 identical, 0 within atol, 0 differ; SAME" in text


def test_diff_reports_tensor_changes_against_atol(tmp_path, mlp):
    path, model, _ = mlp
    with torch.no_grad():
        model.output.bias.add_(1e-3)
    other = Z.pack_model(tmp_path / "other.mpk", Z.MLP, model)
    code, text = cli("diff", path, other)
    assert code == 1 and "output.bias: max abs 0.001" in text and "DIFFERENT" in text
    code, text = cli("diff", path, other, "--atol", "0.01")
    assert code == 0 and "(within atol 0.01)" in text and "SAME" in text


def test_diff_reports_spec_missing_shape_and_dtype_changes(tmp_path, mlp):
    path, model, _ = mlp
    state = dict(model.state_dict())
    del state["hidden.bias"]
    state["output.bias"] = state["output.bias"].double()
    state["output.weight"] = torch.zeros(10, 65)
    spec = Z.MLP.replace("op: relu", "op: gelu")
    other = Z.pack_model(tmp_path / "other.mpk", spec, model, state=state)
    code, text = cli("diff", path, other)
    assert code == 1
    assert "~ node 'act' (op relu): op relu" in text and "op gelu" in text
    assert "hidden.bias: only in A" in text
    assert "output.weight: shape [10, 64] -> [10, 65]" in text
    assert "output.bias: dtype float32 -> float64" in text


def test_diff_of_plain_tensor_files_needs_no_spec(tmp_path):
    a, b = tmp_path / "a.mpk", tmp_path / "b.mpk"
    api.save({"w": np.arange(4.0), "n": np.array([1, 2])}, a)
    api.save({"w": np.arange(4.0) * 2, "extra": np.zeros(1)}, b)
    code, text = cli("diff", a, b)
    assert code == 1
    assert "spec: none in either file" in text
    assert "w: max abs 3, max rel 0.5" in text and "n: only in A" in text and "extra: only in B" in text


def test_spec_differences_ignore_formatting_and_explicit_defaults():
    same = Z.MLP.replace("out_features: 10}}", "out_features: 10, bias: true}}") + "# a comment\n"
    lines, differs = spec_differences(Z.MLP, same)
    assert not differs and lines[0].startswith("spec: same model")
    lines, differs = spec_differences(Z.MLP, Z.MLP.replace("out_features: 10}}", "out_features: 10, bias: false}}"))
    assert differs and "args.bias: true -> false" in lines[1]


def test_compare_arrays_handles_nans_and_bfloat16_bits():
    a = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare_arrays(a, a.copy(), "float32")[2:] == (True, True)
    b = np.array([1.0, 2.0, np.nan], np.float32)
    assert compare_arrays(a, b, "float32")[3] is False
    bf_a = np.array([0x3F80, 0x4000], np.uint16)  # bfloat16 bits of 1.0, 2.0
    bf_b = np.array([0x3F80, 0x4040], np.uint16)  # 1.0, 3.0
    max_abs, max_rel, identical, _ = compare_arrays(bf_a, bf_b, "bfloat16")
    assert (max_abs, identical) == (1.0, False) and max_rel == pytest.approx(1 / 3)


def test_diff_does_not_need_torch(tmp_path, mlp):
    from conftest import run_python

    path = mlp[0]
    code = ("import sys; from modelpack.cli import main; rc = main(['diff', sys.argv[1], sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'diff imported torch'; sys.exit(rc)")
    result = run_python(code, str(path))
    assert result.returncode == 0, result.stderr


def test_output_arrays_name_nested_tuples_and_note_numpy_less_dtypes():
    from modelpack.torch.run import output_arrays

    arrays, notes = output_arrays((torch.ones(2, dtype=torch.bfloat16), (torch.zeros(1), torch.ones(1))), ["a", "b"])
    assert list(arrays) == ["a", "b.0", "b.1"] and arrays["a"].dtype == np.float32
    assert notes == ["a: bfloat16 written as float32 (numpy has no bfloat16)"]
