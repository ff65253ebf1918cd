"""The spec layer: hostile YAML/JSON specs, alone and as the spec.yaml member of a .mpk.

Each case edits one valid spec and names the SpecError's words, its ``where`` (spec path) and the
YAML line. Everything runs under the guards: a spec can never make modelpack import a name,
fetch a ``$ref``, open a file or start a process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import api, inspect, limits
from modelpack.errors import LimitError, ModelPackError, SpecError, WeightsMismatchError

from .guards import ANY, guarded, write
from .mpkcraft import mpk

pytestmark = pytest.mark.skipif(importlib.util.find_spec("modelpack.spec.validate") is None,
                                reason="modelpack.spec is not available")
_TORCH = importlib.util.find_spec("torch") is not None


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


BASE = """modelpack: 1
inputs:
  x: {shape: [batch, 20], dtype: float32}
nodes:
  - {name: hidden, layer: Linear, args: {in_features: 20, out_features: 4}}
  - {name: act, op: relu}
outputs: [act]
"""


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def add(text: str, before: str = "") -> str:
    return before + BASE + text


ARG = "in_features: 20"
IN_F = "nodes[0].args.in_features"

# (id, spec text or bytes, message words, where, line)
CASES: list[tuple[str, str | bytes, str, str | None, int | None]] = [
    # ---- aliases, tags, nesting, documents
    ("alias", edit(ARG, "in_features: &a 20").replace("out_features: 4", "out_features: *a"),
     "anchors and aliases", IN_F, 5),
    ("billion-laughs", "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" + BASE, "anchors and aliases", "a", 1),
    ("recursive-alias", "a: &a [*a]\n" + BASE, "anchors and aliases", "a", 1),
    ("merge-key", add("metadata:\n  <<: {a: b}\n"), "merge keys", "metadata", 9),
    *[(f"tag-{i}", edit(ARG, f"in_features: {tag}"), "is not allowed", IN_F, 5) for i, tag in enumerate([
        "!!python/object/apply:os.system ['id']", "!!python/name:os.system", "!!python/module:os",
        "!!python/object/new:type ['z', [], {}]", "!!binary aGVsbG8=", "!!set {a}", "!!timestamp 2024-01-01",
        "!!omap [a: 1]", "!!pairs [a: 1]", "!foo bar", "!<tag:yaml.org,2002:python/tuple> [1]",
    ])],
    ("tag-directive", "%TAG !e! tag:example.com,2000:\n---\nx: !e!foo bar\n" + BASE, "is not allowed", "x", 3),
    ("deep-flow", "x: " + "[" * 5000 + "]" * 5000 + "\n" + BASE, "nesting deeper than max_depth", ANY, 1),
    ("deep-block", "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v\n",
     "nesting deeper than max_depth", ANY, ANY),
    ("second-document", BASE + "---\n" + BASE, "one YAML document", ANY, 8),
    ("empty-second-document", BASE + "---\n", "one YAML document", ANY, 8),
    # ---- keys
    ("duplicate-key", BASE + "outputs: [hidden]\n", "duplicate key 'outputs'", "outputs", 8),
    ("duplicate-arg", edit(ARG, "in_features: 20, in_features: 21"), "duplicate key", IN_F, 5),
    *[(f"key-{i}", add(f"{k}: x\n"), "mapping keys must be", ANY, 8)
      for i, k in enumerate(["1", "true", "null", "1.5", "? [a, b]\n", "? {a: 1}\n"])],
    # ---- YAML 1.1 scalars, numbers
    ("yes-as-bool", edit("out_features: 4", "out_features: 4, bias: yes"), "write true or false",
     "nodes[0].args.bias", 5),
    ("off-as-bool", edit("out_features: 4", "out_features: 4, bias: off"), "write true or false",
     "nodes[0].args.bias", 5),
    *[(f"int-{i}", edit(ARG, f"in_features: {v}"), "integers are plain decimal", IN_F, 5)
      for i, v in enumerate(["010", "0x14", "0o24", "2_0", "0:20"])],
    ("int-binary", edit(ARG, "in_features: 0b10100"), "is not of type 'integer'", IN_F, 5),
    ("integral-float", edit(ARG, "in_features: 20.0"), "write 20", IN_F, 5),
    ("exponent-float", edit(ARG, "in_features: 2e1"), "is not of type 'integer'", IN_F, 5),
    ("bool-as-int", edit(ARG, "in_features: true"), "is not of type 'integer'", IN_F, 5),
    ("int-above-int64", edit(ARG, "in_features: 9223372036854775808"), "does not fit in 64 bits", IN_F, 5),
    ("int-5000-digits", edit(ARG, "in_features: " + "9" * 5000), "does not fit in 64 bits", IN_F, 5),
    *[(f"nonfinite-{i}", edit(ARG, f"in_features: {v}"), "is not of type 'integer'; ints and sizes are finite",
       IN_F, 5) for i, v in enumerate([".nan", ".inf", "-.inf", ".NaN", "!!float .inf"])],
    *[(f"float-overflow-{i}", edit(ARG, f"in_features: {v}"), "does not fit in a 64-bit float", IN_F, 5)
      for i, v in enumerate(["1e999", "-1e999"])],
    ("float-tag-nan-word", edit(ARG, "in_features: !!float nan"), "is not a valid !!float", IN_F, 5),
    ("json-nan", '{"modelpack": NaN}', "NaN is not a YAML number", "modelpack", 1),
    ("json-infinity", '{"modelpack": 1, "x": Infinity}', "Infinity is not a YAML number", "x", 1),
    ("json-duplicate", '{"modelpack": 1, "modelpack": 1}', "duplicate key", "modelpack", 1),
    # ---- encodings
    ("utf16-bom", BASE.encode("utf-16"), "not UTF-8", None, None),
    ("utf32-bom", BASE.encode("utf-32"), "not UTF-8", None, None),
    ("utf16-no-bom", BASE.encode("utf-16-le"), "control characters", None, 1),
    ("invalid-utf8", BASE.encode() + b"name: \xff\xfe\n", "not UTF-8", None, None),
    ("overlong-utf8", BASE.encode() + b"name: \xc0\xaf\n", "not UTF-8", None, None),
    ("lone-surrogate-escape", BASE + 'name: "\\ud800"\n', "", ANY, 8),
    ("nul-byte", BASE.encode() + b"name: a\x00b\n", "control characters", None, 8),
    # ---- top level, versions
    ("unknown-top-key", BASE + "evil: 1\n", "unknown key 'evil'", "evil", 8),
    ("future-version", edit("modelpack: 1", "modelpack: 3"), "newer than this modelpack supports", "modelpack", 1),
    ("version-0", edit("modelpack: 1", "modelpack: 0"), "not a known version", "modelpack", 1),
    ("version-string", edit("modelpack: 1", "modelpack: '1'"), "must be an integer", "modelpack", 1),
    ("version-float", edit("modelpack: 1", "modelpack: 1.0"), "must be an integer", "modelpack", 1),
    ("version-huge", edit("modelpack: 1", "modelpack: 99999999999999999999"), "64 bits", "modelpack", 1),
    ("no-version", BASE.replace("modelpack: 1\n", ""), "modelpack", ANY, ANY),
    ("not-a-mapping", "[1, 2]\n", "is not of type 'object'", None, None),
    ("null-document", "null\n", "is not of type 'object'", None, None),
    # ---- remote references and schema keywords: data, never fetched
    ("ref-top", BASE + "$ref: http://example.invalid/x.json\n", "unknown key '$ref'", "['$ref']", 8),
    ("ref-node", edit("{name: hidden,", "{$ref: 'http://example.invalid/n.json', name: hidden,"),
     "unknown key '$ref'", "nodes[0]['$ref']", 5),
    ("ref-args", edit(ARG, "$ref: 'file:///etc/passwd', in_features: 20"), "unknown argument '$ref'",
     "nodes[0].args['$ref']", 5),
    ("schema-key", "$schema: http://example.invalid/s.json\n" + BASE, "unknown key '$schema'", "['$schema']", 1),
    ("id-key", "$id: http://example.invalid/s.json\n" + BASE, "unknown key '$id'", "['$id']", 1),
    # ---- names that look like code
    *[(f"layer-{i}", edit("layer: Linear", f"layer: {n}"), "unknown layer", "nodes[0].layer", 5)
      for i, n in enumerate(["os.system", "__import__", "torch.nn.Linear", "nn.Linear", "Module", "Sequential",
                             "linear", "eval", "'Linear '", "builtins.exec", "torch.load", "__class__"])],
    *[(f"op-{i}", edit("op: relu", f"op: {n}"), "unknown op", "nodes[1].op", 6)
      for i, n in enumerate(["eval", "exec", "getattr", "torch.load", "os.system", "__reduce__", "F.relu",
                             "torch.relu", "operator.getitem", "subprocess.run", "[relu]", "{relu: 1}"])],
    # ---- fields that would carry code, paths or URLs
    *[(f"node-field-{k}", edit("{name: act, op: relu}", f"{{name: act, op: relu, {k}: {v}}}"),
       f"unknown key '{k}'", f"nodes[1].{k}", 6) for k, v in [
        ("code", "'lambda x: x'"), ("_target_", "os.system"), ("forward", "x"), ("module", "torch.nn"),
        ("class_name", "Linear"), ("source", "'import os'"), ("weights", "/etc/passwd"), ("url", "'http://x'"),
        ("path", "../../x.pt"), ("init", "'file:///dev/zero'"),
    ]],
    *[(f"ctor-kwarg-{k}", edit(ARG, f"{ARG}, {k}: {v}"), f"unknown argument '{k}'", f"nodes[0].args.{k}", 5)
      for k, v in [("device", "cuda"), ("dtype", "float64"), ("__class__", "x"), ("_parameters", "{}"),
                   ("factory_kwargs", "{device: cuda}"), ("weights", "/etc/passwd"), ("pretrained", "true"),
                   ("url", "'http://x'"), ("__dict__", "{}"), ("self", "1")]],
    ("input-field-path", edit("dtype: float32}", "dtype: float32, path: /etc/passwd}"), "unknown key 'path'",
     "inputs.x.path", 3),
    ("input-dtype-name", edit("dtype: float32", "dtype: torch.load"), "is not one of", "inputs.x.dtype", 3),
    ("layer-arg-ref", edit(ARG, "in_features: {ref: x}"), "is not of type 'integer'", IN_F, 5),
    # ---- graph: cycles, dangling references
    ("cycle", edit("{name: hidden, layer", "{name: hidden, in: act, layer").replace(
        "{name: act, op: relu}", "{name: act, op: relu, in: hidden}"), "is defined later", "nodes[0].in", 5),
    ("self-loop", edit("{name: act, op: relu}", "{name: act, op: relu, in: act}"), "reads itself",
     "nodes[1].in", 6),
    ("dangling-in", edit("{name: act, op: relu}", "{name: act, op: relu, in: nowhere}"), "unknown name 'nowhere'",
     "nodes[1].in", 6),
    ("dangling-output", edit("outputs: [act]", "outputs: [nowhere]"), "unknown name 'nowhere'", "outputs[0]", 7),
    ("dangling-arg-ref", edit("{name: act, op: relu}", "{name: act, op: reshape, args: {shape: [{ref: nowhere}, -1]}}"),
     "unknown name 'nowhere'", "nodes[1].args.shape[0]", 6),
    # ---- names that shadow module attributes, dunders, traversal
    *[(f"name-{i}", edit("name: hidden", f"name: {n}"), words, "nodes[0].name", 5) for i, (n, words) in enumerate([
        ("forward", "nn.Module attribute 'forward'"), ("training", "nn.Module attribute 'training'"),
        ("state_dict", "nn.Module attribute 'state_dict'"), ("a.forward", "nn.Module attribute 'forward'"),
        ("_modules", "nn.Module attribute '_modules'"), ("to", "nn.Module attribute 'to'"),
        ("__init__", "dunder"), ("a.__dict__", "dunder"), ("a..b", "not a valid node name"),
        ("../x", "not a valid node name"), ("'a/b'", "not a valid node name"), ("'a b'", "not a valid node name"),
        ("a" * 600, "more than max_name_length"), ("x", "an input has it already"),
    ])],
    ("input-keyword", edit("x: {shape", "class: {shape"), "Python keyword", "inputs.class", 3),
]


@pytest.mark.parametrize("text, words, where, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_spec_is_refused(text: str | bytes, words: str, where: str | None, line: int | None) -> None:
    from modelpack.spec import validate

    source = text if isinstance(text, bytes) else text.encode()
    with guarded(), pytest.raises(SpecError) as info:
        validate(source)
    err = info.value
    assert words in str(err), str(err)
    if where != ANY:
        assert err.where == where, (err.where, str(err))
    if line != ANY:
        assert err.line == line, (err.line, str(err))


def test_base_spec_is_valid() -> None:
    from modelpack.spec import validate

    with guarded():
        assert validate(BASE.encode())["nodes"][0]["layer"] == "Linear"


# A sample of the cases, stored as the spec.yaml member of a .mpk: every spec-reading verb refuses.
IN_PACK = ["billion-laughs", "tag-0", "tag-1", "deep-flow", "second-document", "yes-as-bool", "nonfinite-0",
           "utf16-bom", "invalid-utf8", "future-version", "ref-top", "layer-0", "op-2", "node-field-_target_",
           "ctor-kwarg-device", "cycle", "dangling-in", "name-0", "name-7"]


def _spec_readers() -> dict[str, Callable[[Path], Any]]:
    readers: dict[str, Callable[[Path], Any]] = {"verify": api.verify, "describe": inspect.describe}
    if _TORCH and _has("modelpack.torch.load"):
        from modelpack.torch.load import load_model

        readers["load_model"] = load_model
    return readers


@pytest.mark.parametrize("case", IN_PACK)
def test_hostile_spec_inside_a_pack(tmp_path: Path, case: str) -> None:
    text = dict((c[0], c[1]) for c in CASES)[case]
    data = text if isinstance(text, bytes) else text.encode()
    path = write(tmp_path, mpk(tensors={}, spec=data).bytes())
    for name, reader in _spec_readers().items():
        with guarded(tmp_path), pytest.raises((SpecError, ModelPackError)) as info:
            reader(path)
        assert isinstance(info.value, (SpecError, ModelPackError)), name
        if isinstance(info.value, SpecError) and info.value.source:
            assert "spec.yaml" in info.value.source or str(path) in info.value.source


def test_spec_member_that_is_not_utf8_is_refused_on_open(tmp_path: Path) -> None:
    path = write(tmp_path, mpk(tensors={}, spec=b"\xff\xfe").bytes())
    with guarded(tmp_path), pytest.raises(ModelPackError, match="spec is not valid UTF-8"):
        api.Pack(path)


# --------------------------------------------------------------------------- caps of the spec layer


def test_spec_size_cap(tmp_path: Path) -> None:
    from modelpack.spec import validate

    with limits.raised(max_spec_bytes=100), guarded(), pytest.raises(SpecError, match="max_spec_bytes=100"):
        validate(BASE.encode())
    with limits.raised(max_spec_bytes=100):
        path = write(tmp_path, mpk(tensors={}, spec=BASE.encode()).bytes())
        with guarded(tmp_path), pytest.raises(LimitError, match="max_spec_bytes"):
            api.Pack(path)


def test_node_cap_and_block_expansion_bomb() -> None:
    from modelpack.spec import validate

    bomb = "modelpack: 1\ninputs:\n  x: {shape: [1, 4]}\nblocks:\n  b0:\n    inputs: [x]\n    nodes:\n" \
           "      - {name: r, op: relu}\n    outputs: [r]\n"
    for i in range(1, 7):  # 10**6 nodes once expanded, in a 2 KB file
        bomb += f"  b{i}:\n    inputs: [x]\n    nodes:\n" + "".join(
            f"      - {{name: n{j}, block: b{i - 1}}}\n" for j in range(10)) + "    outputs: [n9]\n"
    bomb += "nodes:\n  - {name: top, block: b6}\noutputs: [top]\n"
    with guarded(), pytest.raises(SpecError, match="max_nodes"):
        validate(bomb.encode())
    with limits.raised(max_nodes=1), guarded(), pytest.raises(SpecError, match="max_nodes=1"):
        validate(BASE.encode())


@pytest.mark.skipif(not (_TORCH and _has("modelpack.torch.build")), reason="modelpack.torch.build is not available")
def test_giant_layer_is_refused_before_allocation() -> None:
    """Parameter bytes are counted on the meta device first: 16 TiB is refused, nothing allocated."""
    from modelpack.torch.build import build

    giant = edit("{name: hidden, layer: Linear, args: {in_features: 20, out_features: 4}}",
                 "{name: hidden, layer: Embedding, args: {num_embeddings: 1073741824, embedding_dim: 4096}}")
    giant = giant.replace("dtype: float32", "dtype: int64")
    with guarded(), pytest.raises(LimitError, match="max_param_bytes"):
        build(giant)
    overflow = edit("in_features: 20, out_features: 4", "in_features: 4000000000, out_features: 4000000000")
    with guarded(), pytest.raises(LimitError, match="max_param_bytes"):  # counted in closed form, never built
        build(overflow)
    with limits.raised(max_param_bytes=100), guarded(), pytest.raises(LimitError, match="max_param_bytes=100"):
        build(BASE)
    with guarded():
        assert build(BASE).hidden.weight.shape == (4, 20)


@pytest.mark.skipif(not (_TORCH and _has("modelpack.torch.load")), reason="modelpack.torch.load is not available")
def test_spec_declaring_more_than_the_file_holds(tmp_path: Path) -> None:
    """load_model compares the spec's parameters with the manifest before touching a byte."""
    from modelpack.torch.load import load_model

    giant = edit("in_features: 20, out_features: 4", "in_features: 20, out_features: 400000000")
    tensors = {"hidden.weight": np.zeros((4, 20), np.float32), "hidden.bias": np.zeros(4, np.float32)}
    path = write(tmp_path, mpk(tensors, spec=giant.encode()).bytes())
    with guarded(tmp_path), pytest.raises(WeightsMismatchError, match="hidden.weight: expected"):
        load_model(path)
    ok = write(tmp_path, mpk(tensors, spec=BASE.encode()).bytes(), "ok.mpk")
    with guarded(tmp_path):
        assert load_model(ok).hidden.weight.shape == (4, 20)


