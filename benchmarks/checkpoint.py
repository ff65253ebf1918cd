"""How long does a checkpoint block the training loop? (run by hand, not in CI)

    python benchmarks/checkpoint.py                 # 512 MiB model + Adam state (1.5 GiB), 3 runs
    python benchmarks/checkpoint.py --mib 64 --runs 5 --dir /fast/disk

Times, for the same state (model.state_dict() + optimizer.state_dict()):

* modelpack sync save: ``Checkpointer.save(blocking=True)``, durable on return
  (temp file, fsync, rename, folder fsync);
* modelpack async save: the part of ``save(blocking=False)`` the loop waits
  for (collecting state and copying tensors); the write runs in a thread;
* torch.save: writes straight over the target and does not fsync, so it is
  not crash safe; ``torch.save + fsync`` adds the flush for a fair comparison.

Each measurement starts with the page cache flushed (``os.sync``) and old
files deleted, so one run's write-back does not slow the next. Medians are
reported, plus the first async save alone (it allocates the snapshot buffers
that later saves refill).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import modelpack


def build(mib: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Square Linear layers totalling ``mib`` MiB of float32 weights, with Adam state for all."""
    width = 2048 if mib < 256 else 4096
    per_layer = width * width * 4
    layers = max(1, round(mib * 2**20 / per_layer))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    tensors = list(model.state_dict().values())
    tensors += [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def torch_save(model: torch.nn.Module, opt: torch.optim.Optimizer, path: str, fsync: bool) -> None:
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean(folder: str) -> None:
    """Start each measurement from an empty folder and a flushed page cache."""
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    os.sync()


def measure(model, opt, folder: str, runs: int) -> dict[str, list[float]]:
    sync_ck = modelpack.Checkpointer(os.path.join(folder, "sync"), keep_last=1)
    async_ck = modelpack.Checkpointer(os.path.join(folder, "async"), keep_last=1)
    times: dict[str, list[float]] = {k: [] for k in ("sync", "async", "async_write", "torch", "torch_fsync")}
    for run in range(runs):
        clean(folder)
        times["sync"].append(timed(lambda: sync_ck.save(run, model=model, optimizer=opt)))
        clean(folder)
        t0 = time.perf_counter()
        times["async"].append(timed(lambda: async_ck.save(run, model=model, optimizer=opt, blocking=False)))
        async_ck.wait()
        times["async_write"].append(time.perf_counter() - t0)
        clean(folder)
        times["torch"].append(timed(lambda: torch_save(model, opt, os.path.join(folder, "t.pt"), False)))
        clean(folder)
        times["torch_fsync"].append(timed(lambda: torch_save(model, opt, os.path.join(folder, "t.pt"), True)))
        print(f"  run {run + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    async_ck.close()
    clean(folder)
    return times


def report(times: dict[str, list[float]], nbytes: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    sync = med["sync"]
    rows = [
        ("modelpack sync save (durable)", med["sync"]),
        ("modelpack async save: loop blocked", med["async"]),
        ("  first async save only (allocates buffers)", times["async"][0]),
        ("  async: until the write is durable", med["async_write"]),
        ("torch.save (no fsync, not atomic)", med["torch"]),
        ("torch.save + fsync", med["torch_fsync"]),
    ]
    print(f"\nstate: {nbytes / 2**30:.2f} GiB, {len(times['sync'])} runs, medians\n")
    print(f"| {'what':44} | {'seconds':>7} | {'vs sync':>7} | {'GiB/s':>6} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for label, t in rows:
        print(f"| {label:44} | {t:7.3f} | {t / sync:7.2f} | {nbytes / 2**30 / t:6.2f} |")
    print()
    print(f"async blocked / sync save = {med['async'] / sync:.0%} (target <= 25%): "
          f"{'ok' if med['async'] <= 0.25 * sync else 'MISSED'}")
    print(f"sync save / torch.save    = {sync / med['torch']:.2f} (target <= 1): "
          f"{'ok' if sync <= med['torch'] else 'MISSED'}")
    print(f"sync save / torch.save+fsync = {sync / med['torch_fsync']:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=512, help="model size in MiB (Adam doubles it twice over)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = p.parse_args(argv)
    model, opt = build(args.mib)
    nbytes = state_bytes(model, opt)
    folder = tempfile.mkdtemp(prefix="mpk-bench-", dir=args.dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, writing to {folder}")
    try:
        report(measure(model, opt, folder, args.runs), nbytes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
