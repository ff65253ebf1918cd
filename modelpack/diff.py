"""``modelpack diff A B``: what changed between two .mpk files: spec, metadata, tree values, tensors (torch-free).

Values are matched by their key in the saved tree (``layer1.0.conv1.weight``,
``optimizer.param_groups.0.lr``; nested dicts and lists joined with dots), so
model files, checkpoints and plain tensor files all compare. Per tensor key:
missing/extra, shape or dtype change, or the max absolute and max relative
difference over chunks of the memory-mapped data (exact for integers of every
width). Other values (numbers, strings, None) differ when they are not equal
(``lr: 0.1 -> 0.2``). Specs are compared as models (validated, blocks expanded):
inputs, outputs and node by node; a change of formatting or comments only is
reported but is not a difference.

Exit code: 1 when the models differ (spec), metadata differs, a key is missing
on one side, a value changed, a tensor's shape or dtype changed, its max abs
difference exceeds ``atol`` or NaNs sit in different places; else 0.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from . import api
from .codec import dtype_by_name
from .errors import SpecError
from .tree import TensorRef, flat_leaves

__all__ = ["diff_report", "TensorDiff", "compare_arrays", "spec_differences"]

_CHUNK = 1 << 22  # elements compared at once (32 MiB of float64 per side)


# --------------------------------------------------------------------------- tree values


@dataclasses.dataclass(frozen=True)
class TensorDiff:
    """One key's comparison; ``status`` is same, close, differs, shape, dtype, value, only_a or only_b."""

    key: str
    status: str
    detail: str = ""

    @property
    def counts(self) -> bool:
        """Whether this line makes the files differ (exit 1)."""
        return self.status not in ("same", "close")


def _int_gap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y| of two integer arrays, exact even where int64 subtraction would overflow (as float64)."""
    if x.dtype.itemsize < 8:
        return np.abs(x.astype(np.int64) - y.astype(np.int64)).astype(np.float64)
    xu, yu = x.view(np.uint64), y.view(np.uint64)  # two's complement: the modular difference is exact
    return np.where(x >= y, xu - yu, yu - xu).astype(np.float64)


def _as_float64(arr: np.ndarray, dtype: str) -> np.ndarray | None:
    """Values as float64, or None when numpy cannot interpret the stored bits (float8...) or they are complex."""
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if not dtype_by_name(dtype).numpy_native or arr.dtype.kind == "c":
        return None
    return arr.astype(np.float64)


def _gaps(x: np.ndarray, y: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(|x - y|, max(|x|, |y|), NaN in x, NaN in y) in float64, exact for integers; None without arithmetic."""
    if dtype.startswith(("int", "uint")):  # by name: bfloat16 and float8 bits are stored as unsigned too
        scale = np.maximum(np.abs(x.astype(np.float64)), np.abs(y.astype(np.float64)))
        no_nan = np.zeros(x.shape, dtype=bool)
        return _int_gap(x, y), scale, no_nan, no_nan
    xf, yf = _as_float64(x, dtype), _as_float64(y, dtype)
    if xf is None or yf is None:
        return None
    return np.abs(xf - yf), np.maximum(np.abs(xf), np.abs(yf)), np.isnan(xf), np.isnan(yf)


