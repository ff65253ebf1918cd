"""Validation levels 1-3 through the public API: schema, graph, blocks, versions, shapes hook."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import modelpack
import modelpack.spec
from modelpack import limits
from modelpack.errors import ShapeError, SpecError
from modelpack.spec import expand_blocks, iter_errors, iter_findings, load_spec, validate
from modelpack.spec.graph import MAX_BLOCK_DEPTH
from modelpack.spec.migrations import migrate, supported_versions, version_problem
from modelpack.spec.names import MODULE_ATTRIBUTES

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "specs").glob("*.yaml"))

MLP = """\
modelpack: 1
name: mlp
inputs:
  x: {shape: [batch, 20], dtype: float32}
nodes:
  - {name: hidden, layer: Linear, args: {in_features: 20, out_features: 256}}
  - {name: act, op: relu}
  - {name: output, layer: Linear, args: {in_features: 256, out_features: 10}}
outputs: [output]
"""

HEADER = "modelpack: 1\ninputs:\n  x: {shape: [batch, 8]}\n"


def errors(text: str) -> list[str]:
    spec = load_spec(text)
    return [e.message for e in iter_errors(spec.data, spec.positions)]


def warnings_of(text: str) -> list[str]:
    spec = load_spec(text)
    return [f.error.message for f in iter_findings(spec.data, spec.positions) if f.severity == "warning"]


# --------------------------------------------------------------------------- valid specs


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_without_findings(path: Path) -> None:
    spec = load_spec(path)
    assert path.read_text().startswith("# yaml-language-server: $schema=../../schemas/modelpack-spec.schema.json\n")
    assert list(iter_findings(spec.data, spec.positions)) == []
    assert validate(path)["modelpack"] == 2  # version-1 examples are migrated on load


def test_validate_returns_the_data_and_accepts_dicts_and_json(tmp_path: Path) -> None:
    data = validate(MLP)
    assert [n["name"] for n in data["nodes"]] == ["hidden", "act", "output"]
    assert validate(data) == data
    path = tmp_path / "mlp.json"
    path.write_text(json.dumps(data, indent=2))
    assert validate(path) == data
    assert modelpack.validate(MLP) == data  # the same validation, with torch's shape checker on request


def test_expand_blocks_names_nodes_like_torchvision() -> None:
    flat = expand_blocks(validate(EXAMPLES[[p.name for p in EXAMPLES].index("resnet_small.yaml")]))
    names = [n["name"] for n in flat["nodes"]]
    assert "blocks" not in flat
    assert "layer2.0.downsample.0" in names and "layer3.1.bn2" in names
    by_name = {n["name"]: n for n in flat["nodes"]}
    assert by_name["layer1.0.conv1"]["in"] == ["relu"]
    assert by_name["layer1.0.residual"]["in"] == ["layer1.0.bn2", "relu"]  # block input x -> caller's value
    assert by_name["layer1.1.conv1"]["in"] == ["layer1.0.relu2"]  # block node -> its output
    assert by_name["layer2.0.conv1"]["args"]["out_channels"] == 32  # {param: out_channels}
    assert by_name["avgpool"]["in"] == ["layer3.1.relu2"]
    assert all(isinstance(n["in"], list) for n in flat["nodes"])
    assert expand_blocks(validate(EXAMPLES[3])) == expand_blocks(validate(EXAMPLES[3]))  # deterministic


def test_expand_without_blocks_only_makes_in_explicit() -> None:
    flat = expand_blocks(validate(MLP))
    assert [n["in"] for n in flat["nodes"]] == [["x"], ["hidden"], ["act"]]


NESTED = HEADER + """\
blocks:
  inner:
    params: [w]
    inputs: [a]
    nodes:
      - {name: fc, layer: Linear, args: {in_features: 8, out_features: {param: w}}}
    outputs: [fc]
  outer:
    params: [width]
    inputs: [a]
    nodes:
      - {name: first, block: inner, args: {w: 8}}
      - {name: second, block: inner, args: {w: {param: width}}}
      - {name: parts, op: chunk, args: {chunks: 2, dim: 1}, in: first}
      - {name: left, op: getitem, args: {index: 0}}
    outputs: [second, left]
nodes:
  - {name: enc, block: outer, args: {width: 8}}
  - {name: sum, op: add, in: [enc.second, enc.left]}
