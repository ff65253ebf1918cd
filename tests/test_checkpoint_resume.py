"""Exact resume: 2N steps straight == N steps, then a fresh process restoring and running N more."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import modelpack

from conftest import ROOT, bits_equal

torch = pytest.importorskip("torch")

HELPER = ROOT / "tests" / "helpers" / "ckpt_train.py"
N = 14  # not a multiple of the 6 batches per epoch: the resume lands mid-epoch


def _run(jobs: list[dict]) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(HELPER), json.dumps(jobs)], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _run_here(jobs: list[dict]) -> None:
    """The reference runs need no fresh process; one torch thread, like the helper's own main."""
    spec = importlib.util.spec_from_file_location("ckpt_train", HELPER)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            helper.run(job)
    finally:
        torch.set_num_threads(threads)


def _assert_identical(a, b, where: str = "state") -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for k in a:
            _assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert bits_equal(a, b), f"{where}: tensors differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    straight, resumed, run_dir = tmp_path / "straight.mpk", tmp_path / "resumed.mpk", tmp_path / "run"
    _run_here([
        {"out": str(straight), "stop": 2 * N, "run_dir": None, "resume": False},
        {"out": str(tmp_path / "half.mpk"), "stop": N, "run_dir": str(run_dir), "resume": False},
    ])
    out = _run([{"out": str(resumed), "stop": 2 * N, "run_dir": str(run_dir), "resume": True}])
    assert f"resumed from step {N - 1}" in out

    a, b = modelpack.load(straight), modelpack.load(resumed)
    _assert_identical(a, b)
    assert a["optimizer"]["state"][0]["step"].item() == 2 * N
    half = modelpack.load(tmp_path / "half.mpk")
    assert not bits_equal(half["model"]["0.weight"], a["model"]["0.weight"])  # training did move on
