"""``modelpack run FILE --input x.npy [--input name=y.npy] --output out.npy``: deployment without source.

Inputs: ``name=y.npy`` binds by name, a plain ``x.npy`` fills the first input
not bound yet (in declared order), and an ``.npz`` gives several inputs by its
keys. Each array must have the declared dtype (never cast) and rank, with
fixed dims equal and each symbolic dim one size. Outputs: a single output goes
to ``.npy``; several (a list or named outputs) go to one ``.npz`` keyed by output
name, so ``--output`` must then end in ``.npz``. Files are written atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import torch

from .. import _fs
from ..errors import ShapeError, SpecError
from ..spec.shapes import check_inputs, input_rules
from .load import load_model

__all__ = ["run_command", "bind_inputs", "output_arrays"]


# --------------------------------------------------------------------------- inputs


def _read_array(path: str) -> Any:
    """An .npy array or an .npz mapping; pickled object arrays are refused."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise SpecError(f"cannot read {path}: {e}", where="--input") from e


def bind_inputs(specs: Sequence[str], declared: dict[str, Any]) -> dict[str, np.ndarray]:
    """``--input`` values -> input name -> array, in declared order, each checked against its declaration."""
    names = list(declared)
    bound: dict[str, np.ndarray] = {}
    for item in specs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        data = _read_array(path)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                for key in data.files:
                    _bind(bound, key, data[key], names, path)
            continue
        if not name:  # a plain file fills the first input not bound yet, in declared order
            free = [n for n in names if n not in bound]
            if not free:
                raise SpecError(f"{path}: too many inputs; the model takes {len(names)} ({', '.join(names)})",
                                where="--input")
            name = free[0]
        _bind(bound, name, data, names, path)
    missing = [n for n in names if n not in bound]
    if missing:
        raise SpecError(f"missing input(s) {', '.join(missing)}; give --input NAME=FILE.npy (the model takes: "
                        f"{', '.join(names)})", where="--input")
    _check_inputs(bound, declared)
    return {n: bound[n] for n in names}


def _bind(bound: dict[str, np.ndarray], name: str, array: np.ndarray, names: list[str], path: str) -> None:
    if name not in names:
        raise SpecError(f"{path}: unknown input {name!r}; the model's inputs are: {', '.join(names)}",
                        where="--input")
    if name in bound:
        raise SpecError(f"{path}: input {name!r} is given twice", where="--input")
    bound[name] = array


def _check_inputs(bound: dict[str, np.ndarray], declared: dict[str, Any]) -> None:
    """dtype exact, then the spec's shape rules (the model's own check), and each symbolic dim one size."""
    for name, array in bound.items():
        want = declared[name].get("dtype", "float32")
        if _dtype_name(array) != want:
            raise ShapeError(f"expected {want} (declared in the spec), the file holds {array.dtype}; convert it "
                             f"first, e.g. arr.astype({want!r}) (inputs are never cast)", where=f"input {name!r}")
    check_inputs(input_rules({"inputs": declared}), bound)
    symbols: dict[str, tuple[int, str]] = {}
    for name, array in bound.items():
        for d, s in zip(declared[name]["shape"], array.shape):
            if isinstance(d, str):
                seen = symbols.setdefault(d, (s, name))
                if seen[0] != s:
                    raise ShapeError(f"dim {d!r} is {s} here but {seen[0]} in input {seen[1]!r}",
                                     where=f"input {name!r}")


def _dtype_name(array: np.ndarray) -> str:
    return "bool" if array.dtype == np.bool_ else array.dtype.name


# --------------------------------------------------------------------------- outputs


def _to_numpy(value: Any, key: str, notes: list[str]) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    t = value.detach().cpu().contiguous()
    try:
        return t.numpy()
    except TypeError:  # bfloat16, float8...: numpy has no such dtype; say so in the summary
        dtype = str(t.dtype).removeprefix("torch.")
        notes.append(f"{key}: {dtype} written as float32 (numpy has no {dtype})")
        return t.float().numpy()


def output_arrays(result: Any, output_names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The model's result as name -> array (nested tuples get ``name.0``, ``name.1``), plus notes."""
    if isinstance(result, dict):
        items = list(result.items())
    elif isinstance(result, tuple) and len(output_names) > 1:
        items = list(zip(output_names, result))
    else:
        items = [(output_names[0], result)]
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for key, value in items:
        _flatten(key, value, arrays, notes)
    return arrays, notes


def _flatten(key: str, value: Any, arrays: dict[str, np.ndarray], notes: list[str]) -> None:
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _flatten(f"{key}.{i}", v, arrays, notes)
    else:
        arrays[key] = _to_numpy(value, key, notes)


def _write(path: str, arrays: dict[str, np.ndarray]) -> None:
    several = len(arrays) > 1
    if several and not path.endswith(".npz"):
        raise SpecError(f"the model has {len(arrays)} outputs ({', '.join(arrays)}); write them to one .npz: "
                        f"--output {os.path.splitext(path)[0]}.npz", where="--output")
    if not several and not path.endswith((".npy", ".npz")):
        raise SpecError(f"{path}: the output file must end in .npy (or .npz)", where="--output")
    with _fs.atomic_write(path) as fd, os.fdopen(os.dup(fd), "wb") as f:
        if path.endswith(".npz"):
            np.savez(f, **arrays)
        else:
            np.save(f, next(iter(arrays.values())), allow_pickle=False)
        f.flush()


# --------------------------------------------------------------------------- command


def run_command(file: str, inputs: list[str], output: str, *, out: TextIO) -> int:
    """Load ``file``, run it on the ``--input`` arrays, write ``output``; print one summary line."""
    model = load_model(file)
    spec = model.spec
    arrays = bind_inputs(inputs, spec["inputs"])
    tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()}
    start = time.perf_counter()
    with torch.inference_mode():
        result = model(**tensors)
    ms = (time.perf_counter() - start) * 1000
    names = list(spec["outputs"]) if isinstance(spec["outputs"], (list, dict)) else [spec["outputs"]]
    results, notes = output_arrays(result, names)
    _write(output, results)
    ins = ", ".join(f"{n} {list(a.shape)} {_dtype_name(a)}" for n, a in arrays.items())
    outs = ", ".join(f"{n} {list(a.shape)} {_dtype_name(a)}" for n, a in results.items())
    extra = f" ({'; '.join(notes)})" if notes else ""
    out.write(f"{file}: {ins} -> {outs} in {ms:.1f} ms, wrote {output}{extra}\n")
    return 0
