"""Property tests (hypothesis): random trees round-trip exactly; random valid specs validate and build.

Bounded ``max_examples`` keep this file to seconds. The spec strategies are drawn from the
vocabulary itself (each argument's type, bounds, choices and length); when
``hypothesis-jsonschema`` is installed, node arguments are also drawn from the committed JSON
Schema, so the schema, the validator and the builder are checked against each other.
"""

from __future__ import annotations

import importlib.util
import json
import re
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import modelpack
from modelpack.errors import BuildError, LimitError, ModelPackError

ROOT = Path(__file__).resolve().parent.parent
_TORCH = importlib.util.find_spec("torch") is not None
_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# --------------------------------------------------------------------------- exact equality


def same(a: Any, b: Any) -> bool:
    """Type-exact, bit-exact equality (NaN payloads and -0.0 included); tied tensors stay tied."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(type(k) is type(k2) for k, k2 in zip(a, b)) and all(
            same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a).__module__ == "torch":
        import torch

        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        flat = [t.contiguous().reshape(-1) for t in (a, b)]
        return a.numel() == 0 or torch.equal(*(t.view(torch.uint8) for t in flat))
    return bool(a == b)


# --------------------------------------------------------------------------- tree strategies

_NUMPY_DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128"]
_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def numpy_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_NUMPY_DTYPES)))
    # raw bytes, not values: every bit pattern (NaN payloads, -0.0, subnormals) must survive
    shape = draw(_SHAPES)
    raw = draw(st.binary(min_size=dtype.itemsize * math.prod(shape), max_size=dtype.itemsize * math.prod(shape)))
    arr = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape).copy() if raw else np.zeros(shape, dtype)
    if dtype == np.bool_:
        arr = arr.view(np.uint8) % 2 == 1
    if draw(st.booleans()) and arr.ndim >= 2:
        arr = arr.T  # non-contiguous: saved as a C-order copy
    return arr


def numpy_scalars() -> st.SearchStrategy[Any]:
    return numpy_arrays().filter(lambda a: a.ndim == 0).map(lambda a: a[()])


@st.composite
def torch_tensors(draw: st.DrawFn) -> Any:
    import torch

    from modelpack.codec import DTYPES

    names = [n for n in DTYPES if hasattr(torch, DTYPES[n].torch_name or "")]
    row = DTYPES[draw(st.sampled_from(names))]
    shape = draw(_SHAPES)
    n = math.prod(shape)
    raw = draw(st.binary(min_size=row.itemsize * n, max_size=row.itemsize * n))
    carrier = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    t = carrier.view(getattr(torch, row.torch_name)).reshape(shape).clone()
    if row.name == "bool":
        t = carrier.reshape(shape) % 2 == 1
    return t.t() if draw(st.booleans()) and t.dim() == 2 else t


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**200), 2**200) | st.floats(allow_nan=True)
            | st.text(max_size=20))
_KEYS = st.text(max_size=8) | st.integers(-(2**70), 2**70)


def trees(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda kids: (st.lists(kids, max_size=4) | st.lists(kids, max_size=4).map(tuple)
                      | st.dictionaries(_KEYS, kids, max_size=4)),
        max_leaves=12,
    )


def _roundtrip(obj: Any, tmp_path: Path, **load_kw: Any) -> Any:
    path = tmp_path / "p.mpk"
    modelpack.save(obj, path)
    modelpack.verify(path)
    return modelpack.load(path, **load_kw)


@settings(max_examples=80, **_SETTINGS)
@given(obj=trees(_SCALARS | numpy_arrays() | numpy_scalars()), mmap=st.booleans())
def test_numpy_trees_roundtrip_exactly(tmp_path: Path, obj: Any, mmap: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = _roundtrip(obj, tmp_path, mmap=mmap)
    assert same(_contiguous(obj), back)


def _contiguous(obj: Any) -> Any:
    """What load returns for obj: arrays as C-order copies, everything else unchanged."""
    if isinstance(obj, np.ndarray):
        return np.ascontiguousarray(obj) if obj.ndim else obj.copy()
    if isinstance(obj, list):
        return [_contiguous(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_contiguous(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _contiguous(v) for k, v in obj.items()}
    if type(obj).__module__ == "torch":
        return obj.contiguous()
    return obj


@pytest.mark.skipif(not _TORCH, reason="torch is not installed")
@settings(max_examples=30, **_SETTINGS)
@given(data=st.data(), mmap=st.booleans())
def test_torch_trees_roundtrip_exactly(tmp_path: Path, data: st.DataObject, mmap: bool) -> None:
    obj = data.draw(trees(_SCALARS | torch_tensors() | numpy_arrays()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = _roundtrip(obj, tmp_path, mmap=mmap)
    assert same(_contiguous(obj), back)


@pytest.mark.skipif(not _TORCH, reason="torch is not installed")
@settings(max_examples=20, **_SETTINGS)
@given(t=torch_tensors())
def test_tied_tensors_stay_tied(tmp_path: Path, t: Any) -> None:
    assume(t.numel() > 0 and t.is_contiguous())
    back = _roundtrip({"a": t, "b": [t]}, tmp_path)
    assert back["a"] is back["b"][0] and same(t, back["a"])


# --------------------------------------------------------------------------- spec strategies


def _int_arg(draw: st.DrawFn, arg: Any, small: bool) -> int:
    lo = int(arg.minimum) if arg.minimum is not None else -3
    hi = int(arg.maximum) if arg.maximum is not None else lo + (6 if small else 64)
    return draw(st.integers(lo, min(hi, lo + (6 if small else 64))))


def _float_arg(draw: st.DrawFn, arg: Any) -> float:
    lo = arg.minimum if arg.minimum is not None else -10.0
    hi = arg.maximum if arg.maximum is not None else 10.0
    return draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


@st.composite
def arg_value(draw: st.DrawFn, arg: Any) -> Any:
    """A value the vocabulary row says is valid for ``arg`` (small sizes: specs get built)."""
    from modelpack.codec import DTYPES

    if arg.nullable and draw(st.booleans()):
        return None
    if arg.keywords and draw(st.booleans()):
        return draw(st.sampled_from(arg.keywords))
    kind = arg.type
    if arg.choices:
        return draw(st.sampled_from([c for c in arg.choices if c is not None or arg.nullable]))
    if kind == "int":
        return _int_arg(draw, arg, small=True)
    if kind == "float":
        return _float_arg(draw, arg)
    if kind == "bool":
        return draw(st.booleans())
    if kind == "dtype":
        return draw(st.sampled_from(list(DTYPES)))
    if kind in ("ints", "int_list", "floats"):
        one = (lambda: _float_arg(draw, arg)) if kind == "floats" else (lambda: _int_arg(draw, arg, small=True))
        if kind != "int_list" and draw(st.booleans()):
            return one()
        n = arg.length if arg.length is not None else draw(st.integers(1, 3))
        return [one() for _ in range(n)]
    if kind == "str":
        return draw(st.text(min_size=1, max_size=8))
    return [-1]  # "value" (reshape's shape): one safe literal


@st.composite
def single_node_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A spec with one layer or op node of any vocabulary entry, args drawn from its row."""
    from modelpack.vocab import LAYERS, OPS

    kind = draw(st.sampled_from(["layer", "op"]))
    table = LAYERS if kind == "layer" else OPS
    # the hand-written rows; the generated ATen rows have their own tests (tests/test_aten_vocab.py)
    name = draw(st.sampled_from(sorted(n for n, e in table.items() if e.impl != "aten")))
    entry = table[name]
    args = {a.name: draw(arg_value(a)) for a in entry.args if a.required or draw(st.booleans())}
    node: dict[str, Any] = {"name": "n", kind: name, "in": ["x"] * entry.inputs[0]}  # [] for sources (Buffer)
    if args:
        node["args"] = args
    spec = {"modelpack": 1, "inputs": {"x": {"shape": ["batch", 4], "dtype": "float32"}}, "nodes": [node],
            "outputs": ["n"]}
    return spec, name


