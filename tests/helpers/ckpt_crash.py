"""Crash-point child: save steps 0-2, then die (os._exit) at a chosen point while saving step 3.

``python ckpt_crash.py RUN_DIR POINT`` with POINT one of before_rename,
after_rename, before_prune, mid_prune. Uses keep_last=2 and numpy only.
Exit code 86 means it died where asked; anything else is a failure.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

from modelpack.checkpoint import Checkpointer, _files

CRASHED = 86


def _die(*_: object, **__: object) -> None:
    os._exit(CRASHED)


def _install(point: str) -> None:
    real_replace, real_prune, real_unlink = os.replace, _files.prune, pathlib.Path.unlink

    def replace(src, dst, *a, **k):
        if point == "before_rename":
            _die()
        real_replace(src, dst, *a, **k)
        _die()  # after_rename: published, folder not yet fsynced, nothing pruned

    def prune(*args, **kwargs):
        pinned = args[4] if len(args) > 4 else kwargs.get("pinned", ())
        if pinned:
            _die()  # the new checkpoint is durable; retention has not run
        return real_prune(*args, **kwargs)

    def unlink(self, *a, **k):
        real_unlink(self, *a, **k)
        _die()  # first old checkpoint deleted, folder not fsynced

    if point in ("before_rename", "after_rename"):
        os.replace = replace
    elif point == "before_prune":
        _files.prune = prune
    elif point == "mid_prune":
        pathlib.Path.unlink = unlink
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main(run_dir: str, point: str) -> None:
    ckpt = Checkpointer(run_dir, keep_last=2)
    for step in range(3):
        ckpt.save(step, extra={"w": np.full(100_000, step, np.int32)})
    _install(point)
    ckpt.save(3, extra={"w": np.full(100_000, 3, np.int32)})
    raise SystemExit("the crash point was never reached")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
