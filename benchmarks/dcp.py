"""Distributed checkpoints on 2 ranks: modelpack's DCP writer/reader against DCP's own (run by hand, not in CI).

    python benchmarks/dcp.py                  # 1 GiB of float32, row-sharded over 2 ranks, 3 runs
    python benchmarks/dcp.py --mib 256 --runs 5 --dir /fast/disk
    python benchmarks/dcp.py --mib 256 --tensors 4000   # per-tensor costs: 4000 tensors of 64 KiB

Measured on the same state (16 DTensors by default, sharded on dim 0 over a 2-rank gloo
group on this machine's CPU), each case in the same run:

* save: ``dcp.save`` wall time on rank 0 between two barriers, with
  ``MpkStorageWriter``, ``FileSystemWriter`` (fsyncs, pickled metadata) and
  ``HuggingFaceStorageWriter(save_distributed=True)`` (safetensors, no fsync);
* load: ``dcp.load`` into preallocated DTensors of the same sharding, with the
  matching reader (page cache warm: the files were just written);
* consolidation to one file, in one process without a group:
  ``modelpack.dcp.consolidate`` against DCP's ``consolidate_safetensors_files``
  on the HF writer's output, alternating, ``os.sync()`` before each; wall time
  and this process's CPU time (user + system), which a busy machine disturbs
  less. modelpack's includes its fsyncs; DCP's writes without one.

Ratios are modelpack / peer; the issue's targets: save and load at most 1.1x
FileSystemWriter, consolidation at most the HF consolidation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

from modelpack.dcp import MpkStorageReader, MpkStorageWriter, consolidate



def state(mib: int, tensors: int, world: int, fill: bool) -> dict[str, object]:
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    rows = max(world, (mib << 20) // tensors // 4 // 1024)
    out = {}
    for i in range(tensors):
        full = torch.full((rows, 1024), float(i)) if fill else torch.empty(rows, 1024)
        out[f"layer{i}.weight"] = distribute_tensor(full, mesh, [Shard(0)])
    return out


def writers(path: str) -> dict[str, tuple[object, object]]:
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader, HuggingFaceStorageWriter

    return {
        "modelpack": (lambda: MpkStorageWriter(path), lambda: MpkStorageReader(path)),
        "FileSystemWriter": (lambda: FileSystemWriter(path), lambda: FileSystemReader(path)),
        "HuggingFaceStorageWriter": (lambda: HuggingFaceStorageWriter(path, save_distributed=True),
                                     lambda: HuggingFaceStorageReader(path)),
    }


def timed(fn) -> float:
    dist.barrier()
    t = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - t


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=10))
    src = state(args.mib, args.tensors, world, fill=True)
    results: dict[str, dict[str, list[float]]] = {}
    for run in range(args.runs):
        for name in writers("x"):
            path = os.path.join(args.dir, f"{name}-{run}")
            make_writer, make_reader = writers(path)[name]
            save = timed(lambda: dcp.save(src, storage_writer=make_writer()))
            os.sync()
            dst = state(args.mib, args.tensors, world, fill=False)
            load = timed(lambda: dcp.load(dst, storage_reader=make_reader()))
            assert all(torch.equal(dst[k].to_local(), src[k].to_local()) for k in src)
            results.setdefault(name, {"save": [], "load": []})
            results[name]["save"].append(save)
            results[name]["load"].append(load)
            if rank == 0 and run < args.runs - 1:
                keep = {f"{n}-{args.runs - 1}" for n in writers("x")}
                for old in Path(args.dir).iterdir():
                    if old.name not in keep and old.name.endswith(f"-{run}"):
                        shutil.rmtree(old)
            dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def cpu_seconds() -> float:
    """User + system CPU time of this process (kernel copies count; waiting on the disk does not)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def consolidation(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per run for each consolidation, alternating, the page cache flushed before each."""
    from torch.distributed.checkpoint._consolidate_hf_safetensors import consolidate_safetensors_files

    last = args.runs - 1
    times: dict[str, dict[str, list[float]]] = {"modelpack": {"wall": [], "cpu": []},
                                                "HuggingFace safetensors": {"wall": [], "cpu": []}}

    def measure(name: str, fn) -> None:
        os.sync()
        t, c = time.perf_counter(), cpu_seconds()
        fn()
        times[name]["wall"].append(time.perf_counter() - t)
        times[name]["cpu"].append(cpu_seconds() - c)

    mapping = {f"layer{i}.weight": 1 for i in range(args.tensors)}
    for run in range(args.runs):
        out = os.path.join(args.dir, f"one-{run}.mpk")
        measure("modelpack", lambda: consolidate(os.path.join(args.dir, f"modelpack-{last}"), out))
        os.unlink(out)
        hf_out = os.path.join(args.dir, f"hf-one-{run}")
        os.makedirs(hf_out)
        hf_in = os.path.join(args.dir, f"HuggingFaceStorageWriter-{last}")
        measure("HuggingFace safetensors", lambda: consolidate_safetensors_files(hf_in, hf_out, mapping))
        shutil.rmtree(hf_out)
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(rows: list[tuple[str, str, float, float]]) -> str:
    lines = ["| case | peer | modelpack (s) | peer (s) | ratio |", "|---|---|---:|---:|---:|"]
    for case, peer, ours, theirs in rows:
        lines.append(f"| {case} | {peer} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="total state size in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tensors", type=int, default=16, help="how many tensors share the size (default 16)")
    p.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = p.parse_args()
    own_dir = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="mpk-dcp-bench-")
    out = os.path.join(args.dir, "results.json")
    ctx = mp.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, 2, port, args, out)) for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        sys.exit("a rank failed")
    results = json.loads(Path(out).read_text())
    cons = consolidation(args)
    med = {k: {op: statistics.median(v) for op, v in r.items()} for k, r in results.items()}
    rows = []
    for peer in ("FileSystemWriter", "HuggingFaceStorageWriter"):
        for op in ("save", "load"):
            rows.append((op, peer, med["modelpack"][op], med[peer][op]))
    for kind in ("wall", "cpu"):
        rows.append((f"consolidate to one file ({kind})", "DCP consolidate_safetensors_files",
                     statistics.median(cons["modelpack"][kind]),
                     statistics.median(cons["HuggingFace safetensors"][kind])))
    print(f"{args.mib} MiB float32 in {args.tensors} tensors, row-sharded over 2 ranks (gloo, CPU); "
          f"median of {args.runs} runs; torch {torch.__version__}\n")
    print(table(rows))
    if own_dir:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
