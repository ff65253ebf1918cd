"""Branching: saving below existing steps moves the newer checkpoints aside, never loses either branch."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import modelpack
from modelpack import CheckpointError
from modelpack.checkpoint import Checkpointer, CheckpointWarning, _branch, _files

from conftest import ROOT


def _save(ckpt: Checkpointer, *steps: int) -> None:
    for step in steps:
        ckpt.save(step, extra={"w": np.full(1000, step, np.int64)}, rng=False)


def _old_branch(folder, keep_last: int = 3) -> Checkpointer:
    """The issue's folder: 300, 400 and 500 saved, then 300 restored."""
    _save(Checkpointer(folder, keep_last=keep_last), 300, 400, 500)
    ckpt = Checkpointer(folder, keep_last=keep_last)
    assert ckpt.restore(path=ckpt.path_for(300), rng=False) == 301
    return ckpt


def _abandoned(folder) -> dict[str, list[int]]:
    """{sub-folder: steps} under abandoned/, each file checked to load and hold its step."""
    found = {}
    for sub in sorted((folder / _branch.ABANDONED).iterdir()):
        files = _files.list_checkpoints(sub, "ckpt")
        for f in files:
            assert np.all(modelpack.load(f.path, verify=True)["extra"]["w"] == f.step)
        found[sub.name] = [f.step for f in files]
    return found


def _steps(ckpt: Checkpointer) -> list[int]:
    return [f.step for f in ckpt.checkpoints()]


def test_saving_below_newer_steps_moves_them_aside_and_resumes_the_new_branch(tmp_path):
    ckpt = _old_branch(tmp_path)
    with pytest.warns(CheckpointWarning) as caught:
        _save(ckpt, 310, 320, 330)
    assert len(caught) == 1  # one warning, for the one branch
    message = str(caught[0].message)
    assert "ckpt-000000000400.mpk, ckpt-000000000500.mpk" in message
    assert str(tmp_path / _branch.ABANDONED) in message
    assert _steps(ckpt) == [310, 320, 330]
    (moved,) = _abandoned(tmp_path).values()
    assert moved == [400, 500]
    again = Checkpointer(tmp_path)
    assert again.restore(rng=False) == 331 and np.all(again.restored.extra["w"] == 330)


def test_retention_counts_only_the_live_branch(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=2, keep_every=200)
    _save(ckpt, *range(0, 600, 100))
    assert _steps(ckpt) == [0, 200, 400, 500]
    with pytest.warns(CheckpointWarning):
        _save(ckpt, 210)
    assert _steps(ckpt) == [0, 200, 210]
    _save(ckpt, 220, 230)
    assert _steps(ckpt) == [0, 200, 220, 230]  # 400 (a keep_every step) left with its branch
    assert list(_abandoned(tmp_path).values()) == [[400, 500]]


def test_saving_the_newest_step_again_or_a_higher_one_is_no_branch(tmp_path, recwarn):
    ckpt = Checkpointer(tmp_path)
    _save(ckpt, 1, 2, 2, 3)
    assert _steps(ckpt) == [1, 2, 3] and not (tmp_path / _branch.ABANDONED).exists()
    assert not [w for w in recwarn if issubclass(w.category, CheckpointWarning)]


def test_saving_an_existing_middle_step_replaces_it_and_moves_the_rest(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_last=None)
    _save(ckpt, 1, 2, 3)
    with pytest.warns(CheckpointWarning, match="ckpt-000000000003.mpk"):
        _save(ckpt, 2)
    assert _steps(ckpt) == [1, 2] and list(_abandoned(tmp_path).values()) == [[3]]


def test_two_branches_get_two_folders(tmp_path):
    ckpt = _old_branch(tmp_path, keep_last=None)
    with pytest.warns(CheckpointWarning):
        _save(ckpt, 310)
        _save(ckpt, 305)
    assert _steps(ckpt) == [300, 305]
    assert sorted(_abandoned(tmp_path).values()) == [[310], [400, 500]]


# --------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no handler cleans up."""


