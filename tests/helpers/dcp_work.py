"""What each rank does in the distributed-checkpoint tests (run by helpers.dcp_group.run_group).

A small MLP, FSDP2-sharded (``fully_shard``) on CPU, trained one Adam step; its
full model and optimizer state, gathered on rank 0, is the reference a load on
another world size must reproduce bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

import modelpack
from modelpack.dcp import MpkStorageReader, MpkStorageWriter

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def make(seed: int, shard: bool = True) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 5))
    if shard:
        from torch.distributed.fsdp import fully_shard

        fully_shard(m)
    return m, torch.optim.Adam(m.parameters(), lr=0.01)


def train_step(m: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m(torch.randn(4, 6, generator=g)).square().sum().backward()
    opt.step()
    opt.zero_grad()


def full_state(m: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    msd, osd = get_state_dict(m, opt, options=FULL)
    return {"model": msd, "optim": osd}


def save_fsdp(rank: int, world: int, path: str, ref: str) -> None:
    """Train one step on ``world`` ranks, save through DCP, and write the full state to ``ref`` (rank 0)."""
    m, opt = make(0)
    train_step(m, opt, 1)
    msd, osd = get_state_dict(m, opt)
    dcp.save({"model": msd, "optim": osd, "step": 1, "note": f"world {world}"}, storage_writer=MpkStorageWriter(path))
    full = full_state(m, opt)
    if rank == 0:
        modelpack.save(full, ref)


def load_fsdp(rank: int, world: int, path: str, ref: str) -> None:
    """Load on ``world`` ranks into a differently initialised model; rank 0 compares with ``ref`` bit for bit."""
    m, opt = make(7)
    msd, osd = get_state_dict(m, opt)
    state = {"model": msd, "optim": osd, "step": 0, "note": ""}
    dcp.load(state, storage_reader=MpkStorageReader(path))
    set_state_dict(m, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    assert state["step"] == 1 and state["note"].startswith("world "), (state["step"], state["note"])
    got = full_state(m, opt)
    if rank == 0:
        assert_same(got, modelpack.load(ref))


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).clone().view(torch.uint8)  # compares bits: NaN-safe, -0.0 != 0.0


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Equal structure, equal scalars, bit-identical tensors (dtype, shape, bytes)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(_raw(a), _raw(b)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(map(str, a)), sorted(map(str, b)))
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


# ---------------------------------------------------------------- plain and DTensor state, async, kills


def plain_state(seed: int) -> dict[str, Any]:
    """The values every world size saves for ``seed``, as plain tensors and values."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(9, 5, generator=g)
    return {
        "w": w,
        "wt": w.T.contiguous(),
        "b": torch.randn(7, generator=g, dtype=torch.float64),
        "i": torch.arange(6, dtype=torch.int32) * seed,
        "step": seed,
        "meta": {"name": f"run{seed}", "lr": 0.5, "sizes": [1, 2, 3]},
    }


def dtensor_state(world: int, seed: int) -> dict[str, Any]:
    """``plain_state`` with ``w``/``b`` row-sharded and ``wt`` column-sharded over ``world`` ranks."""
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    state = plain_state(seed)
    for key, dim in (("w", 0), ("wt", 1), ("b", 0)):
        state[key] = distribute_tensor(state[key], mesh, [Shard(dim)])
    return state


def plain_values(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        out[k] = v.full_tensor() if hasattr(v, "full_tensor") else v
    return out


def save_dtensor(rank: int, world: int, path: str, seed: int, use_async: bool = False) -> None:
    state = dtensor_state(world, seed)
    writer = MpkStorageWriter(path)
    if use_async:
        dcp.async_save(state, storage_writer=writer).result()
    else:
        dcp.save(state, storage_writer=writer)


def load_dtensor(rank: int, world: int, path: str, seed: int) -> None:
    """Load into DTensors sharded for ``world`` and compare the full values with the seed's."""
    state = dtensor_state(world, seed + 100)  # same shapes, other values
    state["meta"] = {"name": "", "lr": 0.0, "sizes": []}
    dcp.load(state, storage_reader=MpkStorageReader(path))
    assert_same(plain_values(state), plain_state(seed))


def save_killed(rank: int, world: int, path: str, seed: int, victim: int, kill_at: int) -> None:
    """Save ``seed``'s state; rank ``victim`` SIGKILLs itself at its ``kill_at``-th file system call."""
    state = dtensor_state(world, seed)
    count = _arm(kill_at) if rank == victim else None
    dcp.save(state, storage_writer=MpkStorageWriter(path))
    if count is not None:  # the victim outlived its moment: tell the test how many calls the save made
        with open(f"{path}.calls", "w") as f:
            f.write(str(count[0]))
    dist.barrier()


def _arm(kill_at: int) -> list[int]:
    """Count writes (write, writev, pwrite), fsyncs, renames and unlinks; die without cleanup on call ``kill_at``."""
    count = [0]

    def wrap(fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return inner

    for name in ("write", "writev", "pwrite", "fsync", "replace", "unlink"):
        setattr(os, name, wrap(getattr(os, name)))
    return count


def kill_plan(seed: int, world: int) -> tuple[int, int]:
    """A seeded victim rank and one of the system calls it is sure to make, so every case kills."""
    rng = random.Random(seed)
    victim = rng.randrange(world)
    # rank 0 also writes the metadata pack and cleans up after the commit: it has more moments to die at
    return victim, rng.randint(1, 12 if victim == 0 else 4)


# ---------------------------------------------------------------- the Checkpointer in a distributed run


def ckpt_train(rank: int, world: int, folder: str, refs: str) -> None:
    """Four steps with a Checkpointer (keep_last=2, async every other save); rank 0 keeps each step's full state."""
    from modelpack import Checkpointer

    m, opt = make(0)
    with Checkpointer(folder, keep_last=2) as ck:
        for step in range(4):
            train_step(m, opt, 10 + step)
            path = ck.save(step, model=m, optimizer=opt, extra={"loss": float(step)}, blocking=step % 2 == 0)
            assert path == ck.path_for(step) and path.name.endswith(".dcp"), path
            full = full_state(m, opt)
            if rank == 0:
                modelpack.save(full, f"{refs}/ref-{step}.mpk")


def ckpt_resume(rank: int, world: int, folder: str, refs: str, expect_step: int) -> None:
    """Restore into a fresh FSDP2 model and Adam; the full state equals the one saved at ``expect_step``."""
    import warnings

    from modelpack import Checkpointer, CheckpointWarning

    m, opt = make(7)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", CheckpointWarning)
        start = Checkpointer(folder, keep_last=2).restore(model=m, optimizer=opt)
    assert start == expect_step + 1, start
    if expect_step != 3:
        assert any("damaged" in str(w.message) for w in seen), [str(w.message) for w in seen]
    got = full_state(m, opt)
    if rank == 0:
        assert_same(got, modelpack.load(f"{refs}/ref-{expect_step}.mpk"))