def _json_text(spec: dict[str, Any]) -> bytes:
    """JSON text for ``spec`` that is also YAML: DEL and C1 controls (legal raw in JSON strings, refused
    raw by YAML) are written as \\u escapes, which decode to the same string."""
    text = json.dumps(spec, ensure_ascii=False)
    return re.sub("[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text).encode()


@pytest.mark.skipif(not _has("modelpack.spec.validate"), reason="modelpack.spec is not available")
@settings(max_examples=150, **_SETTINGS)
@given(case=single_node_specs())
def test_vocabulary_valid_args_validate_and_build(case: tuple[dict[str, Any], str]) -> None:
    """Args the vocabulary allows pass validation; building raises at most BuildError/LimitError."""
    from modelpack.spec import validate

    spec, name = case
    validate(spec)
    validate(_json_text(spec))  # the same document as text (see below)
    if not (_TORCH and _has("modelpack.torch.build")):
        return
    from modelpack.torch.build import build

    try:
        module = build(spec, device="meta")
    except (BuildError, LimitError):
        return  # torch refused a combination the table cannot express (e.g. groups vs channels)
    assert [n["name"] for n in module.spec["nodes"]] == ["n"]


@pytest.mark.skipif(not _has("modelpack.spec.validate"), reason="modelpack.spec is not available")
@pytest.mark.xfail(strict=True, reason="finding (issue 7): JSON text escaping a character outside the BMP as a "
                   "surrogate pair (json.dumps' default) is refused by the YAML reader ('invalid Unicode character "
                   "escape code'); fix: in spec/yamlio.py, decode JSON-style surrogate-pair escapes before parsing")
def test_json_text_with_escaped_astral_characters_validates() -> None:
    from modelpack.spec import validate

    spec = {"modelpack": 1, "name": "\U0001f600", "inputs": {"x": {"shape": ["batch", 4]}},
            "nodes": [{"name": "n", "op": "relu"}], "outputs": ["n"]}
    validate(json.dumps(spec).encode())


@st.composite
def mlp_specs(draw: st.DrawFn) -> tuple[dict[str, Any], int, int]:
    """A valid chain: Linear/LayerNorm/activations with residual adds, features kept consistent."""
    width = draw(st.integers(1, 6))
    first = width
    nodes: list[dict[str, Any]] = []
    last = "x"
    for i in range(draw(st.integers(1, 6))):
        choice = draw(st.sampled_from(["linear", "act", "norm", "residual", "dropout"]))
        name = f"n{i}"
        if choice == "linear":
            out = draw(st.integers(1, 6))
            nodes.append({"name": name, "layer": "Linear", "in": last,
                          "args": {"in_features": width, "out_features": out, "bias": draw(st.booleans())}})
            width = out
        elif choice == "act":
            nodes.append({"name": name, "op": draw(st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "silu"])),
                          "in": last})
        elif choice == "norm":
            nodes.append({"name": name, "layer": "LayerNorm", "in": last, "args": {"normalized_shape": width}})
        elif choice == "dropout":
            nodes.append({"name": name, "layer": "Dropout", "in": last, "args": {"p": 0.5}})
        else:
            nodes.append({"name": name, "op": "add", "in": [last, last]})
        last = name
    spec = {"modelpack": 1, "name": "mlp", "inputs": {"x": {"shape": ["batch", first]}}, "nodes": nodes,
            "outputs": [last]}
    return spec, first, width


