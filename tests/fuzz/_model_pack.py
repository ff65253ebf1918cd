"""The spec and model layers on one fuzzed spec: what ``fuzz_model_pack.py`` runs per input.

No atheris here, so the hostile suite replays the seeds through the same code
(``tests/hostile/test_fuzz_budget.py``). Per input, each of these may raise only a
ModelPackError:

* ``modelpack.validate(spec, shapes=True)`` (schema, graph, args, shapes through torch on meta);
* ``build(spec, device="meta")``;
* the spec as the ``spec.yaml`` of a small pack holding an MLP's weights (those of
  ``examples/specs/mlp.yaml``, so mutations of that seed reach the weight checks):
  ``load_model``, ``describe`` (inspect) and ``diff`` against the unmutated pack.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Any

import _harness
import numpy as np

SEED_SPEC = _harness.ROOT / "examples" / "specs" / "mlp.yaml"


@functools.cache
def weights() -> dict[str, np.ndarray]:
    """The MLP's state_dict as numpy arrays (built once, from the seed spec)."""
    import torch

    from modelpack.torch.build import build

    torch.manual_seed(0)
    model = build(SEED_SPEC.read_text())
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def pack_bytes(spec: bytes) -> bytes:
    """A valid pack of the MLP's weights whose spec.yaml member is ``spec`` (CRCs right)."""
    from hostile.mpkcraft import mpk

    return mpk(weights(), spec=spec).bytes()


@functools.cache
def base_path() -> str:
    """The unmutated MLP pack, the other side of every ``diff``."""
    path = os.path.join(os.path.dirname(_harness.PATH), "base.mpk")
    with open(path, "wb") as f:
        f.write(pack_bytes(SEED_SPEC.read_bytes()))
    return path


def _validate(spec: bytes) -> None:
    import modelpack

    modelpack.validate(spec, shapes=True)


def _build(spec: bytes) -> None:
    from modelpack.torch.build import build

    build(spec, device="meta")


def _load_model(path: str) -> None:
    from modelpack.torch.load import load_model

    load_model(path)


def _describe(path: str) -> None:
    from modelpack import inspect

    inspect.describe(path)


def _diff(path: str) -> None:
    from modelpack.diff import diff_report

    diff_report(path, base_path(), atol=0.0, out=io.StringIO())


def check(data: bytes) -> None:
    """Run every reader on one input; anything but a ModelPackError propagates (a finding).

    The first byte picks which readers run (all of them would make each input slow):
    bits 0-1 pick validate, build, or the pack readers (twice as often: three readers).
    """
    if not data:
        return
    spec, mode = data[1:], data[0] % 4
    if mode == 0:
        _harness.expect_modelpack_errors([_validate], spec)  # type: ignore[list-item]
    elif mode == 1:
        _harness.expect_modelpack_errors([_build], spec)  # type: ignore[list-item]
    else:
        path = _harness.write(pack_bytes(spec))
        _harness.expect_modelpack_errors([_load_model, _describe, _diff], path)


def seeds() -> dict[str, bytes]:
    """Every spec of examples/ and tests/data/specs/ behind mode bytes 0, 1 and 2."""
    root = _harness.ROOT
    specs = sorted((root / "examples" / "specs").glob("*.yaml")) + sorted((root / "tests" / "data").rglob("*.yaml"))
    return {f"{label}-{path.stem}": bytes([mode]) + path.read_bytes()
            for path in specs for mode, label in enumerate(("validate", "build", "pack"))}


def preload() -> Any:
    """Imports, one torch thread and the base pack, before the first timed input."""
    import torch

    torch.set_num_threads(1)  # CPU budget per input = its time; a fuzzer needs no intra-op threads
    _harness.preload()
    import modelpack.diff  # noqa: F401
    import modelpack.inspect  # noqa: F401
    import modelpack.torch.build  # noqa: F401

    base_path()
    check(b"\x02" + SEED_SPEC.read_bytes())  # warm every reader once (lazy imports inside torch)