def compare_arrays(a: np.ndarray, b: np.ndarray, dtype: str) -> tuple[float, float, bool, bool]:
    """(max abs diff, max rel diff, bits identical, NaNs in the same places), chunk by chunk."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    max_abs = max_rel = 0.0
    identical = nan_same = True
    for start in range(0, fa.size, _CHUNK):
        x, y = fa[start:start + _CHUNK], fb[start:start + _CHUNK]
        if np.array_equal(x.view(np.uint8), y.view(np.uint8)):
            continue
        identical = False
        gaps = _gaps(x, y, dtype)
        if gaps is None:  # no numeric view: any bit difference is a difference
            max_abs = max_rel = float("inf")
            continue
        gap, scale, nan_x, nan_y = gaps
        nan_same = nan_same and bool(np.array_equal(nan_x, nan_y))
        ok = ~(nan_x | nan_y)
        abs_diff, scale = gap[ok], scale[ok]
        rel = np.divide(abs_diff, scale, out=np.zeros_like(abs_diff), where=scale > 0)
        if abs_diff.size:
            max_abs = max(max_abs, float(abs_diff.max()))
            max_rel = max(max_rel, float(rel.max()))
    return max_abs, max_rel, identical, nan_same


def _shape(entry: dict[str, Any]) -> str:
    return "[" + ", ".join(map(str, entry["shape"])) + "]"


def _one(key: str, a: api.Pack, ra: str, b: api.Pack, rb: str, atol: float) -> TensorDiff:
    ea, eb = a.entries[ra], b.entries[rb]
    if ea["shape"] != eb["shape"]:
        return TensorDiff(key, "shape", f"shape {_shape(ea)} -> {_shape(eb)}")
    if ea["dtype"] != eb["dtype"]:
        return TensorDiff(key, "dtype", f"dtype {ea['dtype']} -> {eb['dtype']}")
    max_abs, max_rel, identical, nan_same = compare_arrays(a.array(ra), b.array(rb), ea["dtype"])
    if identical:
        return TensorDiff(key, "same")
    detail = f"max abs {max_abs:.3g}, max rel {max_rel:.3g}" + ("" if nan_same else ", NaNs in different places")
    return TensorDiff(key, "close" if nan_same and max_abs <= atol else "differs", detail)


def _show(value: Any, pack: api.Pack) -> str:
    if isinstance(value, TensorRef):
        return f"tensor {_shape(pack.entries[value])} {pack.entries[value]['dtype']}"
    return json.dumps(value) if isinstance(value, (dict, list)) else repr(value)


def _same_value(x: Any, y: Any) -> bool:
    """Equal values of one type; NaN equals NaN (a float saved twice is the same float)."""
    if type(x) is not type(y):
        return False
    return x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))


def _pair(key: str, a: api.Pack, va: Any, b: api.Pack, vb: Any, atol: float) -> TensorDiff:
    if isinstance(va, TensorRef) and isinstance(vb, TensorRef):
        return _one(key, a, va, b, vb, atol)
    if isinstance(va, TensorRef) or isinstance(vb, TensorRef) or not _same_value(va, vb):
        return TensorDiff(key, "value", f"{_show(va, a)} -> {_show(vb, b)}")
    return TensorDiff(key, "same")


def tensor_differences(a: api.Pack, b: api.Pack, atol: float) -> list[TensorDiff]:
    """One TensorDiff per key of either file's tree (tensors and other values), A's order then B's extra keys."""
    ka, kb = flat_leaves(a.manifest["tree"]), flat_leaves(b.manifest["tree"])
    out = [_pair(k, a, va, b, kb[k], atol) if k in kb else TensorDiff(k, "only_a", "only in A")
           for k, va in ka.items()]
    out += [TensorDiff(k, "only_b", "only in B") for k in kb if k not in ka]
    return out


# --------------------------------------------------------------------------- specs


def _model(text: str, source: str) -> dict[str, Any]:
    from .spec import expand_blocks, validate

    return expand_blocks(validate(text.encode("utf-8"), source=source))  # bytes: a one-line str is a path


def spec_differences(a: str | None, b: str | None, *, names: tuple[str, str] = ("A", "B")) -> tuple[list[str], bool]:
    """Lines describing how spec ``b`` differs from ``a``, and whether the models differ."""
    if a is None and b is None:
        return ["spec: none in either file (tensor files)"], False
    if a is None or b is None:
        return [f"spec: only in {names[0] if b is None else names[1]}"], True
    if a == b:
        return ["spec: identical"], False
    try:
        ma, mb = _model(a, f"{names[0]}:spec.yaml"), _model(b, f"{names[1]}:spec.yaml")
    except SpecError as e:  # an invalid spec cannot be compared as a model: compare the text
        return [f"spec: not comparable as models ({e}); text differences:", *_unified(a, b, names)], True
    lines = list(_model_lines(ma, mb))
    if not lines:
        return ["spec: same model (the text differs only in formatting, comments or block structure)"], False
    return ["spec: the models differ", *lines], True


