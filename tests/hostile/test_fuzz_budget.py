"""The spec/model fuzz harness without atheris: its per-input budget, and its seeds replayed.

``tests/fuzz/fuzz_model_pack.py`` runs ``_model_pack.check`` under ``_budget``; here the budget's forked
runner is checked to tell each way an input can end, and every seed spec passes the readers
(validate, build on meta, load_model, inspect, diff) within the 2 s and 1 GiB budget.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import _budget  # noqa: E402

pytestmark = [pytest.mark.budget(300), pytest.mark.skipif(sys.platform != "linux", reason="fork, RLIMIT_DATA")]


def _spin(data: bytes) -> None:
    while True:
        pass


def _hog(data: bytes) -> None:
    chunks = []
    while True:
        chunks.append(bytearray(64 << 20))


def _raise(data: bytes) -> None:
    raise KeyError(data)


def test_the_budget_tells_each_ending() -> None:
    ok = _budget.run_forked(lambda d: None, b"")
    assert ok.status == "ok", ok
    spun = _budget.run_forked(_spin, b"", seconds=0.5)
    assert spun.status == "timeout" and spun.seconds < 30, spun
    hog = _budget.run_forked(_hog, b"", memory=256 << 20)
    assert hog.status == "memory", hog
    raised = _budget.run_forked(_raise, b"x")
    assert raised.status == "raised", raised


def test_cpu_budget_stops_a_loop_in_process() -> None:
    start = time.monotonic()
    with pytest.raises(_budget.OverBudget):
        with _budget.cpu_budget(0.3):
            _spin(b"")
    assert time.monotonic() - start < 10


def test_seed_specs_pass_every_reader_within_budget() -> None:
    torch = pytest.importorskip("torch")
    import _model_pack

    seeds = _model_pack.seeds()
    threads = torch.get_num_threads()
    try:
        _model_pack.preload()  # sets one torch thread, as the fuzzer runs: this process's setting is restored
        for name, data in seeds.items():
            # the 2 s budget is the fuzzer's; a shared CI machine gets ten times that here
            outcome = _budget.run_forked(_model_pack.check, data, seconds=20)
            assert not outcome.finding, (name, outcome)
    finally:
        torch.set_num_threads(threads)  # later tests compare with subprocesses on the default threads
    assert len(seeds) >= 3 * 25
