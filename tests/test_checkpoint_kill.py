"""SIGKILL a process that keeps saving ~50 MiB checkpoints, at seeded random moments.

After every kill the folder must hold a checkpoint that verifies, whose
content belongs to its step, no older than the one found after the previous
kill, and no more files than keep_last + 1 published checkpoints (a crash
between publishing and pruning) + 1 temp file (a crash mid-write).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from modelpack.checkpoint import Checkpointer

from conftest import ROOT

HELPER = ROOT / "tests" / "helpers" / "ckpt_kill_writer.py"
KILLS = 32
KEEP_LAST = 2


def _start(run_dir) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(HELPER), str(run_dir), str(KEEP_LAST)],
                            stdout=subprocess.PIPE, text=True, env=env)


def _wait_for(proc: subprocess.Popen, word: str) -> None:
    for line in proc.stdout:
        if line.startswith(word):
            return
    raise AssertionError(f"writer exited ({proc.wait()}) before printing {word!r}")


def _check_folder(run_dir, ckpt: Checkpointer) -> tuple[int, int]:
    names = os.listdir(run_dir)
    temps = [n for n in names if n.endswith(".mpk-tmp")]
    published = ckpt.checkpoints()
    assert len(published) <= KEEP_LAST + 1, names
    assert len(temps) <= 1, names
    assert len(names) == len(published) + len(temps), names
    found = ckpt.load()  # verifies every checksum, falling back (with a warning) past a damaged one
    assert found is not None
    weights = found.state["model"]
    assert found.state["extra"] == {"step": found.step}
    assert all(np.all(w == found.step) for w in weights.values())
    return found.step, len(temps)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_latest_good_checkpoint(tmp_path, recwarn):
    rnd = random.Random(20240606)
    run_dir = tmp_path / "run"
    ckpt = Checkpointer(run_dir, keep_last=KEEP_LAST)
    last_step, mid_write = -1, 0
    for i in range(KILLS):
        proc = _start(run_dir)
        try:
            _wait_for(proc, "ready" if i % 2 else "saved")  # every other child makes progress first
            time.sleep(rnd.uniform(0.0, 0.8))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        step, temps = _check_folder(run_dir, ckpt)
        assert step >= last_step, f"kill {i}: restored step went back from {last_step} to {step}"
        last_step, mid_write = step, mid_write + temps
    assert not [w for w in recwarn if "damaged" in str(w.message)]
    assert last_step >= KILLS // 2 - 1  # half the children saved at least once before their kill
    print(f"{KILLS} kills, {mid_write} landed mid-write, last step {last_step}")