def _unified(a: str, b: str, names: tuple[str, str]) -> list[str]:
    diff = difflib.unified_diff(a.splitlines(), b.splitlines(), f"{names[0]}:spec.yaml", f"{names[1]}:spec.yaml",
                                lineterm="")
    return ["  " + line for line in diff]


def _kind(node: dict[str, Any]) -> str:
    return "layer" if "layer" in node else "op"


def _brief(node: dict[str, Any]) -> str:
    kind = _kind(node)
    return f"{kind} {node[kind]} in={node['in']} args={json.dumps(node.get('args', {}), sort_keys=True)}"


def _full_args(node: dict[str, Any]) -> dict[str, Any]:
    """The node's args with vocabulary defaults filled in, so ``bias: true`` equals leaving it out."""
    from .vocab import LAYERS, OPS, REQUIRED

    entry = (LAYERS if _kind(node) == "layer" else OPS).get(node[_kind(node)])
    defaults = {a.name: a.default for a in entry.args if a.default is not REQUIRED} if entry else {}
    return {**defaults, **node.get("args", {})}


def _node_change(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """How node ``b`` differs from ``a`` as a model, or None when it computes the same thing."""
    if (_kind(a), a[_kind(a)]) != (_kind(b), b[_kind(b)]):
        return f"{_brief(a)} -> {_brief(b)}"
    changes = [f"in {a['in']} -> {b['in']}"] if a["in"] != b["in"] else []
    fa, fb = _full_args(a), _full_args(b)
    changes += [f"args.{k}: {json.dumps(fa.get(k))} -> {json.dumps(fb.get(k))}"
                for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return "; ".join(changes) or None


def _model_lines(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    for key in ("inputs", "outputs"):
        if a[key] != b[key]:
            yield f"  {key}: {json.dumps(a[key])} -> {json.dumps(b[key])}"
    na = {n["name"]: n for n in a["nodes"]}
    nb = {n["name"]: n for n in b["nodes"]}
    for name, node in na.items():
        if name not in nb:
            yield f"  - node {name!r}: {_brief(node)}"
        else:
            change = _node_change(node, nb[name])
            if change:
                yield f"  ~ node {name!r} ({_kind(node)} {node[_kind(node)]}): {change}"
    for name, node in nb.items():
        if name not in na:
            yield f"  + node {name!r}: {_brief(node)}"
    common_a = [name for name in na if name in nb]
    if common_a != [name for name in nb if name in na]:
        yield "  order: the common nodes run in a different order"


# --------------------------------------------------------------------------- report


def _metadata_lines(a: api.Pack, b: api.Pack) -> list[str]:
    ma, mb = a.metadata, b.metadata
    keys = list(ma) + [k for k in mb if k not in ma]
    return [f"  metadata {k!r}: {ma.get(k)!r} -> {mb.get(k)!r}" for k in keys if ma.get(k) != mb.get(k)]


def diff_report(a: str | os.PathLike[str], b: str | os.PathLike[str], *, atol: float, out: TextIO) -> int:
    """Print the differences between two .mpk files; 1 if they differ beyond ``atol`` (see module doc)."""
    with api.Pack(a) as pa, api.Pack(b) as pb:
        out.write(f"A: {pa.path}\nB: {pb.path}\n")
        spec_lines, spec_differs = spec_differences(pa.spec_text, pb.spec_text)
        out.write("\n".join(spec_lines) + "\n")
        metadata = _metadata_lines(pa, pb)
        for line in metadata:
            out.write(line + "\n")
        diffs = tensor_differences(pa, pb, atol)
    for d in diffs:
        if d.status != "same":
            out.write(f"  {d.key or '(the saved value)'}: {d.detail}"
                      f"{'' if d.counts else f' (within atol {atol:g})'}\n")
    counted = [d for d in diffs if d.counts]
    same = sum(d.status == "same" for d in diffs)
    close = sum(d.status == "close" for d in diffs)
    differs = spec_differs or bool(metadata) or bool(counted)
    out.write(f"values: {len(diffs)} keys, {same} identical, {close} within atol, {len(counted)} differ; "
              f"{'DIFFERENT' if differs else 'SAME'} (atol {atol:g})\n")
    return 1 if differs else 0
