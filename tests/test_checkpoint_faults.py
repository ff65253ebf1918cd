"""Injected faults: a full disk, fsync errors, file-size limits and crashes at each point of a save.

Each case must leave a latest checkpoint that verifies, every older one
intact, and (once the failing save is over) no temp file behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError
from modelpack.checkpoint import Checkpointer

from conftest import ROOT, run_python

CRASH_HELPER = ROOT / "tests" / "helpers" / "ckpt_crash.py"


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _is_temp(fd: int) -> bool:
    return _fd_path(fd).endswith(".mpk-tmp")


class DiskFull:
    """os.write/writev/pwrite on checkpoint temp files fail with ENOSPC once ``budget`` bytes are used."""

    def __init__(self, monkeypatch, budget: int) -> None:
        self.budget = budget
        for name in ("write", "writev", "pwrite"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name), name))

    def _wrap(self, real, name):
        def call(fd, data, *rest):
            if not _is_temp(fd):
                return real(fd, data, *rest)
            size = sum(memoryview(b).nbytes for b in data) if name == "writev" else memoryview(data).nbytes
            if size > self.budget:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.budget -= size
            return real(fd, data, *rest)

        return call


def _failing_fsync(monkeypatch, which) -> None:
    real = os.fsync

    def fsync(fd):
        if which(fd):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _two_good(tmp_path) -> Checkpointer:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (1, 2):
        ckpt.save(step, extra={"w": np.full(200_000, step, np.int64)})
    return ckpt


def _assert_intact(tmp_path, ckpt: Checkpointer, latest: int, steps: list[int]) -> None:
    names = sorted(os.listdir(tmp_path))
    assert not [n for n in names if n.endswith(".mpk-tmp")], names
    assert [c.step for c in ckpt.checkpoints()] == steps
    for c in ckpt.checkpoints():
        assert np.all(modelpack.load(c.path, verify=True)["extra"]["w"] == c.step)
    assert Checkpointer(tmp_path).restore() == latest + 1


@pytest.mark.parametrize("budget", [0, 100, 1_000_000])
def test_enospc_while_writing_raises_and_keeps_older_checkpoints(tmp_path, monkeypatch, budget):
    ckpt = _two_good(tmp_path)
    DiskFull(monkeypatch, budget)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint of step 3: No space left") as info:
        ckpt.save(3, extra={"w": np.full(200_000, 3, np.int64)})
    assert info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    _assert_intact(tmp_path, ckpt, 2, [1, 2])


def test_enospc_in_a_background_save_surfaces_later_and_keeps_older(tmp_path, monkeypatch):
    ckpt = _two_good(tmp_path)
    DiskFull(monkeypatch, 4096)
    ckpt.save(3, extra={"w": np.full(200_000, 3, np.int64)}, blocking=False)
    with pytest.raises(CheckpointError, match="background save of step 3 failed.*No space left"):
        ckpt.wait()
    monkeypatch.undo()
    _assert_intact(tmp_path, ckpt, 2, [1, 2])


def test_eio_on_fsync_of_the_new_file_raises_and_keeps_older(tmp_path, monkeypatch):
    ckpt = _two_good(tmp_path)
    _failing_fsync(monkeypatch, _is_temp)
    with pytest.raises(CheckpointError, match=r"step 3: Input/output error") as info:
        ckpt.save(3, extra={"w": np.full(200_000, 3, np.int64)})
    assert info.value.__cause__.errno == errno.EIO
    monkeypatch.undo()
    _assert_intact(tmp_path, ckpt, 2, [1, 2])


def test_eio_on_the_folder_fsync_after_rename_prunes_nothing(tmp_path, monkeypatch):
    """The rename happened but is not known durable: report it and keep every older checkpoint."""
    ckpt = _two_good(tmp_path)
    _failing_fsync(monkeypatch, lambda fd: _fd_path(fd) == str(tmp_path))
    with pytest.raises(CheckpointError, match="step 3: Input/output error"):
        ckpt.save(3, extra={"w": np.full(200_000, 3, np.int64)})
    monkeypatch.undo()
    _assert_intact(tmp_path, ckpt, 3, [1, 2, 3])
    ckpt.save(4, extra={"w": np.full(200_000, 4, np.int64)})
    assert [c.step for c in ckpt.checkpoints()] == [3, 4]


FILE_SIZE_LIMIT = r"""
import errno, resource, signal, sys
import numpy as np
from modelpack import CheckpointError
from modelpack.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep_last=2)
ckpt.save(1, extra={"w": np.full(1000, 1)})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # get EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    ckpt.save(2, extra={"w": np.full(1 << 20, 2)})     # 8 MiB > 1 MiB
except CheckpointError as e:
    print("errno", e.__cause__.errno == errno.EFBIG)
"""


def test_a_real_write_error_from_the_kernel_keeps_older(tmp_path):
    """RLIMIT_FSIZE makes the kernel itself fail a write mid-file (EFBIG): no mocks involved."""
    done = run_python(FILE_SIZE_LIMIT, str(tmp_path), timeout=60)
    assert done.stdout == "errno True\n", done.stderr
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000000001.mpk"]
    assert Checkpointer(tmp_path).restore() == 2


@pytest.mark.parametrize("point, left, latest", [
    ("before_rename", [1, 2], 2),  # temp file written and fsynced, never published
    ("after_rename", [1, 2, 3], 3),  # published; retention never ran
    ("before_prune", [1, 2, 3], 3),
    ("mid_prune", [2, 3], 3),  # one old checkpoint deleted, the folder not fsynced
])
def test_a_crash_at_each_point_of_a_save_leaves_a_good_latest(tmp_path, point, left, latest):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(CRASH_HELPER), str(tmp_path), point],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 86, done.stderr
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".mpk-tmp")]
    assert len(temps) == (1 if point == "before_rename" else 0)

    ckpt = Checkpointer(tmp_path, keep_last=2)
    assert [c.step for c in ckpt.checkpoints()] == left
    assert ckpt.restore() == latest + 1
    assert np.all(ckpt.restored.extra["w"] == latest)

    ckpt.save(4, extra={"w": np.full(100_000, 4, np.int32)})  # the next save cleans up
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-00000000000{latest}.mpk", "ckpt-000000000004.mpk"]
