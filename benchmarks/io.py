"""Save/load time and peak memory of modelpack against torch.save, safetensors and raw file I/O.

Run by hand, not in CI::

    python benchmarks/io.py            # full: 1 GiB in 64 tensors + 5,000 small tensors, 5 reps
    python benchmarks/io.py --quick    # 256 MiB + 5,000 x 4 KiB, 2 reps (~3-4 min)
    python benchmarks/io.py --reps 3   # full sizes on a busy machine
    python benchmarks/io.py --cold     # drop the page cache before every load (needs root; evicts
                                       # every process's cache, so not while others benchmark)
    python benchmarks/io.py --set issue12 [--dir /dev/shm]
                                       # issue 12: 2,000 tensors (62.5 MiB) and 64 tensors (256 MiB),
                                       # a 4-shard pack against one file, and per-tensor targets
    python benchmarks/io.py --set issue12 --sharded-rss 4
                                       # + peak RSS of save/load of a 4 GiB pack, max_shard_size=1GB
    python benchmarks/io.py --set issue12 --ab /work/main --contenders modelpack,modelpack_split,safetensors
                                       # A/B: another checkout's modelpack as extra contenders
                                       # ("... [B]" rows), same process, same interleaved rounds

The full run takes about 8 minutes on an idle 2-CPU VM with a ~500 MB/s disk;
with other jobs on the machine it can take twice that (use ``--reps 3``).

Each repetition runs every contender once, in an order rotated by one each
repetition, so page-cache, writeback and thermal effects are shared. Before
each timed save the parent calls ``os.sync()`` (untimed), so no contender pays
for another's dirty pages. Peak RSS is measured once per contender in a fresh
child process (see benchmarks/_common.py), reported as MiB above the data.
Output: markdown tables, a ratio table against the peers, and PASS/MISS for
the targets. Timings are wall clock, so a busy machine makes them noisy: the
load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import math
import mmap
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # _common, and the working tree's modelpack

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file as st_load_file  # noqa: E402
from safetensors.torch import save_file as st_save_file  # noqa: E402

import modelpack  # noqa: E402

RSS_BUDGET = 64 * C.MiB
SAVE_VS_RAW = 1.2
TOUCH_VS_RAW = 1.15


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """``count`` float32 tensors of one ``shape``, named ``layers.<i>.weight``."""

    key: str
    count: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes_each(self) -> int:
        return 4 * self.numel

    @property
    def nbytes(self) -> int:
        return self.count * self.nbytes_each

    @property
    def names(self) -> list[str]:
        return [f"layers.{i}.weight" for i in range(self.count)]

    def title(self) -> str:
        dims = "x".join(map(str, self.shape))
        return f"{self.key}: {self.count:,} float32 tensors of {dims} ({C.fmt_mib(self.nbytes)} MiB)"

    def make(self) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {name: torch.rand(self.shape, generator=gen) for name in self.names}

    def offsets(self) -> list[tuple[str, int]]:
        """Where each tensor lies in the raw file (the bytes back to back, in name order)."""
        return [(name, i * self.nbytes_each) for i, name in enumerate(self.names)]


FULL = (Case("big", 64, (2048, 2048)), Case("small", 5000, (64, 80)))
QUICK = (Case("big", 64, (1024, 1024)), Case("small", 5000, (16, 64)))
ISSUE12 = (Case("many", 2000, (64, 128)), Case("mid", 64, (1024, 1024)))  # 62.5 MiB and 256 MiB
SETS = {"full": FULL, "quick": QUICK, "issue12": ISSUE12}
SPLIT_VS_ONE = 1.1  # a 4-shard pack loads within 1.1x of the same data in one file
WARMUP = Case("warmup", 3, (8, 8))


# --------------------------------------------------------------------------- savers


def _fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.numpy()).cast("B")


def save_raw(tensors: dict[str, torch.Tensor], path: str) -> None:
    with open(path, "wb") as f:
        for t in tensors.values():
            f.write(_tensor_bytes(t))


def save_raw_durable(tensors: dict[str, torch.Tensor], path: str) -> None:
    """The same bytes with modelpack's durability: temp file, fsync, rename, fsync the folder."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        for t in tensors.values():
            f.write(_tensor_bytes(t))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(path) or ".")


