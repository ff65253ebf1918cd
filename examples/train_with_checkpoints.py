"""Train a small model with crash-safe checkpoints; interrupt it any time and rerun to continue.

    python examples/train_with_checkpoints.py                 # trains, checkpointing every 100 steps
    # press Ctrl-C (or kill -9 it), then run the same command again:
    python examples/train_with_checkpoints.py                 # prints "resumed from step N"

The resumed run is bit-identical to one that was never interrupted: the
checkpoint holds the model, Adam's state, the LR scheduler, every random
number generator, and where in the shuffled epoch the loop was. Nothing is
pickled, so a checkpoint from someone else is safe to restore.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import modelpack


def make_data(n: int = 2048) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(1234)  # the task is fixed; only training is random
    x = torch.randn(n, 16, generator=g)
    y = (x[:, :4].sum(dim=1, keepdim=True).sin() + 0.1 * torch.randn(n, 1, generator=g))
    return torch.utils.data.TensorDataset(x, y)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/example", help="checkpoint folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3000, help="total training steps (default: %(default)s)")
    p.add_argument("--every", type=int, default=100, help="checkpoint interval in steps (default: %(default)s)")
    p.add_argument("--keep-last", type=int, default=3, help="checkpoints to keep (default: %(default)s)")
    p.add_argument("--blocking", action="store_true", help="write checkpoints in the loop, not in the background")
    p.add_argument("--step-delay", type=float, default=0.002, help="seconds of pretend work per step")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)  # a fresh run's seed; a resumed run gets every RNG back from the checkpoint
    shuffle = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(make_data(), batch_size=64, shuffle=True, generator=shuffle)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1000, gamma=0.5)
    ckpt = modelpack.Checkpointer(args.run_dir, keep_last=args.keep_last, keep_every=1000)

    start = ckpt.restore(model=model, optimizer=opt, scheduler=sched, generators={"shuffle": shuffle})
    epoch, skip = 0, 0
    if ckpt.restored is not None:
        extra = ckpt.restored.extra
        epoch, skip = extra["epoch"], extra["batch"] + 1
        shuffle.set_state(extra["epoch_shuffle"])  # replay this epoch's order, skip what was done
        print(f"resumed from step {ckpt.restored.step} ({ckpt.restored.path.name})", flush=True)
    else:
        print(f"starting fresh in {args.run_dir}", flush=True)

    step = start
    try:
        while step < args.steps:
            epoch_shuffle = shuffle.get_state()  # the epoch's order is drawn when iteration starts
            for batch, (x, y) in enumerate(loader):
                if batch < skip:
                    continue
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                sched.step()
                time.sleep(args.step_delay)
                if step % args.every == 0 or step == args.steps - 1:
                    extra = {"epoch": epoch, "batch": batch, "epoch_shuffle": epoch_shuffle, "loss": loss.item()}
                    ckpt.save(step, model=model, optimizer=opt, scheduler=sched, generators={"shuffle": shuffle},
                              extra=extra, blocking=args.blocking)
                    print(f"step {step:5d}  loss {loss.item():.4f}  checkpoint saved", flush=True)
                step += 1
                if step >= args.steps:
                    break
            else:
                epoch, skip = epoch + 1, 0
        ckpt.wait()  # the last background save is durable before we say so
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {step}; run the same command again to continue", flush=True)
        return 130  # any background save still finishes before the interpreter exits
    print(f"done: {args.steps} steps, final loss {loss.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
