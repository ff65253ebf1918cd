"""Temp files: a live writer's lock keeps its temp file; errors name the target, never the temp."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError, _fs
from modelpack.checkpoint import Checkpointer

DEAD_PID = 99_999_999  # above Linux's pid_max: a pid test would call this writer dead

HOLDER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"half a checkpoint")
print("locked", flush=True)
sys.stdin.read()   # hold the lock until the parent closes our stdin
"""


def _temp(target, pid: int, token: str = "0123456789ab"):
    return target.parent / f".{target.name}.{pid}.{token}.mpk-tmp"


def _temps(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".mpk-tmp"))


def test_a_live_writer_in_another_process_keeps_its_temp_until_it_dies(tmp_path):
    """The name carries a pid that is dead here (another pid namespace, another host): the lock decides."""
    target = tmp_path / "x.mpk"
    live = _temp(target, DEAD_PID)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        modelpack.save([1], target)
        assert live.read_bytes() == b"half a checkpoint"
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    modelpack.save([2], target)  # its writer is gone: the lock went with it
    assert _temps(tmp_path) == [] and modelpack.load(target) == [2]


def test_an_unlocked_temp_is_removed_whatever_pid_its_name_holds(tmp_path):
    target = tmp_path / "x.mpk"
    for pid in (os.getpid(), os.getppid(), DEAD_PID):
        _temp(target, pid, f"{pid:012x}"[-12:]).write_bytes(b"left by a crash")
    modelpack.save([1], target)
    assert _temps(tmp_path) == []


def test_a_write_in_progress_in_this_process_survives_cleanup(tmp_path):
    target = tmp_path / "x.mpk"
    with _fs.atomic_write(target) as fd:
        os.write(fd, b"new")
        assert _fs.remove_stale_temps(target) == []
        modelpack.save([1], tmp_path / "other.mpk")  # another save in the folder sweeps too
        assert len(_temps(tmp_path)) == 1
    assert target.read_bytes() == b"new" and _temps(tmp_path) == []


def test_a_cleaner_that_locks_a_new_temp_first_makes_the_writer_take_another(tmp_path, monkeypatch):
    """The window between the writer's open and its flock: the cleaner wins, the writer starts over."""
    target = tmp_path / "x.mpk"
    real_hold, calls = _fs._hold, []

    def cleaner_first(fd):
        calls.append(fd)
        if len(calls) == 1:
            assert len(_fs.remove_stale_temps(target)) == 1  # locks and removes the unlocked new file
        return real_hold(fd)

    monkeypatch.setattr(_fs, "_hold", cleaner_first)
    modelpack.save({"v": np.arange(5)}, target)
    assert len(calls) == 2 and _temps(tmp_path) == []
    assert np.array_equal(modelpack.load(target)["v"], np.arange(5))


def test_other_files_and_folders_matching_the_pattern_are_left_alone(tmp_path):
    target = tmp_path / "x.mpk"
    (_temp(target, 1, "aaaaaaaaaaaa")).mkdir()
    os.mkfifo(_temp(target, 1, "bbbbbbbbbbbb"))
    modelpack.save([1], target)
    assert len(_temps(tmp_path)) == 2


# --------------------------------------------------------------------------- errors name the target


def _on_temp(fd_or_path) -> bool:
    if isinstance(fd_or_path, int):
        try:
            fd_or_path = os.readlink(f"/proc/self/fd/{fd_or_path}")
        except OSError:
            return False
    return os.fspath(fd_or_path).endswith(".mpk-tmp")


def _fail_on_temp(monkeypatch, name: str, code: int) -> None:
    """Make ``os.<name>`` raise ``code`` (as the kernel would word it) when it touches a temp file.

    ``write`` covers ``writev`` too: the writer gathers small members into one writev.
    """
    if name == "write":
        _fail_on_temp(monkeypatch, "writev", code)
    real = getattr(os, name)

    def call(first, *rest, **kw):
        if _on_temp(first):
            names = (first, *rest[:1]) if name in ("open", "replace") else ()
            raise OSError(code, os.strerror(code), *names)
        return real(first, *rest, **kw)

    monkeypatch.setattr(os, name, call)


FAILURES = [("write", errno.ENOSPC), ("writev", errno.ENOSPC), ("fsync", errno.EIO), ("open", errno.EACCES),
            ("replace", errno.EIO)]


def _data(name: str) -> np.ndarray:
    """Small members go out in one writev; a member of 1 MiB or more with os.write."""
    return np.arange(1 << 18 if name == "write" else 1000)


@pytest.mark.parametrize("name, code", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failed_save_names_the_users_path_not_the_temp(tmp_path, monkeypatch, name, code):
    target = tmp_path / "x.mpk"
    _fail_on_temp(monkeypatch, name, code)
    with pytest.raises(OSError) as info:
        modelpack.save({"v": _data(name)}, target)
    monkeypatch.undo()
    e = info.value
    assert e.errno == code and isinstance(e, type(OSError(code, "x")))  # PermissionError for EACCES
    assert str(target) in str(e) and "mpk-tmp" not in str(e), str(e)
    assert e.__cause__ is not None and e.__cause__.errno == code
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name, code", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failed_checkpoint_names_the_checkpoint_not_the_temp(tmp_path, monkeypatch, name, code):
    ckpt = Checkpointer(tmp_path)
    _fail_on_temp(monkeypatch, name, code)
    with pytest.raises(CheckpointError, match=os.strerror(code)) as info:
        ckpt.save(3, extra={"v": _data(name)})
    assert "ckpt-000000000003.mpk" in str(info.value) and "mpk-tmp" not in str(info.value)
    assert info.value.__cause__.errno == code


def test_an_error_naming_another_file_keeps_that_name(tmp_path):
    target, source = tmp_path / "x.mpk", tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as info:
        with _fs.atomic_write(target):
            open(source, "rb")
    assert info.value.filename == str(source) and not target.exists()
