"""Crash safety: atomic replace under SIGKILL, failures mid-write, stale temp files."""

from __future__ import annotations

import fcntl
import io
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import modelpack
from modelpack import _fs

from conftest import ROOT

WRITER = r"""
import sys, numpy as np, modelpack
path = sys.argv[1]
a = np.full(4 << 20, 1.0, np.float32)   # 16 MiB
b = np.full(4 << 20, 2.0, np.float32)
print("ready", flush=True)
i = 0
while True:
    modelpack.save({"v": a if i % 2 else b, "i": i % 2}, path)
    i += 1
"""


def _loads_as_old_or_new(path) -> float:
    back = modelpack.load(path, verify=True)
    value = float(back["v"][0])
    assert value in (1.0, 2.0) and back["i"] == (1 if value == 1.0 else 0)
    assert (back["v"] == value).all()
    return value


def test_sigkill_during_save_never_leaves_a_broken_target(tmp_path):
    target = tmp_path / "target.mpk"
    modelpack.save({"v": np.full(4 << 20, 2.0, np.float32), "i": 0}, target)
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seen = set()
    for _ in range(24):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.add(_loads_as_old_or_new(target))
    # a later save in this process removes the dead writers' temp files
    modelpack.save({"v": np.full(4 << 20, 1.0, np.float32), "i": 1}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["target.mpk"]
    assert seen  # the writer made progress at least sometimes


def test_error_while_writing_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "t.mpk"
    modelpack.save({"v": np.arange(10)}, target)
    before = target.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_fs.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        modelpack.save({"v": np.arange(20)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.mpk"]


def test_unsupported_object_fails_before_touching_the_target(tmp_path):
    target = tmp_path / "t.mpk"
    modelpack.save([1], target)
    with pytest.raises(modelpack.ModelPackError):
        modelpack.save([np.arange(3), {1, 2}], target)
    assert modelpack.load(target) == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.mpk"]


def test_saving_over_a_mapped_file_keeps_loaded_tensors_valid(tmp_path):
    target = tmp_path / "m.mpk"
    modelpack.save({"v": np.full(1 << 20, 3.0)}, target)
    loaded = modelpack.load(target)["v"]
    modelpack.save({"v": np.full(1 << 20, 4.0)}, target)
    assert (loaded == 3.0).all()
    assert (modelpack.load(target)["v"] == 4.0).all()


def test_live_writers_temp_files_are_not_removed(tmp_path):
    """Liveness is the writer's flock on its temp file, not a pid (see tests/test_fs_locks.py)."""
    target = tmp_path / "x.mpk"
    live = tmp_path / ".x.mpk.999999999.abcdef.mpk-tmp"  # a pid that is dead here, but locked
    dead = tmp_path / f".x.mpk.{os.getppid()}.abcdef.mpk-tmp"  # a live pid, but nobody holds the lock
    live.write_bytes(b"in progress")
    dead.write_bytes(b"left by a crash")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        modelpack.save([1], target)
    finally:
        os.close(fd)
    assert live.exists() and not dead.exists()


def _many_small(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Small members past several gathered batches, so the background writer thread runs."""
    rng = np.random.default_rng(seed)
    return {f"t{i}": rng.random(8192, np.float32) for i in range(n)}  # 32 KiB each, ~12 MiB in all


def test_many_small_members_written_in_background_batches_load_back(tmp_path):
    from modelpack import _zipwrite

    obj = _many_small()
    assert sum(a.nbytes for a in obj.values()) > 2 * _zipwrite._GATHER
    target = tmp_path / "m.mpk"
    modelpack.save(obj, target)
    modelpack.verify(target)
    out = modelpack.load(target)
    assert all(np.array_equal(out[k], v) for k, v in obj.items())
    with open(target, "rb") as f:  # same bytes as a file object gets (written on the caller's thread)
        assert f.read() == modelpack.save_bytes(obj)


def test_background_write_error_keeps_the_old_file_and_stops_the_thread(tmp_path, monkeypatch):
    import threading

    from modelpack import _zipwrite

    target = tmp_path / "t.mpk"
    modelpack.save({"v": np.arange(10)}, target)
    before = target.read_bytes()
    calls = []
    real = os.writev

    def full_disk(fd, buffers):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(fd, buffers)

    monkeypatch.setattr(_zipwrite.os, "writev", full_disk)
    with pytest.raises(OSError, match="No space left") as err:
        modelpack.save(_many_small(), target)
    monkeypatch.undo()
    assert "modelpack-write" in calls  # the failing write ran on the writer thread
    assert err.value.filename == str(target)  # reported against the target, not the temp file
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.mpk"]
    assert not [t for t in threading.enumerate() if t.name == "modelpack-write"]


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collection_is_left_as_it_was(tmp_path, enabled):
    """save and load pause the cyclic collector while they run, and leave it as they found it, errors included."""
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        modelpack.save({"a": np.arange(3)}, tmp_path / "g.mpk")
        assert modelpack.load(tmp_path / "g.mpk")["a"].tolist() == [0, 1, 2]
        with pytest.raises(modelpack.ModelPackError):
            modelpack.save({"a": object()}, tmp_path / "h.mpk")
        (tmp_path / "bad.mpk").write_bytes(b"PK\x03\x04" + b"\0" * 60)
        with pytest.raises(modelpack.ModelPackError):
            modelpack.load(tmp_path / "bad.mpk")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_big_members_in_chunks_with_patched_crc_load_and_verify(tmp_path, torch):
    """Members past the chunk size: summed here, written on the writer thread, CRC patched in the header."""
    from modelpack import _zipwrite

    big = torch.arange(_zipwrite._CHUNK // 4 + 5000, dtype=torch.float32)  # more than one chunk
    obj = {"small": _many_small(50), "big": big, "big_t": big[: 1 << 19].reshape(512, 1024).T, "tail": np.arange(3)}
    target = tmp_path / "b.mpk"
    modelpack.save(obj, target, sha256=True)
    modelpack.verify(target)  # every CRC-32 (patched ones included) and SHA-256 recomputed
    out = modelpack.load(target)
    assert torch.equal(out["big"], big) and torch.equal(out["big_t"], obj["big_t"])
    assert all(np.array_equal(out["small"][k], v) for k, v in obj["small"].items())
    buf = io.BytesIO()
    modelpack.save(obj, buf, sha256=True)
    assert target.read_bytes() == buf.getvalue()  # a file object gets the CRC before the header: same bytes


def test_stream_that_fails_midway_with_the_writer_thread_running_leaves_the_target(tmp_path):
    import threading

    from modelpack import api, tree

    target = tmp_path / "s.mpk"
    modelpack.save({"old": np.arange(3)}, target)
    before = target.read_bytes()
    arrays = _many_small(300)
    tree_json, leaves = tree.encode(arrays)
    planned = [(leaf.name, leaf.value.shape) for leaf in leaves]

    def leaves_then_fail():
        for i, leaf in enumerate(leaves):
            if i == 250:  # several batches are already with the writer thread
                raise RuntimeError("source went away")
            yield leaf

    with pytest.raises(RuntimeError, match="source went away"):
        api.stream_pack(target, tree_json, planned, leaves_then_fail())
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.mpk"]
    assert not [t for t in threading.enumerate() if t.name == "modelpack-write"]


def _writeback_calls(monkeypatch, answer: int | None) -> list[tuple[int, int]]:
    """Record the ranges handed to sync_file_range; ``answer`` is its return value (None: no such call)."""
    calls: list[tuple[int, int]] = []

    def fake(fd, offset, nbytes, flags):
        assert flags == _fs._SYNC_FILE_RANGE_WRITE  # start writeback only: never wait, never a barrier
        calls.append((offset, nbytes))
        return answer

    monkeypatch.setattr(_fs, "_SYNC_FILE_RANGE", None if answer is None else fake)
    return calls


def test_writeback_is_started_for_each_background_batch_in_file_order(tmp_path, monkeypatch):
    calls = _writeback_calls(monkeypatch, 0)
    obj = _many_small()
    target = tmp_path / "w.mpk"
    modelpack.save(obj, target)
    assert len(calls) >= 2
    assert calls[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(calls, calls[1:]))  # contiguous ranges
    assert calls[-1][0] + calls[-1][1] <= target.stat().st_size
    assert target.read_bytes() == modelpack.save_bytes(obj)


@pytest.mark.parametrize("answer", [None, -1])  # no sync_file_range (not Linux), or the kernel refuses it
def test_without_writeback_the_file_is_the_same_and_the_writer_stops_asking(tmp_path, monkeypatch, answer):
    calls = _writeback_calls(monkeypatch, answer)
    obj = _many_small()
    target = tmp_path / "w.mpk"
    modelpack.save(obj, target)
    assert len(calls) == (0 if answer is None else 1)  # refused once: never asked again
    assert target.read_bytes() == modelpack.save_bytes(obj)
    modelpack.verify(target)


def test_start_writeback_on_this_system():
    """The real call: True on Linux for a regular file, False for a pipe (ESPIPE); False elsewhere."""
    r, w = os.pipe()
    try:
        assert _fs.start_writeback(w, 0, 1) is False
    finally:
        os.close(r)
        os.close(w)
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.write(b"x" * 8192)
        f.flush()
        assert _fs.start_writeback(f.fileno(), 0, 8192) is sys.platform.startswith("linux")
