"""Real-model coverage: torchvision models, or one model per timm family, through export -> load.

Run by hand (not in CI; needs torchvision, and timm for ``--suite timm``, which CI does not install):

    PYTHONPATH=. python benchmarks/coverage.py [--suite torchvision|timm] [--only NAME ...] [--timeout S]
                                               [--jobs N] [--results FILE] [--capture auto|export|fx]

``--suite timm`` is :mod:`benchmarks._timm_suite` (one model per family, bit-exact). For each model (weights=None: seeded random init, no downloads; eval mode; batch 1 at a small
resolution the architecture allows): ``modelpack.export`` in a subprocess (one crash or hang
cannot stop the run), then ``modelpack.load_model`` in a *fresh* subprocess that must not import
torchvision (asserted), and the outputs compared (max abs difference <= 1e-4). Prints a markdown
table -- model, result, max abs diff, export and load seconds -- and totals per family.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import round_trip, run_models  # noqa: E402

TOLERANCE = 1e-4
# Input resolution per model: the usual one where the architecture fixes it, smaller otherwise.
_FIXED_224 = ("vit_", "swin_", "maxvit_")
_SIZES = {"inception_v3": 160}
_DEFAULT_SIZE = 128

def model_names() -> list[tuple[str, str]]:
    import torchvision

    classification = torchvision.models.list_models(module=torchvision.models)
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    return [("classification", n) for n in classification] + [("segmentation", n) for n in segmentation]


def family_of(name: str) -> str:
    for prefix in ("wide_resnet", "resnext", "resnet", "vgg", "densenet", "squeezenet", "mobilenet_v2",
                   "mobilenet_v3", "mnasnet", "efficientnet_v2", "efficientnet", "regnet", "shufflenet",
                   "convnext", "vit", "swin_v2", "swin", "maxvit", "fcn", "deeplabv3", "lraspp"):
        if name.startswith(prefix):
            return prefix
    return name


def run_one(kind: str, name: str, workdir: str, capture: str = "auto") -> dict:
    """In this process: build, export; then load and compare in a fresh subprocess."""
    import torch
    import torchvision

    import modelpack

    torch.manual_seed(0)
    size = 224 if name.startswith(_FIXED_224) else _SIZES.get(name, _DEFAULT_SIZE)
    extra = {"weights_backbone": None} if kind == "segmentation" else {}
    model = torchvision.models.get_model(name, weights=None, **extra).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
    if isinstance(expected, dict):
        expected = dict(expected)
    path = os.path.join(workdir, f"{name}.mpk")
    t = time.perf_counter()
    modelpack.export(model, path, x, atol=TOLERANCE, capture=capture)
    export_s = time.perf_counter() - t
    del model
    loaded, tail = round_trip(path, x, expected, workdir)
    if loaded is None:
        return {"result": f"fail: load: {tail[:160]}", "export_s": export_s}
    ok = loaded["diff"] <= TOLERANCE
    return {"result": "pass" if ok else "fail: output differs", "diff": loaded["diff"], "export_s": export_s,
            "load_s": loaded["load_s"]}


def child(name: str, capture: str = "auto") -> None:
    kind = "segmentation" if family_of(name) in ("fcn", "deeplabv3", "lraspp") else "classification"
    with tempfile.TemporaryDirectory() as workdir:
        try:
            out = run_one(kind, name, workdir, capture)
        except Exception as e:  # the report line names the failure; the run goes on
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out = {"result": f"fail: {type(e).__name__}: {first[:300]}"}
    print("RESULT " + json.dumps(out))


def spawn(name: str, timeout: float, capture: str = "auto") -> dict:
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--capture", capture], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"result": f"fail: timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return {"result": f"fail: crashed ({tail[:160]})", "wall_s": time.perf_counter() - t}


def _pythonpath() -> str:
    """The repository root first, then whatever PYTHONPATH the run was given (an overlay of packages)."""
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def table(rows: list[dict], capture: str = "auto") -> str:
    lines = [f"Capture: `{capture}`", "","| model | family | result | max abs diff | export s | load s |", "|---|---|---|---|---|---|"]
    for r in rows:
        diff = f"{r['diff']:.2e}" if "diff" in r else ""
        ex = f"{r['export_s']:.1f}" if "export_s" in r else ""
        ld = f"{r['load_s']:.1f}" if "load_s" in r else ""
        result = r["result"].replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['kind']} | {result} | {diff} | {ex} | {ld} |")
    lines += ["", "| family | passed | total |", "|---|---|---|"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(family_of(r["name"]), []).append(r)
    for fam, rs in groups.items():
        lines.append(f"| {fam} | {sum(r['result'] == 'pass' for r in rs)} | {len(rs)} |")
    for kind in ("classification", "segmentation"):
        rs = [r for r in rows if r["kind"] == kind]
        if rs:
            ok = sum(r["result"] == "pass" for r in rs)
            lines.append(f"| **{kind}** | **{ok}** | **{len(rs)}** ({100 * ok / len(rs):.1f}%) |")
    ok = sum(r["result"] == "pass" for r in rows)
    lines.append(f"| **overall** | **{ok}** | **{len(rows)}** ({100 * ok / max(len(rows), 1):.1f}%) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--suite", choices=("torchvision", "timm"), default="torchvision")
    parser.add_argument("--only", nargs="*", help="model names (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once")
    parser.add_argument("--results", help="append one JSON line per model here")
    parser.add_argument("--capture", choices=("auto", "export", "fx"), default="auto",
                        help="torchvision suite: the capture path modelpack.export uses (default auto)")
    parser.add_argument("--picks", help="timm suite: the cached family -> model picks (default "
                        "benchmarks/results/timm_picks.json)")
    args = parser.parse_args(argv)
    if args.suite == "timm":
        import _timm_suite

        return _timm_suite.main(args)
    if args.child:
        child(args.child, args.capture)
        return 0
    names = [(k, n) for k, n in model_names() if not args.only or n in args.only]

    def row_of(item: tuple[str, str]) -> dict:
        kind, name = item
        return {"name": name, "kind": kind, **spawn(name, args.timeout, args.capture), "capture": args.capture}

    rows = run_models(names, row_of, lambda row: f"{row['name']}: {row['result']}", args.jobs, args.results)
    print(table(rows, args.capture))
    return 0


if __name__ == "__main__":
    sys.exit(main())