outputs: {y: sum}
"""


def test_nested_blocks_and_multi_output_blocks_expand() -> None:
    flat = expand_blocks(validate(NESTED))
    by_name = {n["name"]: n for n in flat["nodes"]}
    assert list(by_name) == ["enc.first.fc", "enc.second.fc", "enc.parts", "enc.left", "sum"]
    assert by_name["enc.second.fc"]["in"] == ["enc.first.fc"]
    assert by_name["enc.second.fc"]["args"]["out_features"] == 8
    assert by_name["sum"]["in"] == ["enc.second.fc", "enc.left"]
    assert flat["outputs"] == {"y": "sum"}


def test_refs_in_op_args_resolve_and_are_renamed() -> None:
    text = HEADER + """\
blocks:
  b:
    inputs: [a]
    nodes:
      - {name: flat, op: flatten, args: {start_dim: 1}}
      - {name: shaped, op: reshape, args: {shape: [{ref: flat}, -1]}, in: a}
    outputs: [shaped]
nodes:
  - {name: blk, block: b}
outputs: [blk]
"""
    flat = expand_blocks(validate(text))
    assert flat["nodes"][1]["args"]["shape"] == [{"ref": "blk.flat"}, -1]
    bad = text.replace("{ref: flat}", "{ref: nowhere}")
    assert any("unknown name 'nowhere'" in m for m in errors(bad))


# --------------------------------------------------------------------------- level 1: schema


def test_all_errors_are_reported_with_positions() -> None:
    text = MLP.replace("out_features: 256", "out_features: -1").replace("in_features: 256", "in_features: 2.5")
    text = text.replace("outputs: [output]", "outputs: [output]\nextra: 1")
    with pytest.raises(SpecError, match="-1 is less than the minimum of 1") as info:
        validate(text)
    errs = info.value.errors  # type: ignore[attr-defined]
    assert [(e.where, e.line) for e in errs] == [
        ("nodes[0].args.out_features", 6), ("nodes[2].args.in_features", 8), ("extra", 10)]
    assert "(and 2 more errors)" in str(info.value)
    assert str(errs[0]) == "<string>:6:73: nodes[0].args.out_features: -1 is less than the minimum of 1"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("layer: Linear, args: {in_features: 20,", "layer: Conv2d, args: {in_features: 20,",
         "unknown argument 'in_features' for Conv2d"),
        ("op: relu}", "op: relu, layer: ReLU}", "a node is exactly one kind: give only one of"),
        ("{name: act, op: relu}", "{name: act}", "a node needs one of 'layer', 'op' or 'block'"),
        ("op: relu}", "op: ReLU}", "'ReLU' is a layer, write `layer: ReLU`"),
        ("dtype: float32", "dtype: float31", "is not one of"),
        ("shape: [batch, 20]", "shape: [batch, -20]", "-20 is less than the minimum of 0"),
        ("shape: [batch, 20]", "shape: [2 batch, 20]", "not an identifier"),
        ("{name: act, op: relu}", "{name: act, op: softmax}", "missing argument 'dim' (softmax needs dim)"),
        ("{name: act, op: relu}", "{name: act, op: relu, args: {inplace: true}}", "unknown argument 'inplace'"),
        ("name: mlp", "name: 3", "3 is not of type 'string'"),
        ("outputs: [output]", "outputs: []", "should be non-empty"),
        ("{name: act, op: relu}", "{name: 'a b', op: relu}", "'a b' is not a valid node name"),
    ],
)
def test_schema_messages(old: str, new: str, message: str) -> None:
    assert old in MLP
    found = errors(MLP.replace(old, new))
    assert any(message in m for m in found), found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("{in_channels: 3, out_channels: 8, kernel_size: [3, 3, 3]}", "is too long"),
        ("{in_channels: 3, out_channels: 8, kernel_size: 3, padding: sam}", "'sam' is not one of 'same', 'valid'"),
        ("{in_channels: 3, out_channels: 8, kernel_size: 3, padding_mode: mirror}", "is not one of"),
        ("{in_channels: 3, out_channels: 8, kernel_size: [3, 0]}", "0 is less than the minimum of 1"),
    ],
)
def test_conv_argument_checks(args: str, message: str) -> None:
    text = HEADER + f"nodes:\n  - {{name: c, layer: Conv2d, args: {args}}}\noutputs: [c]\n"
    assert any(message in m for m in errors(text))


@pytest.mark.parametrize("padding", ["same", "valid", 1, "[1, 2]"])
def test_conv_padding_accepts_keywords_and_ints(padding: object) -> None:
    text = HEADER + f"nodes:\n  - {{name: c, layer: Conv2d, args: {{in_channels: 3, out_channels: 8, " \
                    f"kernel_size: 3, padding: {padding}}}}}\noutputs: [c]\n"
    assert errors(text) == []


def test_python_data_follows_the_reader_rules() -> None:
    data = validate(MLP)
    data["nodes"][0]["args"]["out_features"] = float("nan")
    with pytest.raises(SpecError, match=r"\.nan is not of type 'integer'; ints and sizes are finite"):
        validate(data)
    data["nodes"][0]["args"]["out_features"] = (1, 2)
    with pytest.raises(SpecError, match="tuple is not plain data"):
        validate(data)


# --------------------------------------------------------------------------- level 2: graph


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("- {name: a.__init__, op: relu}", "dunder name"),
        ("- {name: layer1.training, op: relu}", "would replace the nn.Module attribute 'training'"),
        ("- {name: a, op: relu}\n  - {name: a.b, op: relu}", "'a.b' would be a child of 'a'"),
        ("- {name: x, op: relu}", "duplicate name 'x': an input has it already"),
        ("- {name: a, op: add, in: [x, x, x]}", "add takes 2 inputs, node 'a' gives 3"),
        ("- {name: a, op: cat, in: []}", "cat takes 1 or more inputs, node 'a' gives 0"),
        ("- {name: g, layer: GRU, args: {input_size: 8, hidden_size: 8}}\n  - {name: a, op: getitem, args: "
         "{index: 2}}", "index 2 is out of range: 'g' produces 2 values"),
        ("- {name: c, op: chunk, args: {chunks: 2}}\n  - {name: a, op: relu}", "'c' produces several values"),
        ("- {name: a, layer: Linear, args: {in_features: {ref: x}, out_features: 2}}",
         "is not of type 'integer'"),
        ("- {name: a, op: reshape, args: {shape: [{param: p}]}}", "{param: ...} is allowed only inside blocks"),
        ("- {name: a, block: nope}", "unknown block 'nope'"),
    ],
)
def test_graph_errors(nodes: str, message: str) -> None:
    text = HEADER + f"nodes:\n  {nodes}\noutputs: [{'a' if 'name: a' in nodes else 'x'}]\n"
    found = errors(text)
    assert any(message in m for m in found), found


def test_first_node_needs_in_when_there_are_several_inputs() -> None:
    text = "modelpack: 1\ninputs:\n  a: {shape: [2]}\n  b: {shape: [2]}\nnodes:\n  - {name: s, op: add}\n" \
           "outputs: [s]\n"
    assert any("must say which inputs it reads" in m for m in errors(text))
    assert errors(text.replace("op: add}", "op: add, in: [a, b]}")) == []


def test_input_names_are_identifiers_and_not_keywords() -> None:
    text = "modelpack: 1\ninputs:\n  lambda: {shape: [2]}\nnodes:\n  - {name: s, op: relu}\noutputs: [s]\n"
    assert any("is a Python keyword" in m for m in errors(text))


def test_block_parameters_are_checked_where_given() -> None:
    text = NESTED.replace("{name: enc, block: outer, args: {width: 8}}",
                          "{name: enc, block: outer, args: {widht: 8}}")
    found = errors(text)
    assert any("block 'outer' needs parameter 'width'" in m for m in found)
    assert any("unknown parameter 'widht' for block 'outer'" in m for m in found)
    multi = NESTED.replace("in: [enc.second, enc.left]", "in: [enc, enc.left]")
    assert any("block node 'enc' has several outputs (second, left)" in m for m in errors(multi))


def test_block_depth_and_expanded_size_are_bounded() -> None:
    levels = MAX_BLOCK_DEPTH + 1
    blocks = "".join(
        f"  b{i}:\n    inputs: [a]\n    nodes:\n      - {{name: n, {'op: relu' if i == 0 else f'block: b{i - 1}'}}}\n"
        f"      - {{name: m, {'op: relu' if i == 0 else f'block: b{i - 1}'}}}\n    outputs: [m]\n"
        for i in range(levels))
    text = HEADER + f"blocks:\n{blocks}nodes:\n  - {{name: top, block: b{levels - 1}}}\noutputs: [top]\n"
    assert any(f"more than {MAX_BLOCK_DEPTH}" in m for m in errors(text))
    small = text.replace(f"block: b{levels - 1}}}", "block: b5}")
    with limits.raised(max_nodes=10):
        assert any("expands to 64 nodes, more than max_nodes=10" in m for m in errors(small))


def test_unused_nodes_inputs_blocks_and_params_are_warnings() -> None:
    text = "modelpack: 1\ninputs:\n  x: {shape: [2]}\n  y: {shape: [2]}\nblocks:\n  spare:\n    params: [k]\n" \
           "    inputs: [a]\n    nodes:\n      - {name: r, op: relu}\n    outputs: [r]\n" \
           "  used:\n    params: [k]\n    inputs: [a]\n    nodes:\n      - {name: r, op: relu}\n    outputs: [r]\n" \
           "nodes:\n  - {name: aux, layer: Linear, args: {in_features: 2, out_features: 2}, in: x}\n" \
           "  - {name: main, block: used, args: {k: 1}, in: x}\noutputs: [main]\n"
    assert errors(text) == []
    found = warnings_of(text)
    assert "input 'y' is never used" in found
    assert "node 'aux' does not contribute to any output" in found
    assert "block 'spare' is never used (its args are not checked)" in found
    assert "parameter 'k' is never used" in found
    validate(text)  # warnings do not fail validation


def test_module_attribute_list_matches_torch() -> None:
    nn = pytest.importorskip("torch.nn")
    names = {n for n in set(dir(nn.Module)) | set(vars(nn.Module())) if not n.startswith("__")}
    # torch's own attributes: transformers, once imported, patches nn.Module with `smart_apply`
    names = {n for n in names if (getattr(getattr(nn.Module, n, None), "__module__", None) or "torch").startswith("torch")}
    assert names <= MODULE_ATTRIBUTES, sorted(names - MODULE_ATTRIBUTES)


# --------------------------------------------------------------------------- versions and migrations


@pytest.mark.parametrize(
    ("version", "message"),
    [("3", "spec version 3 is newer than this modelpack supports (supported: 1, 2)"),
     ("0", "spec version 0 is not a known version"), ("'1'", "must be an integer, got '1'"),
     ("true", "must be an integer, got True"), ("1.0", "must be an integer")],
)
def test_unsupported_versions(version: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(MLP.replace("modelpack: 1", f"modelpack: {version}"))


def test_migrations_run_step_by_step_and_are_explicit() -> None:
    def v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in doc.items() if k != "name"}
        return {**out, "modelpack": 2, "renamed": doc["name"]}

    steps = {1: v1_to_v2}
    assert supported_versions(steps, current=2) == [1, 2]
    assert supported_versions() == [1, 2]
    doc = {"modelpack": 1, "name": "m"}
    assert migrate(doc, migrations=steps, current=2) == {"modelpack": 2, "renamed": "m"}
    assert doc == {"modelpack": 1, "name": "m"}  # the input is not modified
    assert version_problem({"modelpack": 0}, steps, 2) == "spec version 0 is not a known version (supported: 1, 2)"
    with pytest.raises(SpecError, match="newer than this modelpack"):
        migrate({"modelpack": 3}, migrations=steps, current=2)


# --------------------------------------------------------------------------- level 3: shapes hook


def test_version_1_documents_migrate_to_version_2() -> None:
    """The real step: version 2 only added rows, so a version-1 document is renumbered, nothing else."""
    assert MLP.startswith("modelpack: 1")
    assert validate(MLP)["modelpack"] == 2
    assert migrate({"modelpack": 1, "nodes": [1]}) == {"modelpack": 2, "nodes": [1]}


def test_shapes_are_skipped_with_a_warning_without_the_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelpack.torch.shapes", None)  # import fails
    with pytest.warns(RuntimeWarning, match="shapes: not checked"):
        modelpack.validate(MLP, shapes=True)


def test_shape_errors_come_back_located(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def check_shapes(spec: dict[str, Any]) -> Any:
        seen.append(spec)
        yield ShapeError("Linear expects in_features=256, got input [batch, 128]", where="output")

    fake = types.ModuleType("modelpack.torch.shapes")
    fake.check_shapes = check_shapes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelpack.torch.shapes", fake)
    modelpack.validate(MLP)  # not asked: not run
    assert seen == []
    with pytest.raises(ShapeError, match="node 'output': Linear expects in_features=256") as info:
        modelpack.validate(MLP, shapes=True)
    assert info.value.line == 8
    assert seen[0]["nodes"][2]["in"] == ["act"]  # the checker gets the expanded spec


def test_spec_package_imports_no_torch() -> None:
    code = ("import sys; from modelpack.spec import validate; validate('examples/specs/resnet_small.yaml'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_public_api() -> None:
    assert sorted(modelpack.spec.__all__) == sorted([
        "CURRENT_VERSION", "Spec", "Positions", "Finding", "load_spec", "parse_yaml", "validate", "check_spec",
        "iter_errors", "iter_findings", "expand_blocks", "schema_dict", "schema_text", "supported_versions"])
    signatures = {name: str(inspect.signature(getattr(modelpack.spec, name))) for name in (
        "load_spec", "validate", "iter_errors", "expand_blocks")}
    assert signatures == {
        "load_spec": "(source: 'str | os.PathLike[str] | bytes', *, name: 'str | None' = None) -> 'Spec'",
        "validate": "(spec: 'SpecInput', *, shapes: 'Shapes' = False, source: 'str | None' = None) -> 'dict[str, Any]'",
        "iter_errors": "(data: 'Any', positions: 'Positions | None' = None, *, source: 'str | None' = None) "
                       "-> 'Iterator[SpecError]'",
        "expand_blocks": "(spec: 'dict[str, Any]') -> 'dict[str, Any]'",
    }


# --------------------------------------------------------------------------- robustness

_TOKENS = ["x", "-1", "0", "[]", "{}", "null", "true", "2.5", "{ref: x}", "{param: p}", "[a, b]", "layer1.0",
           "relu", "Linear", "block: basic", "in: [x, x]", "'a.b'", "{param: channels}", "outputs: {a: b}",
           "blocks: {}", "__init__", "&a", "*a", "!!str"]


@pytest.mark.parametrize("seed", range(4))
def test_mutated_specs_fail_only_with_spec_errors(seed: int) -> None:
    """Random token swaps, deletions and duplications of real specs: a SpecError or a result, never a crash."""
    import random

    from modelpack.spec import check_spec

    rng = random.Random(seed)
    sources = [p.read_text() for p in EXAMPLES] + [
        p.read_text() for p in sorted((Path(__file__).parent / "data" / "specs" / "invalid").glob("*.yaml"))]
    for _ in range(150):
        lines = rng.choice(sources).split("\n")
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            words = lines[i].split(" ")
            roll = rng.random()
            if roll < 0.3 and len(lines) > 2:
                del lines[i]
            elif roll < 0.8:
                j = rng.randrange(len(words))
                words[j] = rng.choice(_TOKENS) + ("}" if words[j].endswith("}") else "")
                lines[i] = " ".join(words)
            else:
                lines.insert(i, lines[rng.randrange(len(lines))])
        try:
            check_spec("\n".join(lines))
        except SpecError:
            pass


# --------------------------------------------------------------------------- sizes (range constraints)

_SIZED = {"modelpack": 2, "inputs": {"x": {"shape": ["batch", "seq", 4]}},
          "nodes": [{"name": "y", "op": "relu", "in": ["x"]}], "outputs": ["y"]}


def test_sizes_bound_symbolic_input_sizes() -> None:
    validate({**_SIZED, "sizes": {"seq": {"min": 3, "max": 16}, "batch": {"max": 8}}})


@pytest.mark.parametrize("sizes, words", [
    ({"len": {"max": 4}}, r"size 'len' is not a symbolic size of any input \(they are: batch, seq\)"),
    ({"seq": {"min": 9, "max": 4}}, r"min 9 is above max 4"),
    ({"seq": {"max": -1}}, r"-1 is less than the minimum of 0"),
    ({"seq": {"most": 4}}, r"sizes.seq.most: unknown key 'most' \(allowed: min, max\)"),
    ({"seq": {}}, r"sizes.seq: {} should be non-empty"),
])
def test_bad_sizes_are_spec_errors_naming_them(sizes: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        validate({**_SIZED, "sizes": sizes})
