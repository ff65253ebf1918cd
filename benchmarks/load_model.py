"""Time to first output and peak memory of ``modelpack.load_model`` against its peers (run by hand).

    python benchmarks/load_model.py                 # ~512 MiB model, 5 repetitions per case
    python benchmarks/load_model.py --reps 3 --layers 4 --cold --threads 1
    python benchmarks/load_model.py --model llama   # ~1 GiB Llama-shaped decoder (issue 10)

The model is a stack of ``--layers`` Linear(4096, 4096) + ReLU (64 MiB of float32
weights each; 8 layers = 512 MiB). It is written three ways: ``modelpack.export``
(.mpk), ``torch.save`` of the state_dict (.pt) and ``safetensors.torch.save_file``.
Each repetition of each case is a fresh Python process that imports its modules,
then measures, from before the load call to after the first forward pass on a
(1, 4096) input:

* ``modelpack``:   ``modelpack.load_model(path)`` (spec validated, built on meta,
  cross-checked, tensors memory-mapped), then ``model(x)``;
* ``torch``:       the model constructed from code on the meta device, then
  ``torch.load(mmap=True, weights_only=True)`` + ``load_state_dict(assign=True)``;
* ``safetensors``: the same with ``safetensors.torch.load_file`` (mmap backend).

The peers construct on meta because ``assign=True`` is how they avoid a second
copy; building with random init first would add seconds and double the memory.
Memory is the peak RSS of the measured phase above the RSS before it (kernel
high-water mark reset with clear_refs); every case maps the file, so touching
the weights in forward makes them resident: "above weights" is what each loader
costs beyond the weights themselves. By default the page cache is warm (the
files are read once before the first run); ``--cold`` drops it before every run
(needs root). Targets (issue 4): modelpack within 1.2x of the faster peer and at
most 64 MiB above the weights. The wall-clock columns decide; the CPU-time
columns (``time.process_time`` of the phase: page faults count, waiting for a
busy CPU does not) are there to read a run on a loaded machine. All processes
must compute the same output (within 1e-6), or the run is void.

``--model llama`` (issue 10): a Llama-shaped ``LlamaForCausalLM`` from
transformers (``LlamaConfig`` width 2048, MLP 5632, 16 heads, vocabulary 32000,
untied head, ``--llama-layers`` decoder layers: 3 = 1.06 GiB of float32
weights), random init, written with ``modelpack.export`` (.mpk),
``save_pretrained`` (an HF folder, safetensors) and ``torch.export.export`` +
``torch.export.save`` (.pt2), each timed once in the parent (the export-time
table). The measured phase is time to first logits on a (1, 32) token batch:

* ``modelpack``: ``modelpack.load_model(path)`` then ``model(input_ids=x)``;
* ``hf``:        ``AutoModelForCausalLM.from_pretrained(folder)`` then the call;
* ``pt2``:       ``torch.export.load(path).module()`` then the call.

Targets: modelpack at most 0.5x ``from_pretrained`` and at most the ``.pt2``
load. Every child's logits must be bit-identical to the eager model's in the
parent (sha256 of the bytes), or the run is void. "+ import s" adds the
import of the case's modules to the phase: transformers for hf, and for pt2 too,
since ``torch.export.load`` cannot rebuild the output spec
(``CausalLMOutputWithPast``) before transformers registers it as a pytree.
Measured (docs/BENCHMARKS.md, 2 busy CPUs): modelpack 0.21x ``from_pretrained``
and 0.17x the ``.pt2`` load (0.63 s, 2.95 s, 3.77 s medians), logits bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MiB,
    PhasePeak,
    can_drop_caches,
    drop_caches,
    fmt_mib,
    fmt_ratio,
    fmt_s,
    markdown_table,
    median,
    ratio,
    run_child,
    verdict,
)

CASES = ("modelpack", "torch", "safetensors")
FILES = {"modelpack": "model.mpk", "torch": "model.pt", "safetensors": "model.safetensors"}
WIDTH = 4096
RATIO_TARGET = 1.2
RSS_TARGET = 64 * MiB
LLAMA_CASES = ("modelpack", "hf", "pt2")
LLAMA_FILES = {"modelpack": "llama.mpk", "hf": "llama-hf", "pt2": "llama.pt2"}
HF_TARGET = 0.5  # modelpack at most this fraction of from_pretrained
PT2_TARGET = 1.0  # ... and at most the .pt2 load


def make_model(layers: int) -> Any:
    """The benchmark model, from code (the peers rebuild it this way)."""
    from torch import nn

    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*parts)


def example() -> Any:
    import torch

    return torch.randn(1, WIDTH, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- setup (parent)


def write_files(folder: Path, layers: int) -> int:
    """Write the three files; return the weight bytes."""
    import safetensors.torch
    import torch

    import modelpack

    torch.manual_seed(0)
    model = make_model(layers).eval()
    state = model.state_dict()
    modelpack.export(model, folder / FILES["modelpack"], (example(),))
    torch.save(state, folder / FILES["torch"])
    safetensors.torch.save_file(state, str(folder / FILES["safetensors"]))
    return sum(t.numel() * t.element_size() for t in state.values())


def warm(folder: Path) -> None:
    """Read every file once so the first timed run does not pay for the disk."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            while f.read(64 * MiB):
                pass


