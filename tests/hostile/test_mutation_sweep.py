"""Mutation sweep: thousands of seeded truncations, bit flips and byte splices of valid packs.

For every mutated file, every reader either raises a ModelPackError or returns exactly what the
original returns. The rules, per file:

* any exception that is not a ModelPackError fails the sweep (guards active: no escapes either);
* ``open`` refusing means every reader refuses (one code path);
* ``load(verify=True)`` succeeding means the object equals the original, bit for bit;
* ``verify`` succeeding means ``describe`` and ``load_model``/checkpoint restore equal the original;
* tensor bytes are only CRC-checked by ``verify``/``load(verify=True)`` (documented), so the lazy
  readers may return flipped data when verify refuses the file.

The counts per outcome are printed (``pytest -s``) and sanity-checked (every kind of outcome occurs).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import api, inspect
from modelpack.errors import ModelPackError

from .guards import guarded, tree_equal
from .mpkcraft import LFH

SEED = 20240607
_HAS_TORCH = importlib.util.find_spec("torch") is not None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# --------------------------------------------------------------------------- mutations


def _boundaries(data: bytes) -> list[int]:
    """Offsets of every zip signature: structure starts, where truncations matter most."""
    marks = set()
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"\x93NUMPY"):
        start = data.find(sig)
        while start != -1:
            marks.update((start, start + 4, start + LFH.size))
            start = data.find(sig, start + 1)
    return sorted(m for m in marks if 0 < m < len(data))


def mutations(data: bytes, count: int, seed: int, donor: bytes) -> list[tuple[str, bytes]]:
    """``count`` seeded variants: truncations, 1-3 bit flips (half of them in structure), byte splices."""
    rng = random.Random(seed)
    n = len(data)
    hot = [p for b in _boundaries(data) for p in range(b, min(n, b + 46))] or list(range(n))
    cuts = _boundaries(data)
    out: list[tuple[str, bytes]] = [("cut", data[:c]) for c in cuts]
    while len(out) < count:
        kind = rng.choice(("cut", "flip", "flip", "flip", "splice", "insert", "delete", "copy"))
        if kind == "cut":
            out.append((kind, data[: rng.randrange(n)]))
        elif kind == "flip":
            buf = bytearray(data)
            for _ in range(rng.choice((1, 1, 2, 3))):
                pos = rng.choice(hot) if rng.random() < 0.5 else rng.randrange(n)
                buf[pos] ^= 1 << rng.randrange(8)
            out.append((kind, bytes(buf)))
        elif kind == "splice":  # overwrite with bytes from a valid pack (plausible structure)
            src, length = rng.randrange(len(donor)), rng.randint(1, 64)
            pos = rng.randrange(n)
            chunk = donor[src : src + length]
            out.append((kind, data[:pos] + chunk + data[pos + len(chunk) :]))
        elif kind == "insert":
            pos = rng.randrange(n)
            out.append((kind, data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[pos:]))
        elif kind == "delete":
            pos = rng.randrange(n)
            out.append((kind, data[:pos] + data[pos + rng.randint(1, 16) :]))
        else:  # copy a region of the file over another (duplicated headers, quoted structures)
            a, b, length = rng.randrange(n), rng.randrange(n), rng.randint(4, 96)
            chunk = data[a : a + length]
            out.append((kind, data[:b] + chunk + data[b + len(chunk) :]))
    return out[:count]


# --------------------------------------------------------------------------- running one file


def _describe(path: Path) -> dict[str, Any]:
    info = inspect.describe(path)
    info.pop("file")
    return info


def _attempt(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except ModelPackError as e:
        return False, e


def sweep(tmp_path: Path, original: bytes, count: int, seed: int,
          extra: Callable[[Path], Any] | None = None, same: Callable[[Any, Any], bool] | None = None,
          donor: bytes | None = None) -> collections.Counter[str]:
    """Run the readers on every mutation; return outcome counts. ``extra`` is load_model/restore."""
    path = tmp_path / "m.mpk"
    path.write_bytes(original)
    with guarded(tmp_path):
        want_obj = api.load(path, verify=True)
        want_info = _describe(path)
        want_extra = extra(path) if extra else None
    stats: collections.Counter[str] = collections.Counter()
    fd = os.open(path, os.O_RDWR)
    try:
        for kind, data in mutations(original, count, seed, donor or original):
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            _check_one(path, kind, data == original, stats, want_obj, want_info, want_extra, extra, same)
    finally:
        os.close(fd)
    return stats


def _check_one(path: Path, kind: str, identical: bool, stats: collections.Counter[str], want_obj: Any,
               want_info: dict[str, Any], want_extra: Any, extra: Callable[[Path], Any] | None,
               same: Callable[[Any, Any], bool] | None) -> None:
    with guarded(path.parent), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened, err = _attempt(lambda: api.Pack(path).close())
        verified, _ = _attempt(lambda: api.verify(path))
        loaded, obj = _attempt(lambda: api.load(path, verify=True))
        described, info = _attempt(lambda: _describe(path))
        extra_ok, got = _attempt(lambda: extra(path)) if extra else (verified, None)
    if not opened:
        assert not (verified or loaded or described or (extra and extra_ok)), f"{kind}: open refused, another read"
        stats[f"refused:{type(err).__name__}"] += 1
        return
    if loaded:
        assert tree_equal(obj, want_obj), f"{kind}: load(verify=True) returned different data"
    if verified:
        assert loaded, f"{kind}: verify passed but load(verify=True) refused"
        assert described and info == want_info, f"{kind}: verify passed but describe differs"
        if extra:
            assert extra_ok and same(got, want_extra), f"{kind}: verify passed but the model/restore differs"
        stats["identical"] += 1 if identical else 0
        stats["accepted-equal"] += 1
    else:
        stats["opened-but-data-damaged"] += 1


def _report(name: str, stats: collections.Counter[str], count: int) -> None:
    print(f"\nmutation sweep {name}: {count} files: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
    assert sum(v for k, v in stats.items() if k != "identical") == count
    assert stats["accepted-equal"] > 0 and any(k.startswith("refused:") for k in stats)


# --------------------------------------------------------------------------- the packs


def _numpy_pack(tmp_path: Path) -> bytes:
    obj = {"w": np.arange(24, dtype=np.float32).reshape(4, 6), "b": np.array([1, -2, 3], np.int64),
           "meta": {"step": 3, "name": "x", "t": (1.5, None, True)}, 7: np.float16(0.5), "e": np.zeros((0, 2))}
    api.save(obj, tmp_path / "numpy.mpk", metadata={"k": "v"})
    return (tmp_path / "numpy.mpk").read_bytes()


@pytest.mark.budget(120)
def test_sweep_numpy_tree(tmp_path: Path) -> None:
    data = _numpy_pack(tmp_path)
    stats = sweep(tmp_path, data, 1500, SEED)
    _report("numpy tree", stats, 1500)


@pytest.mark.budget(120)
@pytest.mark.skipif(not _HAS_TORCH, reason="torch is not installed")
def test_sweep_torch_tree(tmp_path: Path) -> None:
    import torch

    w = torch.randn(5, 4)
    obj = {"w": w, "tied": w, "bf": torch.ones(3, dtype=torch.bfloat16), "i": torch.arange(4),
           "nested": [torch.zeros(2, 2, dtype=torch.float16), {"x": torch.tensor(True)}]}
    api.save(obj, tmp_path / "torch.mpk")
    data = (tmp_path / "torch.mpk").read_bytes()
    stats = sweep(tmp_path, data, 500, SEED + 1, donor=_numpy_pack(tmp_path))
    _report("torch tree", stats, 500)


def _state_equal(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(tree_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.budget(120)
@pytest.mark.skipif(not (_HAS_TORCH and _has("modelpack.torch.export") and _has("modelpack.torch.load")),
                    reason="modelpack.torch (export, load_model) is not available yet")
def test_sweep_model_file(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from modelpack.torch.export import export
    from modelpack.torch.load import load_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    export(model, tmp_path / "model.mpk", torch.randn(2, 4))
    data = (tmp_path / "model.mpk").read_bytes()
    stats = sweep(tmp_path, data, 800, SEED + 2, extra=load_model, same=_state_equal)
    _report("model file", stats, 800)


@pytest.mark.budget(120)
@pytest.mark.skipif(not (_HAS_TORCH and _has("modelpack.checkpoint")), reason="modelpack.checkpoint is not available")
def test_sweep_checkpoint(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from modelpack.checkpoint import Checkpointer

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = Checkpointer(tmp_path / "ck")
    saved = ckpt.save(5, model=model, optimizer=opt, extra={"note": "x"}, rng=False)
    data = saved.read_bytes()

    def restore(path: Path) -> Any:
        return Checkpointer(tmp_path / "ck").load(path)

    def same(a: Any, b: Any) -> bool:
        return a.step == b.step and tree_equal(a.state, b.state)

    stats = sweep(tmp_path, data, 500, SEED + 3, extra=restore, same=same)
    _report("checkpoint", stats, 500)
