"""Open file descriptors after loading N small files and keeping every result alive.

Run by hand, not in CI::

    python benchmarks/descriptors.py            # N = 2,000
    python benchmarks/descriptors.py --n 10000

Each contender runs in a fresh child process that loads N copies of one small
file (a float32 tensor and an int64 tensor), keeps what it loaded, and counts
the entries of ``/proc/self/fd``. The descriptor limit is raised to N + 256 in
the child so every contender finishes and the count shows what it holds;
without that, a loader that keeps one descriptor per file stops with
``EMFILE`` near the limit (1,024 by default). Linux only.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import markdown_table, run_child  # noqa: E402

CONTENDERS = {
    "modelpack.load (torch, mmap)": ("mpk", "import modelpack; load = lambda p: modelpack.load(p)"),
    "modelpack.load (numpy, mmap)": ("npmpk", "import modelpack; load = lambda p: modelpack.load(p)"),
    "modelpack.open without close": ("mpk", "import modelpack; load = lambda p: modelpack.open(p)['w']"),
    "torch.load(mmap=True)": ("pt", "import torch; load = lambda p: torch.load(p, mmap=True, weights_only=True)"),
    "safetensors load_file": ("st", "from safetensors.torch import load_file as load"),
    "safetensors safe_open, all tensors": (
        "st",
        "from safetensors import safe_open\n"
        "def load(p):\n"
        "    with safe_open(p, 'pt') as f:\n"
        "        return {k: f.get_tensor(k) for k in f.keys()}",  # noqa: SIM118 - safe_open has no __iter__
    ),
}

CHILD = """
import json, os, resource, sys
n, folder, ext = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, sys.argv[4])  # the modelpack checkout to measure, ahead of the current folder
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
{setup}
before = len(os.listdir("/proc/self/fd"))
kept = [load(os.path.join(folder, f"{{i}}.{{ext}}")) for i in range(n)]
print(json.dumps({{"before": before, "after": len(os.listdir("/proc/self/fd")), "kept": len(kept)}}))
"""


def _write_copies(folder: str, n: int) -> None:
    """One file per format, copied n times (plain writes: no fsync, so setup takes seconds)."""
    import torch
    from safetensors.torch import save_file

    import modelpack

    tensors = {"w": torch.arange(16.0), "i": torch.arange(4)}
    modelpack.save(tensors, os.path.join(folder, "one.mpk"))
    modelpack.save({k: v.numpy() for k, v in tensors.items()}, os.path.join(folder, "one.npmpk"))
    torch.save(tensors, os.path.join(folder, "one.pt"))
    save_file(tensors, os.path.join(folder, "one.st"))
    for ext in ("mpk", "npmpk", "pt", "st"):
        data = Path(folder, f"one.{ext}").read_bytes()
        for i in range(n):
            Path(folder, f"{i}.{ext}").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="files loaded and kept alive (default 2,000)")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                        help="modelpack checkout the children import (e.g. another branch, to compare)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.n + 256:
        sys.exit(f"the hard descriptor limit ({hard}) is below --n + 256")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        _write_copies(folder, args.n)
        for label, (ext, setup) in CONTENDERS.items():
            try:
                res = run_child(["-c", CHILD.format(setup=setup), str(args.n), folder, ext, args.root])
            except RuntimeError as e:  # the child failed, typically EMFILE
                rows.append([label, "failed: " + str(e).strip().splitlines()[-1][:60], "-"])
                continue
            held = res.report["after"] - res.report["before"]
            rows.append([label, res.report["after"], f"{held / args.n:.3f}"])
    print(f"{args.n:,} files loaded, results kept alive (soft limit here {soft})\n")
    print(markdown_table(["loader", "open fds after", "fds held per file"], rows))


if __name__ == "__main__":
    main()
