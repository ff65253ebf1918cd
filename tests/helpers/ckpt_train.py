"""Exact-resume helper: a tiny training run touching every RNG a real one does.

Run as ``python ckpt_train.py JOBS_JSON``; each job is
``{"out": FILE, "stop": N, "total": M, "run_dir": DIR | null, "resume": bool}``.
A job seeds everything, optionally restores from ``run_dir``, trains steps
``[start, stop)`` (checkpointing every 4 steps and after the last one), and
saves the final model / optimizer / scheduler state to ``out`` with modelpack.
Randomness used: dropout (torch global), a shuffled DataLoader (its own
torch.Generator), augmentation noise from numpy's global RNG, a numpy
Generator and Python's ``random``.
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import torch

import modelpack
from modelpack.checkpoint import Checkpointer

EVERY = 4


def _setup() -> tuple:
    torch.manual_seed(0)
    np.random.seed(1)
    random.seed(2)
    loader_gen = torch.Generator().manual_seed(3)
    aug = np.random.default_rng(4)
    data = torch.utils.data.TensorDataset(torch.randn(90, 8), torch.randn(90, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, generator=loader_gen)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
    return loader, loader_gen, aug, model, opt, sched


def _train_step(model, opt, sched, x, y, aug) -> None:
    x = x + torch.from_numpy(aug.normal(0, 0.01, size=tuple(x.shape)).astype(np.float32))
    x = x * float(1.0 + 0.1 * np.random.rand())
    if random.random() < 0.5:
        x = -x
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    sched.step()


def run(job: dict) -> None:
    loader, loader_gen, aug, model, opt, sched = _setup()
    gens = {"loader": loader_gen, "aug": aug}
    ckpt = Checkpointer(job["run_dir"], keep_last=2) if job["run_dir"] else None
    step, epoch, skip = 0, 0, 0
    if ckpt is not None and job["resume"]:
        step = ckpt.restore(model=model, optimizer=opt, scheduler=sched, generators=gens)
        extra = ckpt.restored.extra
        epoch, skip = extra["epoch"], extra["batch"] + 1
        loader_gen.set_state(extra["epoch_rng"])  # replay this epoch's shuffle
        print(f"resumed from step {ckpt.restored.step}", flush=True)
    while step < job["stop"]:
        epoch_rng = loader_gen.get_state()
        for b, (x, y) in enumerate(loader):
            if b < skip:
                continue
            _train_step(model, opt, sched, x, y, aug)
            if ckpt is not None and (step % EVERY == 0 or step == job["stop"] - 1):
                extra = {"epoch": epoch, "batch": b, "epoch_rng": epoch_rng}
                ckpt.save(step, model=model, optimizer=opt, scheduler=sched, generators=gens, extra=extra)
            step += 1
            if step >= job["stop"]:
                break
        else:
            epoch, skip = epoch + 1, 0
    modelpack.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                   job["out"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    for job in json.loads(sys.argv[1]):
        run(job)
