"""examples/train_with_checkpoints.py: Ctrl-C it after a checkpoint, rerun it, it resumes."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("torch")

EXAMPLE = ROOT / "examples" / "train_with_checkpoints.py"


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_interrupted_example_resumes_from_its_last_checkpoint(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, str(EXAMPLE), "--run-dir", run_dir, "--every", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("step    20"):
            first.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.wait(60) == 130, "".join(lines)
    assert "interrupted at step" in lines[-1]

    example = _import_example()  # the rerun can share this process: the example seeds what it uses
    assert example.main(["--run-dir", run_dir, "--every", "20", "--steps", "70", "--step-delay", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    resumed = int(out[0].split()[3])
    assert out[0].startswith("resumed from step ") and resumed >= 20 and resumed % 20 == 0
    assert out[-1].startswith("done: 70 steps")


def _import_example():
    spec = importlib.util.spec_from_file_location("train_with_checkpoints", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
