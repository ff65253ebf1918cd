"""A rank SIGKILLed at a seeded moment of a distributed save leaves the previous checkpoint loadable.

The folder holds a committed checkpoint A; two ranks save B into it while one
of them dies at its n-th write, fsync, rename or unlink. What loads afterwards
is exactly A, or exactly B when the coordinator died after the commit (or the
victim's moment came after its work); the folder verifies; the next save
sweeps what the dead writers left.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import torch.distributed.checkpoint as dcp  # noqa: E402
from helpers.dcp_group import run_group  # noqa: E402
from helpers.dcp_work import assert_same, kill_plan, plain_state, save_killed  # noqa: E402

import modelpack.dcp  # noqa: E402
from modelpack.dcp import MpkStorageReader, MpkStorageWriter  # noqa: E402

pytestmark = pytest.mark.slow


def _single(fn, *args, **kwargs):
    with warnings.catch_warnings():  # "no process group: assuming a single process" is the point here
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _load(folder):
    state = plain_state(99)
    state["meta"] = {"name": "", "lr": 0.0, "sizes": []}
    _single(dcp.load, state, storage_reader=MpkStorageReader(folder))
    return state


@pytest.mark.parametrize("seed", range(12))
def test_sigkill_mid_save_leaves_previous_checkpoint(tmp_path, seed):
    folder = tmp_path / "ckpt"
    _single(dcp.save, plain_state(1), storage_writer=MpkStorageWriter(folder))
    victim, kill_at = kill_plan(seed, 2)
    codes = run_group(2, save_killed, str(folder), 2, victim, kill_at, timeout=60, expect_ok=False)
    assert codes[victim] == -9, (codes, kill_at)  # kill_plan picks a call the victim is sure to make
    got = _load(folder)
    if victim == 1:  # the coordinator never had every result: no commit
        assert_same(got, plain_state(1))
    else:
        assert got["step"] in (1, 2)
        assert_same(got, plain_state(got["step"]))
    modelpack.dcp.verify(folder)

    _single(dcp.save, plain_state(3), storage_writer=MpkStorageWriter(folder))
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and left[0] == "metadata.mpk" and left[1].startswith("shard-"), left
    assert_same(_load(folder), plain_state(3))
