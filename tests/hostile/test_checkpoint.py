"""Checkpoints from a stranger: a well-formed .mpk whose *content* lies about the training state.

``Checkpointer.load``/``restore`` must refuse with a CheckpointError (a ModelPackError), never
raise a raw exception from torch, numpy or random, and never run code.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import save
from modelpack.errors import ModelPackError

from .guards import guarded

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("modelpack.checkpoint") is None,
    reason="torch and modelpack.checkpoint are needed",
)


def _restore(tmp_path: Path, state: dict[str, Any], **objects: Any) -> None:
    from modelpack.checkpoint import Checkpointer
    from modelpack.checkpoint._core import FORMAT, VERSION

    path = tmp_path / "ckpt-hostile.mpk"
    save(_materialize({"format": FORMAT, "version": VERSION, "step": 1, **state}), path)
    with guarded(tmp_path):
        Checkpointer(tmp_path).restore(path=path, **objects)


def _objects(kind: str) -> dict[str, Any]:
    import torch
    from torch import nn

    model = nn.Linear(2, 2)
    return {
        "model": {"model": model},
        "optimizer": {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
        "python": {"generators": {"g": random.Random(1)}},
        "numpy": {"generators": {"g": np.random.default_rng(1)}},
        "torch": {"generators": {"g": torch.Generator()}},
        "rng": {},
    }[kind]


class _t:  # noqa: N801  a torch.zeros made at run time (collection must work without torch)
    def __init__(self, *shape: int, dtype: str = "float32") -> None:
        self.shape, self.dtype = shape, dtype


def _materialize(value: Any) -> Any:
    if isinstance(value, _t):
        import torch

        return torch.zeros(*value.shape, dtype=getattr(torch, value.dtype))
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    return value


REFUSED = [
    ("rng-numpy-dict", {"rng": {"numpy": {"a": 1}}}, "rng"),
    ("rng-numpy-str", {"rng": {"numpy": "MT19937"}}, "rng"),
    ("rng-python-dict", {"rng": {"python": {"a": 1}}}, "rng"),
    ("rng-int", {"rng": 5}, "rng"),
    ("rng-torch-short", {"rng": {"torch": _t(3, dtype="uint8")}}, "rng"),
    ("rng-torch-float", {"rng": {"torch": _t(5056)}}, "rng"),
    ("gen-python-dict", {"generators": {"g": {"kind": "random.Random", "state": {"a": 1}}}}, "python"),
    ("gen-numpy-dict", {"generators": {"g": {"kind": "numpy.random.Generator", "state": {"a": 1}}}}, "numpy"),
    ("gen-kind-mismatch", {"generators": {"g": {"kind": "torch.Generator", "state": 1}}}, "python"),
    ("gen-kind-code", {"generators": {"g": {"kind": "os.system", "state": "id"}}}, "python"),
    ("model-list", {"model": [1, 2]}, "model"),
    ("model-shape", {"model": {"weight": _t(3, 3), "bias": _t(2)}}, "model"),
    ("model-str", {"model": {"weight": "x", "bias": _t(2)}}, "model"),
    ("optimizer-groups-str", {"optimizer": {"state": {}, "param_groups": "x"}}, "optimizer"),
    ("optimizer-groups-int", {"optimizer": {"state": {}, "param_groups": [5]}}, "optimizer"),
    ("missing-component", {}, "model"),
    # out-of-range RNG words and positions: OverflowError from numpy, silent truncation in random
    ("rng-python-words-wide", {"rng": {"python": [3, [2**40] * 624 + [624], None]}}, "rng"),
    ("rng-python-index-huge", {"rng": {"python": [3, [1] * 624 + [2**62], None]}}, "rng"),
    ("rng-numpy-pos-huge", {"rng": {"numpy": ["MT19937", np.ones(624, np.int64) << 40, 2**62, 0, 0.0]}}, "rng"),
    ("rng-numpy-gauss-huge", {"rng": {"numpy": ["MT19937", np.ones(624, np.uint32), 1, 2**62, 0.0]}}, "rng"),
    ("gen-python-words-wide",
     {"generators": {"g": {"kind": "random.Random", "state": [3, [2**40] * 624 + [624], None]}}}, "python"),
    ("gen-numpy-state-huge", {"generators": {"g": {"kind": "numpy.random.Generator", "state": {
        "bit_generator": "PCG64", "state": {"state": 2**62, "inc": 2**62}, "has_uint32": 2**62,
        "uinteger": 2**62}}}}, "numpy"),
]


@pytest.mark.parametrize("state, objects", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_hostile_checkpoint_is_refused(tmp_path: Path, state: dict[str, Any], objects: str) -> None:
    with pytest.raises(ModelPackError):
        _restore(tmp_path, state, **_objects(objects))


# Found by issue 7: these raised AttributeError from restore before the state loaders mapped it
# (and a non-mapping ``generators`` section) to CheckpointError.
CRASHERS = [
    ("rng-torch-list", {"rng": {"torch": [1, 2]}}, "rng"),
    ("generators-list", {"generators": ["g"]}, "python"),
    ("generators-str", {"generators": "g"}, "python"),
    ("gen-torch-list", {"generators": {"g": {"kind": "torch.Generator", "state": [1]}}}, "torch"),
    ("optimizer-state-list", {"optimizer": {"state": [1], "param_groups": [{"params": [0, 1], "lr": 0.1}]}},
     "optimizer"),
]


@pytest.mark.parametrize("state, objects", [c[1:] for c in CRASHERS], ids=[c[0] for c in CRASHERS])
def test_hostile_checkpoint_crashes_restore(tmp_path: Path, state: dict[str, Any], objects: str) -> None:
    with pytest.raises(ModelPackError):
        _restore(tmp_path, state, **_objects(objects))
