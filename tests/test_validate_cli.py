"""``modelpack validate`` / ``modelpack schema``: in-process with captured output, plus subprocess runs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpack.cli import main
from modelpack.spec import schema_text

ROOT = Path(__file__).parent.parent
INVALID = sorted((ROOT / "tests" / "data" / "specs" / "invalid").glob("*.yaml"))
EXAMPLES = ROOT / "examples" / "specs"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the .expected files hold paths relative to the repository root


@pytest.mark.parametrize("spec", INVALID, ids=lambda p: p.stem)
def test_invalid_spec_prints_the_expected_lines(spec: Path) -> None:
    relative = spec.relative_to(ROOT).as_posix()
    code, out = run("validate", relative)
    assert code == 1
    assert out == spec.with_suffix(".expected").read_text()


def test_invalid_folder_covers_the_required_cases() -> None:
    required = {"bad_arg_minimum", "unknown_layer", "unknown_top_level_key", "duplicate_key", "yes_as_bool",
                "float_as_int", "python_tag", "alias", "dangling_ref", "duplicate_node_name", "wrong_arity",
                "missing_output", "future_version", "nan"}
    assert required <= {p.stem for p in INVALID}
    assert all(p.with_suffix(".expected").exists() for p in INVALID)


def test_examples_are_valid_and_quiet() -> None:
    code, out = run("validate", "examples/specs")
    assert (code, out) == (0, "")


def test_json_format_lists_every_finding(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    shutil.copy(ROOT / "tests/data/specs/invalid/unknown_argument.yaml", bad)
    code, out = run("validate", "--format", "json", str(bad), "examples/specs/mlp.yaml")
    assert code == 1
    records = json.loads(out)
    assert [(r["line"], r["column"], r["where"], r["severity"]) for r in records] == [
        (5, 35, "nodes[0].args", "error"), (5, 59, "nodes[0].args.out_feature", "error")]
    assert all(r["path"] == str(bad) for r in records)
    assert run("validate", "--format", "json", "examples/specs/mlp.yaml") == (0, "[]\n")


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    spec = tmp_path / "spare.yaml"
    spec.write_text((EXAMPLES / "mlp.yaml").read_text().replace(
        "outputs: [output]", "  - {name: spare, op: relu, in: x}\noutputs: [output]"))
    code, out = run("validate", str(spec))
    assert code == 0
    assert out == f"{spec}:11:12: warning: nodes[3].name: node 'spare' does not contribute to any output\n"


def test_missing_file_is_reported_and_fails(tmp_path: Path) -> None:
    code, out = run("validate", str(tmp_path / "nope.yaml"), "examples/specs/mlp.yaml")
    assert code == 1
    assert out == f"{tmp_path / 'nope.yaml'}: No such file or directory\n"


def test_directories_are_searched(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(EXAMPLES / "mlp.yaml", tmp_path / "sub" / "a.yml")
    shutil.copy(ROOT / "tests/data/specs/invalid/nan.yaml", tmp_path / "sub" / "b.json")
    (tmp_path / "notes.txt").write_text("not a spec")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "other.yaml").write_text("not: a spec\n")
    code, out = run("validate", str(tmp_path))
    assert code == 1
    assert out.startswith(f"{tmp_path / 'sub' / 'b.json'}:6:44: nodes[1].args.p: .nan is not a finite number")
    assert out.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("validate")[0] == 2
    assert run("validate", "--format", "xml", "x.yaml")[0] == 2
    assert "usage:" in capsys.readouterr().err


def test_schema_command_prints_the_committed_schema() -> None:
    code, out = run("schema")
    assert code == 0 and out == schema_text()
    assert out == (ROOT / "schemas" / "modelpack-spec.schema.json").read_text()


def test_mpk_specs_are_validated(tmp_path: Path) -> None:
    api = pytest.importorskip("modelpack.api", reason="the container (modelpack.api) is not available")
    tree = pytest.importorskip("modelpack.tree")
    if not hasattr(api, "write_pack") or not hasattr(api, "read_spec_text"):
        pytest.skip("modelpack.api has no write_pack/read_spec_text yet")
    tree_json, leaves = tree.encode({})
    good, bad, bare = tmp_path / "good.mpk", tmp_path / "bad.mpk", tmp_path / "bare.mpk"
    api.write_pack(good, tree_json, leaves, spec_text=(EXAMPLES / "mlp.yaml").read_text())
    api.write_pack(bad, tree_json, leaves, spec_text=(INVALID[0]).read_text())
    api.write_pack(bare, tree_json, leaves)
    assert run("validate", str(good)) == (0, "")
    code, out = run("validate", str(bad))
    expected = INVALID[0].with_suffix(".expected").read_text().split(":", 1)[1]
    assert code == 1 and out == f"{bad}:spec.yaml:{expected}"
    assert run("validate", str(bare)) == (0, f"{bare}: warning: no spec inside (weights only); nothing to validate\n")


def test_unreadable_mpk_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("modelpack.api", reason="the container (modelpack.api) is not available")
    fake = tmp_path / "fake.mpk"
    fake.write_bytes(b"\x80\x04K\x01.")  # a pickle, not a zip
    code, out = run("validate", str(fake))
    assert code == 1 and out.startswith(f"{fake}: ")


# --------------------------------------------------------------------------- subprocess


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_validate_does_not_import_torch() -> None:
    code = ("import sys\nfrom modelpack.cli import main\nrc = main(['validate', 'examples/specs', "
            "'tests/data/specs/invalid/wrong_arity.yaml'])\nassert 'torch' not in sys.modules, 'torch imported'\n"
            "sys.exit(rc)")
    proc = _python(code)
    assert proc.returncode == 1, proc.stderr
    assert "add takes 2 inputs" in proc.stdout


def test_module_entry_point_exit_codes() -> None:
    base = [sys.executable, "-m", "modelpack", "validate"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(base + ["examples/specs/mlp.yaml"], capture_output=True, text=True, cwd=ROOT, env=env)
    bad = subprocess.run(base + ["tests/data/specs/invalid/nan.yaml"], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    usage = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, env=env)
    assert (ok.returncode, bad.returncode, usage.returncode) == (0, 1, 2)
    assert bad.stdout == (ROOT / "tests/data/specs/invalid/nan.expected").read_text()


def test_two_hundred_specs_validate_quickly(tmp_path: Path) -> None:
    sources = sorted(EXAMPLES.glob("*.yaml"))
    for i in range(200):
        text = sources[i % len(sources)].read_text().replace("out_features: 10", f"out_features: {10 + i}")
        (tmp_path / f"s{i:03d}.yaml").write_text(text)
    run("validate", str(EXAMPLES))  # build the validators once, as a CI run does for its first file
    start = time.process_time()
    code, out = run("validate", str(tmp_path))
    elapsed = time.process_time() - start
    assert (code, out) == (0, "")
    assert elapsed < 5.0, f"200 specs took {elapsed:.2f} s of CPU"  # measured ~0.5 s; generous for slow CI