# --------------------------------------------------------------------------- the Llama case (issue 10)


def make_llama(layers: int) -> Any:
    """A Llama-shaped causal LM, random init (seeded by the caller), float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000, max_position_embeddings=512,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def llama_tokens() -> Any:
    import torch

    return torch.randint(0, 32000, (1, 32), generator=torch.Generator().manual_seed(0))


def digest(t: Any) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def write_llama(folder: Path, layers: int) -> tuple[int, dict[str, float], str]:
    """Write the three Llama files; return the weight bytes, each writer's seconds and the eager logits digest."""
    import torch

    import modelpack

    torch.manual_seed(0)
    model = make_llama(layers)
    inputs = {"input_ids": llama_tokens(), "use_cache": False}
    seconds = {}
    start = time.perf_counter()
    modelpack.export(model, folder / LLAMA_FILES["modelpack"], inputs)
    seconds["modelpack"] = time.perf_counter() - start
    start = time.perf_counter()
    torch.export.save(torch.export.export(model, (), inputs), folder / LLAMA_FILES["pt2"])
    seconds["pt2"] = time.perf_counter() - start
    start = time.perf_counter()
    model.save_pretrained(folder / LLAMA_FILES["hf"])
    seconds["hf"] = time.perf_counter() - start
    with torch.no_grad():
        logits = model(**inputs).logits
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return weights, seconds, digest(logits)


def _load_llama(case: str, path: str) -> Any:
    import torch

    if case == "modelpack":
        import modelpack

        return modelpack.load_model(path)
    if case == "hf":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path).eval()
    return torch.export.load(path).module()


def _llama_logits(case: str, model: Any, x: Any) -> Any:
    if case == "modelpack":
        return model(input_ids=x)["logits"]
    return model(input_ids=x, use_cache=False).logits


# --------------------------------------------------------------------------- the measured child


def _load(case: str, path: str, layers: int) -> Any:
    import torch

    if case == "modelpack":
        import modelpack

        return modelpack.load_model(path)
    with torch.device("meta"):
        model = make_model(layers)
    if case == "torch":
        state = torch.load(path, mmap=True, weights_only=True)
    else:
        import safetensors.torch

        state = safetensors.torch.load_file(path)
    model.load_state_dict(state, assign=True)
    return model.eval()


def _import_case(case: str) -> None:
    if case == "modelpack":
        import modelpack.spec  # noqa: F401  (imported lazily by load_model: YAML, jsonschema)
        import modelpack.torch.load  # noqa: F401
    elif case == "safetensors":
        import safetensors.torch  # noqa: F401
    elif case == "hf":
        from transformers import AutoModelForCausalLM  # noqa: F401
    elif case == "pt2":  # the .pt2 output spec names CausalLMOutputWithPast: its pytree registration must exist
        import transformers.modeling_outputs  # noqa: F401


def _first_output(kind: str, case: str, path: str, layers: int) -> Any:
    """Load and run the first forward pass: the measured phase."""
    if kind == "llama":
        return _llama_logits(case, _load_llama(case, path), llama_tokens())
    return _load(case, path, layers)(example())


