"""The timm suite of ``benchmarks/coverage.py``: one model per timm family, export -> load, bit-exact.

A family is a module of ``timm.models`` that registers models (the module of each
entrypoint in ``timm.list_models()``); its model is the one with the fewest
parameters (counted on the meta device, ties broken by name), so the choice
follows timm rather than a hand-kept list. Each is built with random init
(``pretrained=False``, seed 0), in eval mode, exported with default
``modelpack.export`` settings (bit-exact) at batch 1 and half its pretrained_cfg
``input_size`` (rounded up to a multiple of 32, at least 64) where the model runs
there, else at that input_size; then loaded in a *fresh* process that must not import timm or
torchvision (asserted), and the outputs compared with no tolerance. Every
failure is put in a category that says what is missing: ``capture`` (torch.export
gave up), ``vocab`` (the op it lacks), ``mismatch`` (max abs difference),
``timeout``, ``load``, ``other``.

The picks are cached per timm version (``--picks FILE``, default beside the results) since
counting every model's parameters takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import round_trip, run_models  # noqa: E402

_HERE = Path(__file__).resolve().parent
_PICKS = _HERE / "results" / "timm_picks.json"

# ----------------------------------------------------------------------------- which models


def families() -> dict[str, list[str]]:
    """Every timm.models module that registers models -> its model names, sorted."""
    import timm

    out: dict[str, list[str]] = {}
    for name in timm.list_models():
        module = timm.models.model_entrypoint(name).__module__.rpartition(".")[2]
        out.setdefault(module, []).append(name)
    return {m: sorted(v) for m, v in sorted(out.items())}


def _param_count(name: str) -> int | None:
    """Parameters of ``name`` built on the meta device (None when it cannot be built there)."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:  # the pick skips it; the reason does not matter for choosing
        return None
    return sum(p.numel() for p in model.parameters())


def picks(path: Path) -> dict[str, str]:
    """family -> its smallest model (fewest parameters, then name); cached in ``path`` per timm version."""
    import timm

    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("timm") == timm.__version__:
            return cached["picks"]
    chosen: dict[str, str] = {}
    counts: dict[str, int] = {}
    for family, names in families().items():
        sized = [(n, c) for n in names if (c := _param_count(n)) is not None]
        if sized:
            name, count = min(sized, key=lambda nc: (nc[1], nc[0]))
            chosen[family], counts[name] = name, count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"timm": timm.__version__, "picks": chosen, "params": counts}, indent=1) + "\n")
    return chosen


# ----------------------------------------------------------------------------- one model, in a child process


def run_one(name: str, workdir: str) -> dict:
    """Build ``name``, export it (default settings: bit-exact), load it in a fresh process, compare."""
    import timm
    import torch

    import modelpack

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size, x, expected = _example(model, torch)
    path = os.path.join(workdir, "model.mpk")
    t = time.perf_counter()
    try:
        modelpack.export(model, path, x)
    except modelpack.ExportError as e:
        return {"input": list(size), "export_s": time.perf_counter() - t, **categorise(str(e))}
    export_s = time.perf_counter() - t
    del model
    got, tail = round_trip(path, x, expected, workdir)
    if got is None:
        return {"input": list(size), "result": "load", "reason": tail[:200], "export_s": export_s}
    row = {"input": list(size), "export_s": export_s, "load_s": got["load_s"], "diff": got["diff"]}
    if got["same"]:
        return {**row, "result": "pass", "reason": ""}
    return {**row, "result": "mismatch", "reason": f"loaded model differs: max abs diff {got['diff']:.3g}"}


def _reduced(side: int) -> int:
    """Half the side, rounded up to a multiple of 32, at least 64 (224 -> 128, 299 -> 160, 384 -> 192)."""
    return max(64, -(-side // 64) * 32)


def _example(model, torch) -> tuple[tuple[int, ...], object, object]:
    """The input (batch 1) and reference output: at the reduced resolution where the model runs there,
    else at its pretrained_cfg input_size."""
    default = tuple(model.pretrained_cfg.get("input_size") or (3, 224, 224))
    reduced = default[:1] + tuple(_reduced(s) for s in default[1:])
    for size in dict.fromkeys((reduced, default)):
        x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                out = model(x)
        except Exception:  # a fixed-size model (position embeddings, windows): its default size instead
            if size == default:
                raise
            continue
        return size, x, out
    raise AssertionError("unreachable")


_FX_TRIED = " (the torch.fx tracer was tried first: "


def categorise(message: str) -> dict:
    """An ExportError message -> {result: category, reason: what is missing}; the torch.export part leads."""
    main, _, fx = message.partition(_FX_TRIED)
    first = main.strip().splitlines()[0] if main.strip() else ""
    fx_note = f" [fx: {fx.rstrip(')')[:120]}]" if fx else ""
    if m := re.search(r"(\S+) is not in the modelpack vocabulary", first):
        return {"result": "vocab", "reason": f"no row for {m.group(1)}{fx_note}"}
    if "torch.export could not capture" in first:
        return {"result": "capture", "reason": first.split(": ", 1)[-1][:200] + fx_note}
    if "does not reproduce" in first:
        m = re.search(r"max abs difference (\S+)", first)
        return {"result": "mismatch", "reason": (f"max abs diff {m.group(1)}" if m else "the bits differ") + fx_note}
    return {"result": "other", "reason": first[:200] + fx_note}


def child(name: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        try:
            out = run_one(name, workdir)
        except Exception as e:  # the report line names the failure; the run goes on
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out = {"result": "other", "reason": f"{type(e).__name__}: {first[:200]}"}
    print("RESULT " + json.dumps(out))


def spawn(name: str, timeout: float) -> dict:
    root = str(_HERE.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    cmd = [sys.executable, str(_HERE / "coverage.py"), "--suite", "timm", "--child", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"result": "timeout", "reason": f"no result after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return {"result": "other", "reason": f"crashed ({tail[:160]})"}


# ----------------------------------------------------------------------------- report


def table(rows: list[dict]) -> str:
    lines = ["| family | model | input | result | reason | export s | load s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ex = f"{r['export_s']:.1f}" if "export_s" in r else ""
        ld = f"{r['load_s']:.1f}" if "load_s" in r else ""
        size = "x".join(map(str, r.get("input", [])))
        reason = r.get("reason", "").replace("|", "\\|")
        lines.append(f"| {r['family']} | {r['name']} | {size} | {r['result']} | {reason} | {ex} | {ld} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    ok = counts.get("pass", 0)
    lines += ["", "| result | families |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: (kv[0] != "pass", kv[0]))]
    lines.append(f"| **bit-exact** | **{ok} / {len(rows)}** ({100 * ok / max(len(rows), 1):.1f}%) |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.child:
        child(args.child)
        return 0
    chosen = picks(Path(args.picks) if getattr(args, "picks", None) else _PICKS)
    items = [(f, n) for f, n in chosen.items() if not args.only or n in args.only or f in args.only]

    def row_of(item: tuple[str, str]) -> dict:
        family, name = item
        return {"family": family, "name": name, **spawn(name, args.timeout)}

    rows = run_models(items, row_of, lambda row: f"{row['family']} {row['name']}: {row['result']} "
                      f"{row.get('reason', '')}", args.jobs, args.results)
    print(table(rows))
    return 0
