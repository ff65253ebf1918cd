"""The command line on plain tensor files: inspect, verify, usage errors, entry points."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np

import modelpack
from modelpack.cli import main

from conftest import ROOT


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_inspect_lists_tensors_and_metadata(tmp_path):
    path = tmp_path / "t.mpk"
    modelpack.save({"w": np.zeros((3, 4), np.float32), "opt": {"lr": 0.1, "m": np.ones(2)}}, path,
                   metadata={"modelpack.checkpoint.step": "1200"})
    code, text = _run("inspect", str(path))
    assert code == 0
    assert "modelpack.checkpoint.step: 1200" in text
    assert "w       float32  [3, 4]  48 B" in text
    assert "total: 2 tensors, 14 elements, 64 B" in text


def test_inspect_json(tmp_path):
    path = tmp_path / "t.mpk"
    modelpack.save([np.arange(5)], path)
    code, text = _run("inspect", "--json", str(path))
    info = json.loads(text)
    assert code == 0 and info["tensor_count"] == 1 and info["tensors"][0]["shape"] == [5]


def test_verify_reports_each_file_and_fails_on_damage(tmp_path, capsys):
    good, bad = tmp_path / "good.mpk", tmp_path / "bad.mpk"
    modelpack.save({"a": np.arange(100.0)}, good)
    data = bytearray(good.read_bytes())
    with modelpack.open(good) as pack:
        data[pack.entries["a"]["offset"] + 3] ^= 1
    bad.write_bytes(bytes(data))
    code, text = _run("verify", str(good), str(bad))
    assert code == 1
    assert f"{good}: OK" in text
    assert f"{bad}: FAILED: tensor 'a': checksum mismatch" in text  # the path once, not twice


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"\x80\x04K\x01.")
    code, _ = _run("inspect", str(tmp_path / "x.pt"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("modelpack: error: ") and "Python pickle" in err


def test_usage_error_exits_2(capsys):
    assert _run("no-such-command")[0] == 2
    assert _run("inspect")[0] == 2


def test_console_script_and_module_entry_points(tmp_path):
    path = tmp_path / "t.mpk"
    modelpack.save({"a": np.arange(3)}, path)
    import shutil

    cmds = [[sys.executable, "-m", "modelpack", "verify", str(path)]]
    if shutil.which("modelpack"):
        cmds.append(["modelpack", "verify", str(path)])
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