@pytest.mark.skipif(not (_TORCH and _has("modelpack.torch.build")), reason="modelpack.torch.build is not available")
@settings(max_examples=20, **_SETTINGS)
@given(case=mlp_specs(), batch=st.integers(1, 3))
def test_generated_graphs_validate_build_and_run(case: tuple[dict[str, Any], int, int], batch: int) -> None:
    import torch

    from modelpack import validate
    from modelpack.torch.build import build

    spec, first, width = case
    validate(spec, shapes=True)
    model = build(spec).eval()
    out = model(torch.randn(batch, first))
    assert out.shape == (batch, width)


_SCHEMA: dict[str, Any] = {}
_STRATEGIES: dict[str, Any] = {}


def _arg_schemas() -> dict[str, Any]:
    """node kind.name -> the JSON Schema of its args, strict branch only (no {param}), from the committed file."""
    if not _SCHEMA:
        schema = json.loads((ROOT / "schemas" / "modelpack-spec.schema.json").read_text())
        for key, sub in schema["$defs"].items():
            text = json.dumps(sub)
            if not key.startswith(("layer.", "op.")) or "$defs/value" in text or "$defs/size" in text:  # recursive
                continue
            if key.startswith("op.aten."):  # generated ATen rows: tests/test_aten_vocab.py covers them
                continue
            props = {arg: {k: v for k, v in rule.get("anyOf", [rule])[0].items() if k != "default"}
                     for arg, rule in sub.get("properties", {}).items()}
            _SCHEMA[key] = {**sub, "properties": props}
    return _SCHEMA


