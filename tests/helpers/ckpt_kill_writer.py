"""Kill-test child: restore, then save ~50 MiB checkpoints forever until SIGKILLed.

``python ckpt_kill_writer.py RUN_DIR KEEP_LAST``. numpy only (no torch import),
so a fresh child starts in a fraction of a second. Every array is filled with
the step number, which lets the parent check that a checkpoint's content
belongs to its step. Prints ``ready <start>`` after restoring and
``saved <step>`` after each save.
"""

from __future__ import annotations

import sys

import numpy as np

from modelpack.checkpoint import Checkpointer

SHAPES = [(1536, 4096), (1536, 4096), (128, 1024)]  # 2 x 24 MiB + 0.5 MiB float32


class ArrayModel:
    """Anything with state_dict/load_state_dict can be checkpointed; here, numpy arrays."""

    def __init__(self) -> None:
        self.arrays = {f"w{i}": np.zeros(shape, np.float32) for i, shape in enumerate(SHAPES)}

    def state_dict(self) -> dict:
        return self.arrays

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.arrays[k][...] = v


def main(run_dir: str, keep_last: int) -> None:
    model = ArrayModel()
    ckpt = Checkpointer(run_dir, keep_last=keep_last)
    start = ckpt.restore(model=model)
    print("ready", start, flush=True)
    step = start
    while True:
        for a in model.arrays.values():
            a.fill(step)
        ckpt.save(step, model=model, extra={"step": step})
        print("saved", step, flush=True)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
