"""The Checkpointer in a distributed run saves through DCP: retention, async, fallback and restore as usual."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from helpers.dcp_group import run_group  # noqa: E402
from helpers.dcp_work import assert_same, ckpt_resume, ckpt_train, full_state, make  # noqa: E402

import modelpack  # noqa: E402
from modelpack import Checkpointer, CheckpointWarning  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "refs").mkdir()
    run_group(2, ckpt_train, str(root / "ckpt"), str(root / "refs"))
    return root


def test_retention_keeps_the_last_two_committed_folders(run):
    names = sorted(p.name for p in (run / "ckpt").iterdir())
    assert names == ["ckpt-000000000002.dcp", "ckpt-000000000003.dcp"], names
    steps = [f.step for f in Checkpointer(run / "ckpt").checkpoints()]
    assert steps == [2, 3]


def test_restore_on_two_ranks(run):
    run_group(2, ckpt_resume, str(run / "ckpt"), str(run / "refs"), 3)


def test_restore_in_one_process_without_a_group(run):
    m, opt = make(7, shard=False)
    ck = Checkpointer(run / "ckpt")
    assert ck.restore(model=m, optimizer=opt) == 4
    assert ck.restored.extra == {"loss": 3.0}
    assert_same(full_state(m, opt), modelpack.load(run / "refs" / "ref-3.mpk"))


def test_damaged_newest_falls_back(run, tmp_path):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(run / "ckpt", folder)
    shard = next((folder / "ckpt-000000000003.dcp").glob("shard-*.mpk"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40
    shard.write_bytes(bytes(data))
    run_group(2, ckpt_resume, str(folder), str(run / "refs"), 2)


def test_uncommitted_folder_is_never_listed(run, tmp_path):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(run / "ckpt", folder)
    (folder / "ckpt-000000000003.dcp" / "metadata.mpk").unlink()  # as if the coordinator died before its commit
    assert [f.step for f in Checkpointer(folder).checkpoints()] == [2]
    m, opt = make(7, shard=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert Checkpointer(folder).restore(model=m, optimizer=opt) == 3