@pytest.mark.skipif(not (_TORCH and _has("modelpack.torch.shapes")), reason="modelpack.torch.shapes is not available")
def test_input_shape_too_big_for_torch(tmp_path: Path) -> None:
    """Found here: torch.empty on the meta device raised a raw RuntimeError from inspect and validate."""
    from modelpack import validate

    huge = edit("shape: [batch, 20]", "shape: [9223372036854775807, 20]")
    with guarded(), pytest.raises(SpecError, match="declared inputs cannot be created"):
        validate(huge.encode(), shapes=True)
    path = write(tmp_path, mpk(tensors={}, spec=huge.replace("""  - {name: hidden, layer: Linear, args: {in_features: 20, out_features: 4}}
""", "").encode()).bytes())
    with guarded(tmp_path):
        info = inspect.describe(path)
    assert info["model"]["nodes"][0]["output_shape"] is None


def _one_line_spec_cases(tmp_path: Path) -> list[tuple[str, bytes]]:
    """spec.yaml members that are one line naming another file: must be read as YAML text."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "evil.yaml").write_text(BASE)
    import os

    os.mkfifo(other / "pipe.yaml")
    return [("file", str(other / "evil.yaml").encode()), ("fifo", str(other / "pipe.yaml").encode()),
            ("etc", b"/etc/hostname"), ("relative", b"../elsewhere/evil.yaml")]


@pytest.mark.budget(20)
def test_one_line_spec_member_is_text_not_a_path(tmp_path: Path) -> None:
    """Found by fuzz_validate: verify/describe/load_model passed the member's text as a str, and a str
    without a newline is a *path* to modelpack.spec.validate, so a file could make modelpack open
    (or hang on) any file named in its spec.yaml, and validate that file's spec instead of its own."""
    folder = tmp_path / "pack"
    folder.mkdir()
    for label, member in _one_line_spec_cases(tmp_path):
        path = write(folder, mpk(tensors={}, spec=member).bytes(), f"{label}.mpk")
        for name, reader in _spec_readers().items():
            with guarded(folder), pytest.raises(ModelPackError) as info:
                reader(path)
            assert "No such file" not in str(info.value), (label, name, str(info.value))
        if _has("modelpack.diff"):
            import io

            from modelpack.diff import diff_report

            ok = write(folder, mpk(tensors={}, spec=BASE.encode()).bytes(), "ok.mpk")
            with guarded(folder):
                diff_report(path, ok, atol=0.0, out=io.StringIO())