def _ints_in(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [i for v in value for i in _ints_in(v)]
    return []


def _schema_spec(data: st.DataObject) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from hypothesis_jsonschema import from_schema

    from modelpack.vocab import LAYERS, OPS

    key = data.draw(st.sampled_from(sorted(_arg_schemas())))
    if key not in _STRATEGIES:  # from_schema canonicalises the schema: build each strategy once
        _STRATEGIES[key] = from_schema(_arg_schemas()[key])
    args = data.draw(_STRATEGIES[key])
    kind, name = key.split(".", 1)
    entry = (LAYERS if kind == "layer" else OPS)[name]
    node = {"name": "n", kind: name, "in": ["x"] * entry.inputs[0], "args": args}
    return key, args, {"modelpack": 1, "inputs": {"x": {"shape": ["batch", 4]}}, "nodes": [node], "outputs": ["n"]}


_NO_JSONSCHEMA = not (_has("hypothesis_jsonschema") and _has("modelpack.spec.validate"))


@pytest.mark.skipif(_NO_JSONSCHEMA, reason="hypothesis-jsonschema is not installed")
@settings(max_examples=60, **_SETTINGS)
@given(data=st.data())
def test_schema_generated_args_validate(data: st.DataObject) -> None:
    """Whatever the published schema accepts for a node's args, the validator accepts too (and the
    builder raises at most BuildError): the schema is not looser than the reader. Integers beyond
    int64 are left out here: see test_schema_bounds_integers_like_the_reader."""
    from modelpack.spec import validate

    key, args, spec = _schema_spec(data)
    assume(all(-(2**63) <= i < 2**63 for i in _ints_in(list(args.values()))))
    try:
        validate(spec)
    except ModelPackError as e:
        pytest.fail(f"the schema accepts {key} args {args!r} but validate refuses: {e}")
    if _TORCH and _has("modelpack.torch.build"):
        from modelpack.torch.build import build

        try:
            build(spec, device="meta")
        except (BuildError, LimitError):
            pass


@pytest.mark.xfail(strict=True, reason="finding (issue 7): the published schema has no int64 bounds on integers, "
                   "the reader refuses |n| >= 2**63; fix: emit minimum/maximum -2**63..2**63-1 in spec/schema.py")
def test_schema_bounds_integers_like_the_reader() -> None:
    import jsonschema

    schema = json.loads((ROOT / "schemas" / "modelpack-spec.schema.json").read_text())
    spec = {"modelpack": 1, "inputs": {"x": {"shape": ["batch", 4]}},
            "nodes": [{"name": "n", "layer": "AdaptiveAvgPool1d", "args": {"output_size": [2**63]}}],
            "outputs": ["n"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schema)