def child(kind: str, case: str, folder: str, layers: int, threads: int | None) -> None:
    """One measurement: import, then load + first forward under a peak-RSS probe; print JSON."""
    start = time.perf_counter()
    import torch

    torch_s = time.perf_counter() - start
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    _import_case(case)
    import_s = time.perf_counter() - start
    path = os.path.join(folder, (LLAMA_FILES if kind == "llama" else FILES)[case])
    with torch.no_grad(), PhasePeak() as probe:
        start, cpu = time.perf_counter(), time.process_time()
        y = _first_output(kind, case, path, layers)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "import_s": import_s, "torch_import_s": torch_s,
                      "before": probe.before, "peak": probe.peak, "method": probe.method,
                      "checksum": float(y.double().sum()), "digest": digest(y)}))


# --------------------------------------------------------------------------- parent


def measure(folder: Path, args: argparse.Namespace, cases: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    layers = args.llama_layers if args.model == "llama" else args.layers
    extra = ["--threads", str(args.threads)] if args.threads else []
    for rep in range(args.reps):
        for case in cases:  # interleaved, so drift in the machine hits every case alike
            if args.cold:
                drop_caches()
            res = run_child([__file__, "--model", args.model, "--child", case, "--folder", str(folder),
                             "--layers", str(layers), "--llama-layers", str(layers), *extra])
            results[case].append(res.report)
            print(f"  rep {rep + 1}/{args.reps} {case:<12} {fmt_s(res.report['seconds'])}", file=sys.stderr)
    return results


def _medians(results: dict[str, list[dict[str, Any]]], key: str) -> dict[str, float]:
    return {c: median(r[key] for r in rs) for c, rs in results.items()}


def table(results: dict[str, list[dict[str, Any]]], weights: int) -> tuple[str, bool]:
    med, cpu = _medians(results, "seconds"), _medians(results, "cpu_s")
    above = {c: median(r["peak"] - r["before"] for r in results[c]) for c in CASES}
    best_peer = min(med["torch"], med["safetensors"])
    best_cpu = min(cpu["torch"], cpu["safetensors"])
    rows = []
    for c in CASES:
        rows.append([c, fmt_s(med[c]), fmt_s(min(r["seconds"] for r in results[c])),
                     fmt_ratio(ratio(med[c], best_peer)), fmt_s(cpu[c]), fmt_ratio(ratio(cpu[c], best_cpu)),
                     fmt_mib(above[c]), fmt_mib(above[c] - weights, signed=True),
                     fmt_s(median(r["import_s"] for r in results[c]))])
    headers = ["case", "median s", "min s", "vs faster peer", "cpu s", "cpu vs peer", "peak MiB above start",
               "above weights MiB", "import s"]
    ok_time = ratio(med["modelpack"], best_peer) <= RATIO_TARGET
    ok_rss = above["modelpack"] - weights <= RSS_TARGET
    text = markdown_table(headers, rows)
    text += (f"\n\nweights {fmt_mib(weights)} MiB; time target <= {RATIO_TARGET}x the faster peer: "
             f"{verdict(ok_time)}; memory target <= {fmt_mib(RSS_TARGET)} MiB above the weights: {verdict(ok_rss)}")
    return text, ok_time and ok_rss


def llama_table(results: dict[str, list[dict[str, Any]]], weights: int,
                export_s: dict[str, float]) -> tuple[str, bool]:
    med, cpu, imp = _medians(results, "seconds"), _medians(results, "cpu_s"), _medians(results, "import_s")
    above = {c: median(r["peak"] - r["before"] for r in rs) for c, rs in results.items()}
    rows = []
    for c in LLAMA_CASES:
        rows.append([c, fmt_s(med[c]), fmt_s(min(r["seconds"] for r in results[c])),
                     fmt_ratio(ratio(med[c], med["hf"])), fmt_ratio(ratio(med[c], med["pt2"])), fmt_s(cpu[c]),
                     fmt_ratio(ratio(cpu[c], cpu["hf"])), fmt_mib(above[c]), fmt_s(imp[c]),
                     fmt_s(med[c] + imp[c]), fmt_s(export_s[c])])
    headers = ["case", "median s", "min s", "vs hf", "vs pt2", "cpu s", "cpu vs hf", "peak MiB above start",
               "import s", "+ import s", "export s"]
    ok_hf = ratio(med["modelpack"], med["hf"]) <= HF_TARGET
    ok_pt2 = ratio(med["modelpack"], med["pt2"]) <= PT2_TARGET
    text = markdown_table(headers, rows)
    text += (f"\n\nweights {fmt_mib(weights)} MiB (float32); time to first logits <= {HF_TARGET}x from_pretrained: "
             f"{verdict(ok_hf)}; <= {PT2_TARGET}x the .pt2 load: {verdict(ok_pt2)}. export s: modelpack.export, "
             "save_pretrained, torch.export.export + torch.export.save (one run each, in the parent)")
    return text, ok_hf and ok_pt2


def check_same_output(results: dict[str, list[dict[str, Any]]]) -> str:
    """All cases computed the same thing. Bit equality is not required across loaders: BLAS kernels may
    pick another code path for differently aligned weights (safetensors data is 8-byte aligned)."""
    sums = {c: {r["checksum"] for r in rs} for c, rs in results.items()}
    flat = [s for v in sums.values() for s in v]
    if max(flat) - min(flat) > 1e-6 * max(1.0, abs(max(flat))):
        raise SystemExit(f"the cases disagree on the output (checksums {sums}); the run is void")
    same = [c for c in CASES if sums[c] == sums["modelpack"]]
    return f"output checksum bit-identical for: {', '.join(same)}"


def check_same_logits(results: dict[str, list[dict[str, Any]]], eager: str) -> str:
    """Every child's logits are bit-identical to the eager model's, or the run is void."""
    bad = {c: sorted({r["digest"][:12] for r in rs}) for c, rs in results.items() if any(r["digest"] != eager
                                                                                        for r in rs)}
    if bad:
        raise SystemExit(f"logits differ from eager (sha256 {eager[:12]}) for {bad}; the run is void")
    return f"logits bit-identical to eager for every case and repetition (sha256 {eager[:12]})"


def _run_mlp(folder: Path, args: argparse.Namespace) -> tuple[str, str, bool]:
    print(f"writing a {args.layers * 64} MiB model three ways to {folder} ...", file=sys.stderr)
    weights = write_files(folder, args.layers)
    if not args.cold:
        warm(folder)
    results = measure(folder, args, CASES)
    same = check_same_output(results)
    text, ok = table(results, weights)
    return text, same, ok


def _run_llama(folder: Path, args: argparse.Namespace) -> tuple[str, str, bool]:
    print(f"writing a {args.llama_layers}-layer Llama-shaped model three ways to {folder} ...", file=sys.stderr)
    weights, export_s, eager = write_llama(folder, args.llama_layers)
    if not args.cold:
        warm(folder)
    results = measure(folder, args, LLAMA_CASES)
    same = check_same_logits(results, eager)
    text, ok = llama_table(results, weights, export_s)
    return text, same, ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("mlp", "llama"), default="mlp", help="mlp (issue 4) or llama (issue 10)")
    p.add_argument("--layers", type=int, default=8, help="Linear(4096, 4096) layers, 64 MiB each (default 8)")
    p.add_argument("--llama-layers", type=int, default=3, help="Llama decoder layers (default 3: 1.06 GiB)")
    p.add_argument("--reps", type=int, default=5, help="fresh processes per case (default 5)")
    p.add_argument("--cold", action="store_true", help="drop the page cache before every run (root only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the children (default: torch's)")
    p.add_argument("--child", choices=sorted({*CASES, *LLAMA_CASES}), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.model, args.child, args.folder, args.layers, args.threads or None)
        return 0
    if args.cold and not can_drop_caches():
        raise SystemExit("--cold needs permission to write /proc/sys/vm/drop_caches (run as root)")
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as tmp:
        text, same, ok = (_run_llama if args.model == "llama" else _run_mlp)(Path(tmp), args)
    threads = f"{args.threads} torch thread(s)" if args.threads else "torch's default threads"
    print(f"\nload_model benchmark, {args.model} ({'cold' if args.cold else 'warm'} page cache, {args.reps} reps, "
          f"{threads}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})\n")
    print(text)
    print(same)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
