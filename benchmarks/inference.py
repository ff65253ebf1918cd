"""Latency and peak activation memory of a rebuilt model against eager (run by hand).

    python benchmarks/inference.py                       # every model whose packages are installed
    python benchmarks/inference.py --models resnet50 --reps 20 --threads 2

For each model: build it from code with seeded random weights, ``modelpack.export``
it, ``modelpack.load_model`` it back, then, in ONE fresh process per model:

* latency: median of ``--reps`` forward passes (batch 1, ``torch.no_grad``,
  eval mode), eager and rebuilt interleaved round by round after warm-up passes,
  so a busy machine slows both alike;
* peak memory: in separate fresh processes (one per side), the kernel peak RSS
  of one forward pass above the RSS before it (weights already resident):
  what the activations cost.

The rebuilt model must give bit-identical outputs to eager, or the row is void.
Models: ``resnet50`` and ``vit_b_16`` need torchvision, ``llama`` needs
transformers (a Llama-shaped decoder, ``--llama-layers`` layers of width 2048).
A model the exporter cannot capture yet is reported as such, not hidden.
Targets (issue 10): at most 1.0x eager latency and at most eager peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PhasePeak, fmt_mib, fmt_ratio, fmt_s, markdown_table, median, ratio, run_child, verdict  # noqa: E402

MODELS = ("resnet50", "vit_b_16", "llama")
LATENCY_TARGET = 1.0


def make(name: str, llama_layers: int) -> tuple[Any, tuple[Any, ...]]:
    """The eager model (seeded, eval) and its batch-1 example input."""
    import torch

    torch.manual_seed(0)
    if name in ("resnet50", "vit_b_16"):
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        return model.eval(), (torch.randn(1, 3, 224, 224),)
    if name == "llama":
        from transformers import LlamaConfig, LlamaModel

        config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=llama_layers,
                             num_attention_heads=16, num_key_value_heads=16, vocab_size=32000,
                             max_position_embeddings=512)
        return LlamaModel(config).eval(), (torch.randint(0, 32000, (1, 128)),)
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def _first(out: Any) -> Any:
    """The first tensor of a model output (a tensor, a tuple, a dict or an HF ModelOutput)."""
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = next(iter(out.values()))
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


# --------------------------------------------------------------------------- children


def child_latency(name: str, path: str, reps: int, llama_layers: int) -> dict[str, Any]:
    import torch

    import modelpack

    eager, inputs = make(name, llama_layers)
    rebuilt = modelpack.load_model(path)
    times: dict[str, list[float]] = {"eager": [], "modelpack": []}
    with torch.no_grad():
        same = torch.equal(_first(eager(*inputs)), _first(rebuilt(*inputs)))
        for _ in range(3):
            eager(*inputs), rebuilt(*inputs)
        for _ in range(reps):
            for side, model in (("eager", eager), ("modelpack", rebuilt)):
                start = time.perf_counter()
                model(*inputs)
                times[side].append(time.perf_counter() - start)
    return {"same": same, "eager": median(times["eager"]), "modelpack": median(times["modelpack"])}


def child_memory(name: str, path: str, side: str, llama_layers: int) -> dict[str, Any]:
    import torch

    import modelpack

    eager, inputs = make(name, llama_layers)
    model = eager if side == "eager" else modelpack.load_model(path)
    with torch.no_grad():
        for p in model.state_dict().values():  # weights resident before the measured pass
            p.sum()
        with PhasePeak() as peak:
            model(*inputs)
    return {"above": peak.peak - peak.before, "method": peak.method}


# --------------------------------------------------------------------------- parent


def export(name: str, folder: Path, llama_layers: int) -> tuple[Path | None, str]:
    import modelpack

    model, inputs = make(name, llama_layers)
    path = folder / f"{name}.mpk"
    try:
        modelpack.export(model, path, inputs)
    except modelpack.ModelPackError as e:
        return None, f"export failed: {str(e).splitlines()[0][:100]}"
    return path, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    ap.add_argument("--llama-layers", type=int, default=4)
    ap.add_argument("--child", nargs=4, metavar=("KIND", "NAME", "PATH", "ARG"), help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        if ns.threads:
            import torch

            torch.set_num_threads(ns.threads)
        kind, name, path, arg = ns.child
        report = (child_latency(name, path, ns.reps, ns.llama_layers) if kind == "latency"
                  else child_memory(name, path, arg, ns.llama_layers))
        print(json.dumps(report))
        return 0
    rows = []
    common = [__file__, "--reps", str(ns.reps), "--threads", str(ns.threads), "--llama-layers", str(ns.llama_layers)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ns.models:
            try:
                path, why = export(name, Path(tmp), ns.llama_layers)
            except ImportError as e:
                rows.append([name, f"skipped: {e.name} not installed", "", "", "", "", "", ""])
                continue
            if path is None:
                rows.append([name, why, "", "", "", "", "", ""])
                continue
            lat = run_child([*common, "--child", "latency", name, str(path), "-"], timeout=1800).report
            mem = {side: run_child([*common, "--child", "memory", name, str(path), side]).report["above"]
                   for side in ("eager", "modelpack")}
            r = ratio(lat["modelpack"], lat["eager"])
            ok = lat["same"] and r <= LATENCY_TARGET and mem["modelpack"] <= mem["eager"]
            rows.append([name, "bit-identical" if lat["same"] else "OUTPUTS DIFFER (void)", fmt_s(lat["eager"]),
                         fmt_s(lat["modelpack"]), fmt_ratio(r), fmt_mib(mem["eager"]), fmt_mib(mem["modelpack"]),
                         verdict(ok)])
    print(markdown_table(["model", "outputs", "eager", "modelpack", "ratio", "eager peak", "modelpack peak",
                          "target met"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
