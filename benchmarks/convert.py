"""safetensors -> .mpk conversion time and peak memory, against a raw copy and load_file + save; SHA-256 cost.

Run by hand, not in CI::

    python benchmarks/convert.py            # 1 GiB file in 64 tensors (bf16 and f32), 3 reps
    python benchmarks/convert.py --quick    # 256 MiB, 2 reps
    python benchmarks/convert.py --mib 512 --reps 5

Contenders, each timed including its fsync (modelpack's atomic write fsyncs the file and the folder, so the
raw copy fsyncs too) and run in a rotated order each repetition with ``os.sync()`` (untimed) before each:

* ``raw copy``: ``shutil.copyfile`` (the kernel's in-kernel copy) + fsync: the floor for any conversion;
* ``raw copy (read/write)``: 16 MiB reads and writes through userspace + fsync: a streamed copy;
* ``convert``: ``modelpack.convert(file.safetensors, file.mpk)``: streamed from one memory map;
* ``convert --sha256``: the same, recording each tensor's SHA-256 in the CRC-32's pass;
* ``load_file + save``: ``safetensors.torch.load_file`` then ``modelpack.save`` (what users write by hand);
* ``save`` and ``save sha256``: ``modelpack.save`` of the tensors already in memory, SHA-256 off and on.

Peak RSS of ``convert`` and ``load_file + save`` is measured once each in a fresh child (benchmarks/_common.py),
reported above the process's RSS on entry. RSS counts the mapped file pages a conversion reads (page cache,
clean, reclaimable at any time), so a streamed conversion shows about the file size too; the peak of
*anonymous* RSS (``RssAnon``, memory the kernel cannot drop) tells them apart: load_file + save holds the
whole file there, a streamed conversion nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def make_file(path: Path, nbytes: int, count: int = 64) -> None:
    import torch
    from safetensors.torch import save_file

    per = nbytes // count
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(count):
        dtype = torch.bfloat16 if i % 2 else torch.float32
        n = per // dtype.itemsize
        tensors[f"model.layers.{i}.weight"] = torch.randn(n, generator=g).to(dtype).reshape(-1, 256)
    save_file(tensors, path, metadata={"format": "pt"})


def _fsynced_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rw_copy(src: Path, dst: Path) -> None:
    """A userspace streamed copy: 16 MiB reads and writes, then fsync (what a converter must at least do)."""
    buf = bytearray(16 * C.MiB)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        while n := fin.readinto(buf):
            fout.write(view[:n])
        os.fsync(fout.fileno())


def contenders(src: Path, folder: Path, in_memory: dict) -> dict:
    import modelpack
    from safetensors.torch import load_file

    def load_and_save() -> None:
        modelpack.save(load_file(src), folder / "b.mpk", progress=False)

    return {
        "raw copy": lambda: _fsynced_copy(src, folder / "copy.safetensors"),
        "raw copy (read/write)": lambda: _rw_copy(src, folder / "rw.safetensors"),
        "convert": lambda: modelpack.convert(src, folder / "c.mpk", progress=False),
        "convert --sha256": lambda: modelpack.convert(src, folder / "s.mpk", sha256=True, progress=False),
        "load_file + save": load_and_save,
        "save": lambda: modelpack.save(in_memory, folder / "m.mpk", progress=False),
        "save sha256": lambda: modelpack.save(in_memory, folder / "h.mpk", sha256=True, progress=False),
    }


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    """Peak anonymous RSS (memory the kernel cannot drop, unlike mapped file pages), sampled every 2 ms."""

    def __enter__(self) -> "AnonPeak":
        import threading

        self.before = self.peak = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_anon())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon())


def child(which: str, src: str, folder: str) -> None:
    """In a fresh process: one conversion; its peak RSS and peak anonymous RSS above entry, as JSON."""
    import modelpack
    from safetensors.torch import load_file

    with C.PhasePeak() as peak, AnonPeak() as anon:
        if which == "convert":
            modelpack.convert(src, Path(folder) / "rss.mpk", progress=False)
        else:
            modelpack.save(load_file(src), Path(folder) / "rss.mpk", progress=False)
    print(json.dumps({"above": peak.peak - peak.before, "anon": anon.peak - anon.before, "method": peak.method}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    p.add_argument("--child", nargs=3, metavar=("WHICH", "SRC", "FOLDER"), help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.child:
        return child(*ns.child)
    mib, reps = (256, 2) if ns.quick else (ns.mib, ns.reps)
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=ns.dir) as tmp:
        folder = Path(tmp)
        src = folder / "src.safetensors"
        make_file(src, mib * C.MiB)
        from safetensors.torch import load_file

        in_memory = load_file(src)
        runs = contenders(src, folder, in_memory)
        times: dict[str, list[float]] = {k: [] for k in runs}
        names = list(runs)
        for rep in range(reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                os.sync()
                seconds, _ = C.timed(runs[name])
                times[name].append(seconds)
        del in_memory
        rss = {w: C.run_child([__file__, "--child", w, str(src), str(folder)]).report for w in ("convert", "load")}
    base = C.median(times["raw copy"])
    rows = [(name, C.fmt_s(C.median(t)), C.fmt_ratio(C.ratio(C.median(t), base))) for name, t in times.items()]
    print(f"\n{mib} MiB safetensors file, 64 tensors (bf16/f32), median of {reps}\n")
    print(C.markdown_table(["contender", "time", "x raw copy"], rows, align="lrr"))
    sha = C.ratio(C.median(times["save sha256"]), C.median(times["save"]))
    conv_sha = C.ratio(C.median(times["convert --sha256"]), C.median(times["convert"]))
    print(f"\nSHA-256 on/off: save {C.fmt_ratio(sha)}, convert {C.fmt_ratio(conv_sha)}")
    print(f"peak RSS above entry: convert {C.fmt_mib(rss['convert']['above'])} MiB, "
          f"load_file + save {C.fmt_mib(rss['load']['above'])} MiB ({rss['convert']['method']}; counts mapped file pages)")
    print(f"peak anonymous RSS above entry: convert {C.fmt_mib(rss['convert']['anon'])} MiB, "
          f"load_file + save {C.fmt_mib(rss['load']['anon'])} MiB (sampled every 2 ms)")
    ok = C.ratio(C.median(times["convert"]), base) <= 1.1
    print(f"target convert <= 1.1x raw copy: {C.verdict(ok)}; vs the read/write copy: "
          f"{C.fmt_ratio(C.ratio(C.median(times['convert']), C.median(times['raw copy (read/write)'])))}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
