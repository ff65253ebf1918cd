"""Shared benchmark helpers: fresh-process peak RSS, page-cache control, medians and markdown tables.

Benchmarks are run by hand (never in CI). Memory is measured in a fresh child
process so imports, allocator caches and earlier cases of the same run do not
blur the numbers: the parent starts the child with :func:`run_child`, and the
child wraps the one operation it measures in :class:`PhasePeak`, which resets
the kernel's high-water mark (``/proc/self/clear_refs``) just before the
operation so the peak covers that operation alone.

Why not ``ru_maxrss`` of the child (``wait4`` or ``RUSAGE_CHILDREN``): on Linux,
exec records the *parent's* peak RSS into the child's (``exec_mmap`` copies the
old mm's high-water mark; subprocess uses vfork), so a child started by a
parent holding 1 GiB of tensors reports at least that. The child's own
``VmHWM`` (per address space) does not have this problem.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "MiB",
    "GiB",
    "ChildResult",
    "run_child",
    "PhasePeak",
    "current_rss",
    "can_drop_caches",
    "drop_caches",
    "timed",
    "first_touch_rate",
    "median",
    "ratio",
    "fmt_s",
    "fmt_mib",
    "fmt_ratio",
    "markdown_table",
    "verdict",
]

MiB = 1 << 20
GiB = 1 << 30
_DROP_CACHES = "/proc/sys/vm/drop_caches"
_CLEAR_REFS = "/proc/self/clear_refs"


# --------------------------------------------------------------------------- child processes


@dataclasses.dataclass(frozen=True)
class ChildResult:
    """What a child printed as JSON on its last stdout line."""

    returncode: int
    report: dict[str, Any]
    wall_s: float
    stderr: str


def run_child(argv: Sequence[str], *, timeout: float = 600.0, env: dict[str, str] | None = None) -> ChildResult:
    """Run ``python argv...`` in a fresh process; parse its last stdout line as JSON."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, env=env)
        _wait_with_timeout(proc, timeout)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed with exit code {proc.returncode}:\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError as e:
        raise RuntimeError(f"child {argv} did not end its output with a JSON line:\n{stdout[-2000:]}") from e
    return ChildResult(proc.returncode, report, wall, stderr)


def _wait_with_timeout(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"child {proc.args} ran past {timeout:.0f} s and was killed") from None


# --------------------------------------------------------------------------- RSS inside the child


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PhasePeak:
    """Peak RSS over a ``with`` block, in bytes: ``with PhasePeak() as p: ...; p.peak``.

    Uses the kernel high-water mark reset by ``clear_refs`` (exact); where that
    is unavailable, falls back to sampling psutil every millisecond (can miss
    a short spike). ``before`` is the RSS on entry; ``setup_peak`` the process's
    peak before the block (imports, building inputs).
    """

    def __init__(self) -> None:
        self.before = 0
        self.setup_peak = 0
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> "PhasePeak":
        gc.collect()
        self.before = current_rss()
        self.setup_peak = _status_kib("VmHWM") * 1024
        if _reset_hwm():
            self.method = "VmHWM after clear_refs"
        else:
            self.method = "psutil sampling (1 ms)"
            self._sampled = self.before
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._sampled = max(self._sampled, proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            self.peak = _status_kib("VmHWM") * 1024
            return
        self._stop.set()
        self._sampler.join()
        self.peak = max(self._sampled, current_rss())


# --------------------------------------------------------------------------- page cache


def can_drop_caches() -> bool:
    """True when this process may write /proc/sys/vm/drop_caches (root, not read-only /proc)."""
    return os.access(_DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    """Write back dirty pages, then evict clean page cache, dentries and inodes."""
    os.sync()
    with open(_DROP_CACHES, "w") as f:
        f.write("3\n")


# --------------------------------------------------------------------------- timing and stats


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (perf_counter) and what it returned; collects garbage first."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def first_touch_rate(nbytes: int = 256 * MiB) -> float:
    """Bytes/s of allocating and first touching fresh anonymous memory (page faults included).

    On a VM whose host reclaims freed guest memory (balloon free-page reporting,
    DAMON), this is much lower and noisier than on bare metal; it bounds every
    loader that reads into fresh memory.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    start = time.perf_counter()
    buf = bytearray(nbytes)  # calloc: untouched zero pages
    for off in range(0, nbytes, page * 16):
        buf[off : off + page * 16 : page] = b"\1" * 16
    return nbytes / (time.perf_counter() - start)


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_s(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_mib(nbytes: float, *, signed: bool = False) -> str:
    if nbytes != nbytes:
        return "-"
    return f"{nbytes / MiB:+.1f}" if signed else f"{nbytes / MiB:.1f}"


def fmt_ratio(r: float) -> str:
    return "-" if r != r else f"{r:.2f}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str = "") -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l/r), default: first l, rest r."""
    rows = [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    marks = [(":" + "-" * (w + 1)) if a == "l" else ("-" * (w + 1) + ":") for w, a in zip(widths, align)]
    rule = "|" + "|".join(marks) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


# The loading child of the coverage suites: a fresh interpreter that must not import the model's
# library, loads the .mpk, runs it on the saved input and prints one JSON line: load seconds, whether
# every output is bit-identical (NaNs in the same places count as equal), and the max abs difference.
ROUND_TRIP_LOADER = r"""
import json, sys, time
import torch
import modelpack
path, inp, ref = sys.argv[1:4]
x = torch.load(inp, weights_only=True)
expected = torch.load(ref, weights_only=True)
t = time.perf_counter()
model = modelpack.load_model(path)
load_s = time.perf_counter() - t
for banned in ("timm", "torchvision"):
    assert banned not in sys.modules, f"the loader imported {banned}"
with torch.no_grad():
    got = model.eval()(x)
if isinstance(expected, dict):
    assert isinstance(got, dict) and list(got) == list(expected), (type(got), list(expected))
    exp, got = [expected[k] for k in expected], [got[k] for k in expected]
else:
    exp = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
assert len(exp) == len(got), (len(exp), len(got))
same = all(a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())
           for a, b in zip(exp, got))
diff = max(float((a.double() - b.double()).abs().nan_to_num(0.0).max()) for a, b in zip(exp, got))
print(json.dumps({"load_s": load_s, "same": same, "diff": diff}))
"""


def round_trip(path: str, x: Any, expected: Any, workdir: str) -> tuple[dict[str, Any] | None, str]:
    """Load ``path`` in a fresh interpreter (:data:`ROUND_TRIP_LOADER`) on ``x`` against ``expected``:
    its result (load_s, same, diff), or None and the child's last error line."""
    import torch

    inp, ref = os.path.join(workdir, "x.pt"), os.path.join(workdir, "ref.pt")
    torch.save(x, inp)
    torch.save(expected, ref)
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP_LOADER, path, inp, ref], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def run_models(items: Sequence[Any], row_of: Callable[[Any], dict[str, Any]], label: Callable[[dict[str, Any]], str],
               jobs: int, results: str | None) -> list[dict[str, Any]]:
    """``row_of`` each item, ``jobs`` at a time: a progress line per row on stderr, and each row appended
    as one JSON line to ``results`` as it lands (so a long run killed halfway keeps what it measured)."""
    from concurrent.futures import ThreadPoolExecutor

    def work(item: Any) -> dict[str, Any]:
        row = row_of(item)
        print(label(row), file=sys.stderr, flush=True)
        if results:
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(work, items))
