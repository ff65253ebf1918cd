"""atheris harness: the spec and model layers (validate with shapes, build on meta, load_model,
inspect, diff) on fuzzed specs, each input held to 2 s and 1 GB.

The first input byte picks the readers (see ``_model.check``); the rest is spec text. Budget
per input (see ``_budget``): 2 s of CPU time (an OverBudget exception, reported as a finding)
and a data limit of 1 GiB above the warmed-up process (a MemoryError, a finding too); torch runs
on one thread. libFuzzer's ``-timeout`` (wall time) and ``-rss_limit_mb`` back them up.

    python tests/fuzz/fuzz_model_pack.py --seed build/fuzz/model_pack
    nice -n 19 python tests/fuzz/fuzz_model_pack.py build/fuzz/model_pack -max_total_time=1800 -timeout=20 \\
        -rss_limit_mb=3072 -dict=tests/fuzz/spec.dict -artifact_prefix=build/fuzz/findings-

Replay inputs (a finding, or a whole corpus) each in a forked child under the same budget, with
the time and outcome of each: ``python tests/fuzz/fuzz_model_pack.py --replay FILE_OR_DIR...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _budget
import _model_pack as _model


def replay(paths: list[str]) -> int:
    """Each input in a forked child (2 s, 1 GiB): print one line per input, 1 if any overran."""
    _model.preload()
    files = [f for p in map(Path, paths) for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file()]
    worst, findings = 0.0, 0
    for f in files:
        outcome = _budget.run_forked(_model.check, f.read_bytes())
        worst = max(worst, outcome.seconds)
        findings += outcome.finding
        if outcome.finding:
            print(f"{f}: {outcome.status} after {outcome.seconds:.2f} s {outcome.detail}")
    print(f"{len(files)} inputs, {findings} over budget or raising, slowest {worst:.2f} s")
    return 1 if findings else 0


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["modelpack"]):
        import modelpack.checks  # noqa: F401
        import modelpack.diff  # noqa: F401
        import modelpack.inspect  # noqa: F401
        import modelpack.torch.build  # noqa: F401
        import modelpack.torch.load  # noqa: F401

    _model.preload()
    cap = _budget.limit_memory()
    print(f"fuzz_model_pack: data limit {cap >> 20} MiB (1 GiB above the warmed-up process), "
          f"{_budget.SECONDS:g} s of CPU per input", file=sys.stderr)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def one_input(data: bytes) -> None:
    with _budget.cpu_budget():
        _model.check(data)


def seed(out: str) -> None:
    """Write the seed corpus (every spec of examples/ and tests/data/specs/, modes 0-2) to ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in _model.seeds().items():
        (folder / name).write_bytes(data)
    print(f"seeds: {len(_model.seeds())} files under {folder}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        sys.exit(replay(sys.argv[2:]))
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        sys.exit(seed(sys.argv[2]))
    main()