def save_mp_split(tensors: dict[str, torch.Tensor], path: str, shards: int = 4) -> None:
    """modelpack.save split into ``shards`` files (the cap is a quarter of the data)."""
    total = sum(t.nbytes for t in tensors.values())
    modelpack.save(tensors, path, max_shard_size=-(-total // shards))


def save_torch_fsync(tensors: dict[str, torch.Tensor], path: str) -> None:
    torch.save(tensors, path)
    _fsync_path(path)


def save_st_fsync(tensors: dict[str, torch.Tensor], path: str) -> None:
    st_save_file(tensors, path)
    _fsync_path(path)


@dataclasses.dataclass(frozen=True)
class Saver:
    key: str
    label: str
    fn: Callable[[dict[str, torch.Tensor], str], None]
    durable: str  # what it does for durability
    rss: bool = True  # measure its peak RSS in a child (duplicates of another saver's write path: no)


SAVERS = (
    Saver("modelpack", "modelpack.save", lambda t, p: modelpack.save(t, p), "fsync+rename"),
    Saver("modelpack_split", "modelpack.save, 4 shards", save_mp_split, "fsync+rename", rss=False),
    Saver("torch", "torch.save", torch.save, "none"),
    Saver("safetensors", "safetensors save_file", st_save_file, "none"),
    Saver("raw", "raw write", save_raw, "none", rss=False),
    Saver("raw_durable", "raw write+fsync+rename", save_raw_durable, "fsync+rename"),
    Saver("torch_fsync", "torch.save + fsync", save_torch_fsync, "fsync", rss=False),
    Saver("st_fsync", "save_file + fsync", save_st_fsync, "fsync", rss=False),
)
SHARDED = Saver("modelpack_sharded", "modelpack.save, max_shard_size=1GB (a quarter below 4 GiB)",
                lambda t, p: modelpack.save(t, p, max_shard_size=_shard_cap(t)), "fsync+rename")
SAVER = {s.key: s for s in (*SAVERS, SHARDED)}


def _shard_cap(tensors: dict[str, torch.Tensor]) -> int | str:
    total = sum(t.nbytes for t in tensors.values())
    return "1GB" if total >= 4 * C.GiB else -(-total // 4)


# --------------------------------------------------------------------------- loaders

Tensors = dict[str, torch.Tensor]


def load_st_open(path: str, case: Case) -> Tensors:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__


def load_raw_mmap(path: str, case: Case) -> Tensors:
    """The floor for an mmap loader: one map, one view per tensor, nothing parsed or checked."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return {
        name: torch.from_numpy(np.frombuffer(m, np.float32, count=case.numel, offset=off).reshape(case.shape))
        for name, off in case.offsets()
    }


def load_raw_read(path: str, case: Case) -> Tensors:
    """readinto one fresh buffer of the file's size, then views (the same reduction runs on them)."""
    buf = np.empty(case.nbytes, np.uint8)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < case.nbytes:
            n = f.readinto(view[pos:])
            if not n:
                raise OSError(f"{path} is shorter than {case.nbytes} bytes")
            pos += n
    flat = torch.from_numpy(buf.view(np.float32))
    return {name: flat[off // 4 : off // 4 + case.numel].view(case.shape) for name, off in case.offsets()}


_PREFAULTED: dict[str, np.ndarray] = {}


def prefault(case: Case) -> None:
    """Allocate and touch the buffer load_raw_read_prefaulted reuses (outside any timing)."""
    _PREFAULTED[case.key] = np.ones(case.nbytes, np.uint8)


def load_raw_read_prefaulted(path: str, case: Case) -> Tensors:
    """readinto a buffer whose pages already exist: the copy alone, without page-fault costs."""
    buf = _PREFAULTED[case.key]
    with open(path, "rb", buffering=0) as f:
        n = f.readinto(buf)
    if n != case.nbytes:
        raise OSError(f"{path}: short read ({n} of {case.nbytes} bytes)")
    flat = torch.from_numpy(buf.view(np.float32))
    return {name: flat[off // 4 : off // 4 + case.numel].view(case.shape) for name, off in case.offsets()}


@dataclasses.dataclass(frozen=True)
class Loader:
    key: str
    label: str
    source: str  # which saver's file it reads
    fn: Callable[[str, Case], Tensors]
    open_phase: bool  # part of "mmap load: open + all tensor objects, no data touched"
    rss: bool = True  # measure its peak RSS in a child


LOADERS = (
    Loader("modelpack", "modelpack.load (mmap)", "modelpack", lambda p, c: modelpack.load(p), True),
    Loader("modelpack_split", "modelpack.load (mmap), 4 shards", "modelpack_split", lambda p, c: modelpack.load(p),
           True, rss=False),
    Loader("modelpack_read", "modelpack.load(mmap=False)", "modelpack",
           lambda p, c: modelpack.load(p, mmap=False), False),
    Loader("torch", "torch.load(weights_only, mmap)", "torch",
           lambda p, c: torch.load(p, weights_only=True, mmap=True), True),
    Loader("st_file", "safetensors load_file", "safetensors", lambda p, c: st_load_file(p), True),
    Loader("st_open", "safetensors safe_open+get_tensor", "safetensors", load_st_open, True),
    Loader("raw_mmap", "raw mmap + views (floor)", "raw_durable", load_raw_mmap, True),
    Loader("raw_read", "raw readinto", "raw_durable", load_raw_read, False),
    Loader("raw_read_prefaulted", "raw readinto, pre-faulted buffer", "raw_durable", load_raw_read_prefaulted, False,
           rss=False),
)
LOADER = {ld.key: ld for ld in LOADERS}


def checksum(tensors: Tensors, case: Case) -> float:
    """The 'touch every byte' work, identical for every contender: sum each tensor, in name order."""
    return sum(tensors[name].sum().item() for name in case.names)


# --------------------------------------------------------------------------- A/B against another checkout


def import_other(checkout: Path) -> Any:
    """``checkout``'s modelpack imported as the package ``modelpack_b`` (its modules import each other
    relatively), next to this tree's; returns its ``api`` module."""
    init = checkout / "modelpack" / "__init__.py"
    spec = importlib.util.spec_from_file_location("modelpack_b", init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"--ab: no modelpack package in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modelpack_b"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("modelpack_b.api")


def add_ab(checkout: Path) -> None:
    """Add the other checkout's save, split save and mmap loads as contenders keyed ``*_b``."""
    global SAVERS, LOADERS
    api_b = import_other(checkout)

    def split_b(tensors: Tensors, path: str) -> None:
        api_b.save(tensors, path, max_shard_size=-(-sum(t.nbytes for t in tensors.values()) // 4))

    tag = f"[B: {checkout}]"
    SAVERS += (Saver("modelpack_b", f"modelpack.save {tag}", lambda t, p: api_b.save(t, p), "fsync+rename", rss=False),
               Saver("modelpack_split_b", f"modelpack.save, 4 shards {tag}", split_b, "fsync+rename", rss=False))
    LOADERS += (Loader("modelpack_b", f"modelpack.load (mmap) {tag}", "modelpack_b", lambda p, c: api_b.load(p), True,
                       rss=False),
                Loader("modelpack_split_b", f"modelpack.load (mmap), 4 shards {tag}", "modelpack_split_b",
                       lambda p, c: api_b.load(p), True, rss=False))
    SAVER.update((s.key, s) for s in SAVERS)
    LOADER.update((ld.key, ld) for ld in LOADERS)


def keep_contenders(keys: set[str]) -> None:
    """Only these savers (and their ``_b`` twins), and the loaders reading their files."""
    global SAVERS, LOADERS
    keys |= {f"{k}_b" for k in keys}
    SAVERS = tuple(s for s in SAVERS if s.key in keys)
    LOADERS = tuple(ld for ld in LOADERS if ld.source in keys)


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Results:
    save: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    open: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    touch: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    save_rss: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    load_rss: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    bad_checksums: list[str] = dataclasses.field(default_factory=list)


def _rotated(items: tuple[Any, ...] | list[Any], k: int) -> list[Any]:
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def _path(folder: Path, case: Case, saver_key: str) -> str:
    return str(folder / f"{case.key}.{saver_key}.bin")


def _before_load(cold: bool) -> None:
    if cold:
        C.drop_caches()


def run_rep(case: Case, tensors: Tensors, folder: Path, rep: int, cold: bool, expected: float, out: Results) -> None:
    """One repetition: every saver, then every open-only load, then every load+touch."""
    for saver in _rotated(SAVERS, rep):
        path = _path(folder, case, saver.key)
        if os.path.exists(path):
            _remove(path)
        os.sync()  # untimed: start every save with no dirty pages pending
        dt, _ = C.timed(lambda: saver.fn(tensors, path))
        out.save.setdefault(saver.key, []).append(dt)
    for loader in _rotated([ld for ld in LOADERS if ld.open_phase], rep):
        _before_load(cold)
        dt, result = C.timed(lambda: loader.fn(_path(folder, case, loader.source), case))
        if len(result) != case.count:
            raise RuntimeError(f"{loader.label} returned {len(result)} tensors, expected {case.count}")
        del result
        out.open.setdefault(loader.key, []).append(dt)
    for loader in _rotated(LOADERS, rep):
        _before_load(cold)
        dt, (result, total) = C.timed(lambda: _load_and_touch(loader, _path(folder, case, loader.source), case))
        del result
        out.touch.setdefault(loader.key, []).append(dt)
        if total != expected:
            out.bad_checksums.append(f"{case.key}/{loader.key}: {total!r} != {expected!r}")
    for saver in SAVERS:
        _remove(_path(folder, case, saver.key))


def _remove(path: str) -> None:
    """A file, and the shards a split save put beside it."""
    os.unlink(path)
    folder, base = os.path.split(path)
    for name in os.listdir(folder):
        if name.startswith(base + "-") and name.endswith(".mpk"):
            os.unlink(os.path.join(folder, name))


def _load_and_touch(loader: Loader, path: str, case: Case) -> tuple[Tensors, float]:
    tensors = loader.fn(path, case)
    return tensors, checksum(tensors, case)  # tensors returned so teardown (munmap/free) is untimed for all


def warm_up(folder: Path) -> None:
    """One untimed pass on a tiny case: lazy imports and first-call costs are paid here."""
    tensors = WARMUP.make()
    prefault(WARMUP)
    run_rep(WARMUP, tensors, folder, 0, False, checksum(tensors, WARMUP), Results())


# --------------------------------------------------------------------------- peak RSS in fresh processes


def child_main(spec: dict[str, Any]) -> None:
    """In a fresh process: do one save or one load+touch and print its peak RSS as JSON."""
    case = Case(spec["case"], spec["count"], tuple(spec["shape"]))
    if spec["op"] == "save":
        tensors = case.make()
        with C.PhasePeak() as peak:
            SAVER[spec["who"]].fn(tensors, spec["path"])
        above = peak.peak - peak.before
    else:
        loader = LOADER[spec["who"]]
        with C.PhasePeak() as peak:
            tensors = loader.fn(spec["path"], case)
            checksum(tensors, case)
        above = peak.peak - peak.before - case.nbytes
    print(json.dumps({"before": peak.before, "peak": peak.peak, "setup_peak": peak.setup_peak,
                      "above_data": above, "method": peak.method}))


def measure_rss(case: Case, folder: Path, cold: bool, out: Results) -> None:
    """Each saver with rss=True in a child, then each loader of that saver's file in a child."""
    base = {"case": case.key, "count": case.count, "shape": list(case.shape)}
    for saver in (s for s in SAVERS if s.rss):
        path = _path(folder, case, saver.key)
        os.sync()
        out.save_rss[saver.key] = _child(dict(base, op="save", who=saver.key, path=path))
        for loader in (ld for ld in LOADERS if ld.source == saver.key and ld.rss):
            _before_load(cold)
            out.load_rss[loader.key] = _child(dict(base, op="load", who=loader.key, path=path))
        os.unlink(path)


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    res = C.run_child([str(Path(__file__).resolve()), "--child", json.dumps(spec)])
    return res.report


# --------------------------------------------------------------------------- report


def _med(d: dict[str, list[float]], key: str) -> float:
    return C.median(d.get(key, []))


def _time_table(case: Case, d: dict[str, list[float]], labels: dict[str, str], *, rate: bool) -> str:
    rows = []
    for key, vals in d.items():
        med = C.median(vals)
        row = [labels[key], C.fmt_s(med), C.fmt_s(min(vals)), C.fmt_s(max(vals))]
        if rate:
            row.append(f"{case.nbytes / C.MiB / med:,.0f}")
        row.append(C.fmt_ratio(C.ratio(_med(d, "modelpack"), med)))
        rows.append(row)
    headers = ["contender", "median", "min", "max", *(["MiB/s"] if rate else []), "modelpack / this"]
    return C.markdown_table(headers, rows)


def _rss_table(t: Results) -> str:
    rows = []
    for key, r in t.save_rss.items():
        rows.append([f"save: {SAVER[key].label}", C.fmt_mib(r["above_data"], signed=True),
                     C.fmt_mib(r["before"]), C.fmt_mib(r["peak"])])
    for key, r in t.load_rss.items():
        rows.append([f"load+touch: {LOADER[key].label}", C.fmt_mib(r["above_data"], signed=True),
                     C.fmt_mib(r["before"]), C.fmt_mib(r["peak"])])
    headers = ["fresh process, one operation", "peak above data (MiB)", "RSS before (MiB)", "peak (MiB)"]
    return C.markdown_table(headers, rows)


def report_case(case: Case, t: Results, reps: int, cold: bool) -> None:
    cache = "dropped before each load (--cold)" if cold else "warm (files were just written)"
    print(f"\n## {case.title()}\n\n{reps} repetitions, medians; page cache {cache}.\n")
    save_labels = {s.key: f"{s.label} [{s.durable}]" for s in SAVERS}
    print("Save (durability in brackets):\n")
    print(_time_table(case, t.save, save_labels, rate=True))
    print("\nmmap load: open + every tensor object created, no data touched:\n")
    print(_time_table(case, t.open, {ld.key: ld.label for ld in LOADERS}, rate=False))
    print("\nLoad + touch every byte (sum of each tensor, same work for all; teardown untimed):\n")
    print(_time_table(case, t.touch, {ld.key: ld.label for ld in LOADERS}, rate=True))
    print("\n'raw readinto' pays the page faults of fresh memory (its rate is on the environment line);")
    print("the pre-faulted row is the copy alone. mmap loaders map page-cache pages instead.")
    if t.save_rss:
        method = next(iter(t.save_rss.values()))["method"]
        print(f"\nPeak RSS of one operation in a fresh process ({method}); save: peak minus RSS with the")
        print("data built; load+touch: peak minus RSS before the load minus the data size:\n")
        print(_rss_table(t))


def _st_open_best(t: Results) -> float:
    return min(_med(t.open, "st_file"), _med(t.open, "st_open"))


def ratio_rows(case: Case, t: Results) -> list[list[str]]:
    mp_save = _med(t.save, "modelpack")

    def row(metric: str, mp: float, torch_v: float, st_v: float, raw_v: float, raw_what: str) -> list[str]:
        return [metric, case.key, C.fmt_s(mp),
                C.fmt_s(torch_v), C.fmt_ratio(C.ratio(mp, torch_v)),
                C.fmt_s(st_v), C.fmt_ratio(C.ratio(mp, st_v)),
                f"{C.fmt_s(raw_v)} {raw_what}".strip(), C.fmt_ratio(C.ratio(mp, raw_v))]

    nan = float("nan")
    rows = [
        row("save, peers as shipped", mp_save, _med(t.save, "torch"), _med(t.save, "safetensors"),
            _med(t.save, "raw_durable"), "(raw+fsync+rename: same durability)"),
        row("save, peers + fsync", mp_save, _med(t.save, "torch_fsync"), _med(t.save, "st_fsync"),
            _med(t.save, "raw"), "(raw, NO fsync)"),
        row("mmap load (open + objects)", _med(t.open, "modelpack"), _med(t.open, "torch"), _st_open_best(t),
            _med(t.open, "raw_mmap"), "(raw mmap views)"),
        row("load + touch (mmap)", _med(t.touch, "modelpack"), _med(t.touch, "torch"),
            min(_med(t.touch, "st_file"), _med(t.touch, "st_open")), _med(t.touch, "raw_read"), "(raw readinto)"),
        row("load + touch (mmap=False)", _med(t.touch, "modelpack_read"), nan, nan,
            _med(t.touch, "raw_read"), "(raw readinto)"),
        row("load + touch (mmap) vs copy only", _med(t.touch, "modelpack"), nan, nan,
            _med(t.touch, "raw_read_prefaulted"), "(readinto, pre-faulted)"),
    ]
    return rows


def targets(case: Case, t: Results) -> list[tuple[str, bool | None, str]]:
    mp_save, mp_open, mp_touch = _med(t.save, "modelpack"), _med(t.open, "modelpack"), _med(t.touch, "modelpack")
    torch_s, st_s, raw_s = _med(t.save, "torch"), _med(t.save, "safetensors"), _med(t.save, "raw_durable")
    st_o, raw_r = _st_open_best(t), _med(t.touch, "raw_read")
    out = [
        ("save <= torch.save", mp_save <= torch_s, f"{C.fmt_s(mp_save)} vs {C.fmt_s(torch_s)}"),
        ("save <= safetensors save_file", mp_save <= st_s, f"{C.fmt_s(mp_save)} vs {C.fmt_s(st_s)}"),
        (f"save <= {SAVE_VS_RAW}x raw write+fsync+rename", mp_save <= SAVE_VS_RAW * raw_s,
         f"{C.fmt_ratio(C.ratio(mp_save, raw_s))}"),
        ("mmap load <= safetensors (faster of load_file, safe_open)", mp_open <= st_o,
         f"{C.fmt_s(mp_open)} vs {C.fmt_s(st_o)}"),
        (f"load + touch (mmap) <= {TOUCH_VS_RAW}x raw readinto", mp_touch <= TOUCH_VS_RAW * raw_r,
         f"{C.fmt_ratio(C.ratio(mp_touch, raw_r))}"),
    ]
    for op, d in (("save", t.save_rss), ("load + touch", t.load_rss)):
        above = d.get("modelpack", {}).get("above_data")
        ok = None if above is None else above <= RSS_BUDGET
        out.append((f"peak RSS {op} <= 64 MiB above data", ok, "not measured" if above is None
                    else f"{C.fmt_mib(above, signed=True)} MiB"))
    st_t = min(_med(t.touch, "st_file"), _med(t.touch, "st_open"))
    split_o, split_t = _med(t.open, "modelpack_split"), _med(t.touch, "modelpack_split")
    st_fs = _med(t.save, "st_fsync")
    out += [
        ("save <= safetensors save_file + fsync (same durability)", mp_save <= st_fs,
         f"{C.fmt_s(mp_save)} vs {C.fmt_s(st_fs)}"),
        ("load + touch (mmap) <= safetensors", mp_touch <= st_t, f"{C.fmt_s(mp_touch)} vs {C.fmt_s(st_t)}"),
        (f"4 shards: mmap load <= {SPLIT_VS_ONE}x one file", split_o <= SPLIT_VS_ONE * mp_open,
         f"{C.fmt_ratio(C.ratio(split_o, mp_open))}"),
        (f"4 shards: load + touch <= {SPLIT_VS_ONE}x one file", split_t <= SPLIT_VS_ONE * mp_touch,
         f"{C.fmt_ratio(C.ratio(split_t, mp_touch))}"),
    ]
    return [(f"[{case.key}] {name}", ok, detail) for name, ok, detail in out]


def sharded_rss(gib: float, folder: Path) -> None:
    """Peak RSS above the data of saving, then loading and touching, a big pack written in shards."""
    case = Case("sharded", max(4, round(gib * 64)), (2048, 2048))  # 16 MiB tensors
    path = str(folder / "sharded.mpk")
    base = {"case": case.key, "count": case.count, "shape": list(case.shape), "path": path}
    os.sync()
    save = _child(dict(base, op="save", who=SHARDED.key))
    shards = len([n for n in os.listdir(folder) if n.startswith("sharded-")])
    load = _child(dict(base, op="load", who="modelpack"))
    _remove(path)
    print(f"\n## Peak RSS, {case.title()}, saved in {shards} shards ({SHARDED.label})\n")
    rows = [[op, C.fmt_mib(r["above_data"], signed=True), C.verdict(r["above_data"] <= RSS_BUDGET)]
            for op, r in (("save", save), ("load + touch", load))]
    print(C.markdown_table(["fresh process, one operation", "peak above data (MiB)", "<= 64 MiB"], rows))


def report_summary(results: list[tuple[Case, Results]]) -> None:
    print("\n## Ratios against the peers (modelpack / peer; < 1 means modelpack is faster)\n")
    headers = ["metric", "case", "modelpack", "torch", "mp/torch", "safetensors", "mp/st", "raw", "mp/raw"]
    rows = [r for case, t in results for r in ratio_rows(case, t)]
    print(C.markdown_table(headers, rows, align="ll" + "r" * 7))
    print("\nmodelpack.save always fsyncs and renames (durable, atomic); torch.save, save_file and the")
    print("plain raw write do not. The fair raw baseline for the save target is raw+fsync+rename.")
    print("\n## Targets\n")
    rows = [[name, C.verdict(ok), detail] for case, t in results for name, ok, detail in targets(case, t)]
    print(C.markdown_table(["target", "result", "measured"], rows, align="lll"))
    bad = [b for _, t in results for b in t.bad_checksums]
    if bad:
        print("\nWARNING: checksums disagree (a loader returned different data):\n  " + "\n  ".join(bad))


def _environment(folder: Path, cold: bool) -> str:
    fs = "?"
    best = ""
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, kind = line.split()[:3]
            if str(folder).startswith(mnt) and len(mnt) >= len(best):
                best, fs = mnt, f"{kind} on {dev}"
    return (
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}, safetensors {_version('safetensors')}, {os.cpu_count()} CPUs; "
        f"files in {folder} ({fs}); modelpack from {Path(modelpack.__file__).parent}; "
        f"page cache {'cold' if cold else 'warm'}; load average at start {_loadavg()}; "
        "fresh anonymous memory first touch: "
        f"{C.first_touch_rate() / C.MiB:,.0f} MiB/s"
    )


def _loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# --------------------------------------------------------------------------- main


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (256 MiB / 20 MiB), 2 repetitions")
    p.add_argument("--reps", type=int, help="repetitions (default 5, --quick 2)")
    p.add_argument("--dir", type=Path, help="parent folder for the files (default /tmp)")
    p.add_argument("--cold", action="store_true", help="sync + drop the page cache before each load (root)")
    p.add_argument("--only", choices=sorted({c.key for cases in SETS.values() for c in cases}), help="run one case")
    p.add_argument("--set", choices=sorted(SETS), help="which cases (default full; --quick: quick)")
    p.add_argument("--sharded-rss", type=float, metavar="GIB",
                   help="also measure peak RSS of a sharded save and load of this many GiB")
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS measurements")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--ab", type=Path, metavar="CHECKOUT",
                   help="also time CHECKOUT's modelpack (save, split save, mmap loads) as '[B]' contenders")
    p.add_argument("--contenders", metavar="KEYS",
                   help="comma-separated saver keys to run (modelpack, modelpack_split, torch, safetensors, raw, "
                        "raw_durable, torch_fsync, st_fsync), each with the loaders of its file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cold and not C.can_drop_caches():
        p.error("--cold needs write access to /proc/sys/vm/drop_caches (run as root, outside a read-only /proc)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    reps = args.reps or (2 if args.quick else 5)
    if args.ab:
        add_ab(args.ab)
    if args.contenders:
        keep_contenders(set(args.contenders.split(",")))
    chosen = SETS[args.set or ("quick" if args.quick else "full")]
    cases = [c for c in chosen if args.only in (None, c.key)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` removes the work folder
    folder = Path(tempfile.mkdtemp(prefix="modelpack-bench-", dir=args.dir or "/tmp"))
    start = time.perf_counter()
    try:
        print(f"# modelpack I/O benchmark\n\n{_environment(folder, args.cold)}")
        if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
            print("\nWARNING: the machine is busy (load average above half the CPUs): timings are noisy.")
        warm_up(folder)
        results = [(case, bench_case(case, folder, reps, args)) for case in cases]
        for case, t in results:
            report_case(case, t, reps, args.cold)
        report_summary(results)
        if args.sharded_rss:
            sharded_rss(args.sharded_rss, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - start:.0f} s; load average at end {_loadavg()} "
          f"on {os.cpu_count()} CPUs; run: python benchmarks/io.py {' '.join(sys.argv[1:])})".replace(" )", ")"))
    return 0


def bench_case(case: Case, folder: Path, reps: int, args: argparse.Namespace) -> Results:
    out = Results()
    tensors = case.make()
    expected = checksum(tensors, case)
    prefault(case)
    for rep in range(reps):
        t0 = time.perf_counter()
        run_rep(case, tensors, folder, rep, args.cold, expected, out)
        print(f"[{case.key}] rep {rep + 1}/{reps}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    del tensors
    _PREFAULTED.clear()
    gc.collect()
    if not args.no_rss:
        t0 = time.perf_counter()
        measure_rss(case, folder, args.cold, out)
        print(f"[{case.key}] peak RSS children: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