def _crash_at(monkeypatch, point: str) -> None:
    real_rename, real_unlink = os.rename, pathlib.Path.unlink

    def rename(src, dst):
        real_rename(src, dst)
        raise Crash  # the first checkpoint moved, the second not

    def unlink(self, *a, **k):
        if self.name == "ckpt.branch.json":
            if point == "after_record_removed":
                real_unlink(self, *a, **k)
            raise Crash
        return real_unlink(self, *a, **k)

    def raise_crash(*a, **k):
        raise Crash

    if point == "record_written":
        monkeypatch.setattr(_branch, "_finish", raise_crash)
    elif point == "first_moved":
        monkeypatch.setattr(_branch.os, "rename", rename)
    elif point in ("all_moved", "after_record_removed"):
        monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    elif point == "before_new_file":
        monkeypatch.setattr(_files, "write_file", raise_crash)


POINTS = ["record_written", "first_moved", "all_moved", "after_record_removed", "before_new_file"]


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_any_point_of_a_branch_resumes_the_new_branch_and_keeps_the_old(tmp_path, monkeypatch, point):
    ckpt = _old_branch(tmp_path)
    _crash_at(monkeypatch, point)
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        with pytest.raises(Crash):
            _save(ckpt, 310)
    monkeypatch.undo()

    after = Checkpointer(tmp_path)
    assert _steps(after) == [300]  # the old branch's files are hidden or gone aside
    assert after.restore(rng=False) == 301 and np.all(after.restored.extra["w"] == 300)
    with warnings.catch_warnings(record=True) as resumed:
        warnings.simplefilter("always")
        _save(after, 310, 320, 330)  # the first save finishes an interrupted move
    assert _steps(after) == [310, 320, 330]
    assert list(_abandoned(tmp_path).values()) == [[400, 500]]
    assert not (tmp_path / "ckpt.branch.json").exists()
    # the move was announced, naming both files: by the crashed save or by the one that finished it
    said = [str(w.message) for w in before + resumed if w.category is CheckpointWarning]
    assert said and "ckpt-000000000400.mpk, ckpt-000000000500.mpk" in said[-1]


KILLED_MID_MOVE = r"""
import os, sys
import numpy as np
from modelpack.checkpoint import Checkpointer, _branch
ckpt = Checkpointer(sys.argv[1])
for step in (300, 400, 500):
    ckpt.save(step, extra={"w": np.full(1000, step, np.int64)}, rng=False)
ckpt.restore(path=ckpt.path_for(300), rng=False)
real = os.rename
def rename(src, dst):
    real(src, dst)
    os._exit(86)
_branch.os.rename = rename
ckpt.save(310, extra={"w": np.full(1000, 310, np.int64)}, rng=False)
"""


def test_a_process_killed_between_two_moves_resumes_the_new_branch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", KILLED_MID_MOVE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 86, done.stderr
    assert (tmp_path / "ckpt.branch.json").exists() and (tmp_path / "ckpt-000000000500.mpk").exists()
    ckpt = Checkpointer(tmp_path)
    assert ckpt.restore(rng=False) == 301  # not 501: the record hides what was still to move


# --------------------------------------------------------------------------- the record


@pytest.mark.parametrize("text", [
    "{not json",
    '{"format": "modelpack.checkpoint.branch", "above": 3, "into": "../../elsewhere"}',
    '{"format": "modelpack.checkpoint.branch", "above": -1, "into": "x"}',
    '{"format": "other", "above": 3, "into": "x"}',
])
def test_a_damaged_branch_record_stops_restore_and_save(tmp_path, text):
    ckpt = Checkpointer(tmp_path)
    _save(ckpt, 1, 5)
    (tmp_path / "ckpt.branch.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"ckpt\.branch\.json: the branch record is damaged"):
        ckpt.restore(rng=False)
    with pytest.raises(CheckpointError, match="the branch record is damaged"):
        _save(ckpt, 6)
    assert _steps_on_disk(tmp_path) == [1, 5]


def _steps_on_disk(folder) -> list[int]:
    return [f.step for f in _files.list_checkpoints(folder, "ckpt")]
