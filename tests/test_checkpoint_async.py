"""Asynchronous saves: snapshot isolation, one write in flight, errors on the next call, exit flush."""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError
from modelpack.checkpoint import Checkpointer, CheckpointWarning
from modelpack.checkpoint import _files

from conftest import bits_equal, run_python

torch = pytest.importorskip("torch")


class GatedWriter:
    """Wraps the real file writer: holds each write until released, and counts overlap."""

    def __init__(self, monkeypatch, *, fail: OSError | None = None) -> None:
        self.real = _files.write_file
        self.gate = threading.Event()
        self.started = threading.Event()
        self.active = self.max_active = self.calls = 0
        self.fail = fail
        self._lock = threading.Lock()
        monkeypatch.setattr(_files, "write_file", self)

    def __call__(self, *args, **kwargs) -> None:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        self.started.set()
        try:
            assert self.gate.wait(30), "test never released the writer"
            if self.fail is not None:
                raise self.fail
            self.real(*args, **kwargs)
        finally:
            with self._lock:
                self.active -= 1


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    return model, opt


def test_snapshot_isolation_file_holds_the_values_at_save_time(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    writer = GatedWriter(monkeypatch)
    ckpt = Checkpointer(tmp_path)
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_avg = opt.state[model.weight]["exp_avg"].clone()

    path = ckpt.save(1, model=model, optimizer=opt, blocking=False)
    assert writer.started.wait(10) and not path.exists()  # the write is still in flight...
    with torch.no_grad():  # ...while the loop keeps training, in place
        model.weight.add_(1.0)
        model.bias.zero_()
    opt.state[model.weight]["exp_avg"].mul_(3.0)
    writer.gate.set()
    ckpt.wait()

    saved = modelpack.load(path, verify=True)
    assert all(bits_equal(saved["model"][k], before_model[k]) for k in before_model)
    assert bits_equal(saved["optimizer"]["state"][0]["exp_avg"], before_avg)


def test_reused_snapshot_buffers_never_leak_into_an_earlier_file(tmp_path):
    model, opt = _model_and_opt()
    ckpt = Checkpointer(tmp_path, keep_last=None)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    p1 = ckpt.save(1, model=model, optimizer=opt, blocking=False)
    with torch.no_grad():
        model.weight.mul_(-2.0)
    p2 = ckpt.save(2, model=model, optimizer=opt, blocking=False)
    ckpt.wait()
    assert bits_equal(modelpack.load(p1)["model"]["weight"], first["weight"])
    assert bits_equal(modelpack.load(p2)["model"]["weight"], model.weight.detach())


def test_tied_tensors_stay_shared_in_a_snapshot(tmp_path):
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    ckpt = Checkpointer(tmp_path)
    path = ckpt.save(0, model=model, blocking=False)
    ckpt.wait()
    with modelpack.open(path) as pack:
        assert [n for n in pack.keys() if n.startswith("model.")] == ["model.emb.weight"]


def test_at_most_one_save_in_flight(tmp_path, monkeypatch):
    writer = GatedWriter(monkeypatch)
    ckpt = Checkpointer(tmp_path, keep_last=None)
    ckpt.save(1, extra={"a": np.zeros(10)}, blocking=False)
    assert writer.started.wait(10)
    second_returned = threading.Event()

    def second() -> None:
        ckpt.save(2, extra={"a": np.ones(10)}, blocking=False)
        second_returned.set()

    t = threading.Thread(target=second)
    t.start()
    assert not second_returned.wait(0.3)  # blocked behind the first write
    writer.gate.set()
    t.join(10)
    ckpt.wait()
    assert second_returned.is_set() and writer.max_active == 1 and writer.calls == 2
    assert [c.step for c in ckpt.checkpoints()] == [1, 2]


@pytest.mark.parametrize("next_call", ["wait", "save", "restore"])
def test_a_background_error_surfaces_on_the_next_call(tmp_path, monkeypatch, next_call):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, extra={"a": 1})
    writer = GatedWriter(monkeypatch, fail=OSError(errno.ENOSPC, "No space left on device"))
    writer.gate.set()
    ckpt.save(2, extra={"a": 2}, blocking=False)  # returns at once; the write fails later
    with pytest.raises(CheckpointError, match=r"background save of step 2 failed.*No space left") as info:
        getattr(ckpt, next_call)(*([3] if next_call == "save" else []))
    cause = info.value.__cause__
    assert isinstance(cause, CheckpointError) and cause.__cause__.errno == errno.ENOSPC
    ckpt.wait()  # reported once, then cleared
    assert [c.step for c in ckpt.checkpoints()] == [1]


def test_context_manager_flushes_and_does_not_mask_the_body_error(tmp_path, monkeypatch):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, extra={"a": 1}, blocking=False)
    assert [c.step for c in ckpt.checkpoints()] == [1]

    writer = GatedWriter(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))
    writer.gate.set()
    with pytest.warns(CheckpointWarning, match="background save of step 2"), pytest.raises(KeyError):
        with Checkpointer(tmp_path) as ckpt:
            ckpt.save(2, extra={"a": 2}, blocking=False)
            raise KeyError("the training loop's own error")


SLOW_EXIT = r"""
import sys, time
import numpy as np
from modelpack.checkpoint import Checkpointer, _files
real = _files.write_file
def slow(*a, **k):
    time.sleep(0.5)
    if sys.argv[2] == "fail":
        raise OSError(28, "No space left on device")
    real(*a, **k)
_files.write_file = slow
Checkpointer(sys.argv[1]).save(5, extra={"w": np.arange(1 << 20)}, blocking=False)  # 8 MiB: CRC on a worker
print("returned", flush=True)
"""


def test_interpreter_exit_waits_for_the_background_write(tmp_path):
    t0 = time.perf_counter()
    done = run_python(SLOW_EXIT, str(tmp_path), "ok", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "returned\n" and time.perf_counter() - t0 >= 0.5
    state = modelpack.load(tmp_path / "ckpt-000000000005.mpk", verify=True)
    assert np.array_equal(state["extra"]["w"], np.arange(1 << 20))


def test_a_failure_at_exit_is_reported_on_stderr(tmp_path):
    done = run_python(SLOW_EXIT, str(tmp_path), "fail", timeout=60)
    assert "modelpack: error: the background save of step 5 failed" in done.stderr
    assert "No space left on device" in done.stderr
    assert not list(tmp_path.iterdir())


def test_snapshot_buffers_follow_a_change_in_which_tensors_are_tied(tmp_path):
    a, b = torch.arange(6.0), torch.arange(6.0) + 100
    ckpt = Checkpointer(tmp_path, keep_last=None)
    ckpt.save(1, extra={"x": a, "y": a}, blocking=False)  # tied: one buffer serves both paths
    p2 = ckpt.save(2, extra={"x": a, "y": b}, blocking=False)  # untied: each needs its own
    ckpt.wait()
    saved = modelpack.load(p2)["extra"]
    assert bits_equal(saved["x"], a) and bits_equal(saved["y"], b)
