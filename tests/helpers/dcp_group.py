"""Run a function on a real gloo process group of N forked processes on 127.0.0.1 (tests only).

``run_group(n, fn, *args)`` forks ``n`` processes (spawn where fork is missing),
each joins a gloo group on a free local port and calls ``fn(rank, n, *args)``.
A failing rank's traceback is raised in the parent as ``GroupFailed``; once
one rank fails (or after ``timeout``) the others are killed, as they would
only wait for it in a collective; their exit codes read None.
"""

from __future__ import annotations

import os
import signal
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch.multiprocessing as mp

__all__ = ["run_group", "free_port", "GroupFailed"]


class GroupFailed(AssertionError):
    """A rank raised, died or hung; ``codes`` holds each rank's exit code (None: killed on timeout)."""

    def __init__(self, message: str, codes: list[int | None]) -> None:
        super().__init__(message)
        self.codes = codes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context() -> Any:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _child(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, errors: Any, pg_timeout: float) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=pg_timeout))
        fn(rank, world, *args)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        errors.put((rank, traceback.format_exc()))
        os._exit(1)
    os._exit(0)


def run_group(world: int, fn: Callable[..., Any], *args: Any, timeout: float = 120.0,
              pg_timeout: float = 60.0, expect_ok: bool = True) -> list[int | None]:
    """Run ``fn(rank, world, *args)`` on every rank; return the exit codes (raise unless all are 0)."""
    ctx = _context()
    errors = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(r, world, port, fn, args, errors, pg_timeout)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = _now() + timeout
    while any(p.is_alive() for p in procs) and _now() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs):
            break  # one rank failed or was killed: the others would only wait for it in a collective
        for p in procs:
            p.join(0.05)
    codes: list[int | None] = []
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    if expect_ok and codes != [0] * world:
        found = []
        while not errors.empty():
            found.append(errors.get())
        text = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(found))
        raise GroupFailed(f"exit codes {codes}\n{text}", codes)
    return codes


def _now() -> float:
    import time

    return time.monotonic()
