"""`modelpack show` without a browser: the graph model, the page's text, the static SVG, the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from modelpack import api, tree
from modelpack.cli import main
from modelpack.errors import SpecError
from modelpack.show import graph_model, show
from modelpack.show.page import render_page
from modelpack.show.svg import render_svg, top_level

VENDOR = Path(__file__).resolve().parent.parent / "modelpack" / "show" / "vendor"

SPEC = """\
modelpack: 1
name: tiny
inputs:
  x: {shape: [batch, 3, 8, 8]}
blocks:
  unit:
    params: [c]
    inputs: [x]
    nodes:
      - {name: conv, layer: Conv2d, args: {in_channels: {param: c}, out_channels: {param: c}, kernel_size: 3, padding: 1}}
      - {name: act, op: relu}
      - {name: add, op: add, in: [act, x]}
    outputs: [add]
nodes:
  - {name: stem.conv, layer: Conv2d, args: {in_channels: 3, out_channels: 4, kernel_size: 1}}
  - {name: stage.0, block: unit, args: {c: 4}}
  - {name: stage.1, block: unit, args: {c: 4}}
  - {name: pool, op: mean, args: {dim: [2, 3]}}
  - {name: n, op: size, in: x, args: {dim: 0}}
  - {name: grow, op: expand, in: pool, args: {size: [{ref: n}, 4]}}
  - {name: head, layer: Linear, args: {in_features: 4, out_features: 2}}
outputs: {logits: head}
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def _by_name(model: dict) -> dict:
    return {n["name"]: n for n in model["nodes"]}


def test_hierarchy_is_one_group_per_module_path(spec_file: Path) -> None:
    model = graph_model(spec_file)
    groups = [g["name"] for g in model["groups"]]
    assert groups == ["stem", "stage", "stage.0", "stage.1"]
    parent = {g["name"]: (model["groups"][g["parent"]]["name"] if g["parent"] >= 0 else None) for g in model["groups"]}
    assert parent == {"stem": None, "stage": None, "stage.0": "stage", "stage.1": "stage"}
    nodes = _by_name(model)
    assert model["groups"][nodes["stage.1.conv"]["group"]]["name"] == "stage.1"
    assert nodes["head"]["group"] == nodes["x"]["group"] == -1
    assert [n["kind"] for n in model["nodes"]].count("output") == 1


def test_edges_follow_in_and_ref_arguments(spec_file: Path) -> None:
    model = graph_model(spec_file)
    names = [n["name"] for n in model["nodes"]]
    edges = {(names[a], names[b]) for a, b, _ in model["edges"]}
    assert {("stage.0.add", "stage.1.conv"), ("stage.1.act", "stage.1.add"), ("stage.0.add", "stage.1.add"),
            ("n", "grow"), ("pool", "grow"), ("x", "n"), ("head", "logits")} <= edges
    assert len(model["edges"]) == len(set(map(tuple, (e[:2] for e in model["edges"]))))


def test_spec_lines_point_at_the_node_and_the_block_instance(spec_file: Path) -> None:
    model = graph_model(spec_file)
    lines = SPEC.splitlines()
    nodes = _by_name(model)
    assert "name: head," in lines[nodes["head"]["line"] - 1]
    assert "name: conv," in lines[nodes["stage.1.conv"]["line"] - 1]  # where the block's node is written
    stage1 = next(g for g in model["groups"] if g["name"] == "stage.1")
    assert "name: stage.1," in lines[stage1["line"] - 1]  # where the block is instantiated
    assert model["source"] == str(spec_file)


def test_shapes_label_edges_with_torch(spec_file: Path) -> None:
    pytest.importorskip("torch")
    model = graph_model(spec_file)
    nodes = _by_name(model)
    assert model["shapes"] == "propagated"
    assert nodes["stage.0.conv"]["shape"] == "[batch, 4, 8, 8]"
    assert nodes["head"]["shape"] == "[batch, 2]"
    labels = {model["nodes"][a]["name"]: label for a, b, label in model["edges"]}
    assert labels["pool"] == "[batch, 4]"


def test_without_torch_only_the_declared_shapes_label_edges(spec_file: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "modelpack.torch.shapes", None)  # import fails as without torch
    monkeypatch.setitem(sys.modules, "modelpack.torch.build", None)
    model = graph_model(spec_file)
    assert model["shapes"].startswith("symbolic") and model["weights"].startswith("unknown")
    labelled = {model["nodes"][a]["name"]: label for a, b, label in model["edges"] if label}
    assert labelled == {"x": "[batch, 3, 8, 8]"}


def test_bare_spec_parameters_come_from_a_meta_build(spec_file: Path) -> None:
    pytest.importorskip("torch")
    model = graph_model(spec_file)
    conv = _by_name(model)["stage.0.conv"]
    assert {p["name"]: p["shape"] for p in conv["params"]} == {"weight": [4, 4, 3, 3], "bias": [4]}
    assert model["totals"]["params"] == (3 * 4 + 4) + 2 * (4 * 4 * 9 + 4) + (4 * 2 + 2)


def test_pack_parameters_come_from_the_manifest(tmp_path: Path, spec_file: Path) -> None:
    import numpy as np

    weights = {"stem.conv.weight": np.zeros((4, 3, 1, 1), np.float16), "stem.conv.bias": np.zeros(4, np.float16)}
    for i in (0, 1):
        weights[f"stage.{i}.conv.weight"] = np.zeros((4, 4, 3, 3), np.float32)
        weights[f"stage.{i}.conv.bias"] = np.zeros(4, np.float32)
    weights.update({"head.weight": np.zeros((2, 4), np.float32), "head.bias": np.zeros(2, np.float32)})
    path = tmp_path / "tiny.mpk"
    tree_json, leaves = tree.encode(weights)
    api.write_pack(path, tree_json, leaves, spec_text=SPEC, metadata={"license": "MIT"})
    model = graph_model(path)
    stem = _by_name(model)["stem.conv"]
    assert stem["params"][0] == {"name": "weight", "shape": [4, 3, 1, 1], "dtype": "float16", "numel": 12, "bytes": 24}
    assert model["totals"] == {"tensors": 8, "params": sum(a.size for a in weights.values()),
                               "bytes": sum(a.nbytes for a in weights.values())}
    assert model["metadata"] == {"license": "MIT"} and model["weights"] == "file"
    assert model["source"] == f"{path}:spec.yaml"


def test_a_pack_without_a_spec_is_refused_by_name(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "weights.mpk"
    api.save({"w": np.zeros(3)}, path)
    with pytest.raises(SpecError, match="no model spec"):
        graph_model(path)
    assert main(["show", str(path), "-o", str(tmp_path / "out.html")]) == 1
    assert not (tmp_path / "out.html").exists()


def test_an_invalid_spec_fails_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("out_features: 2", "out_features: -2"))
    with pytest.raises(SpecError, match=r"bad.yaml:\d+:\d+: .*out_features"):
        graph_model(bad)


# --------------------------------------------------------------------------- the page's text


HOSTILE = '</script><script>document.title="pwned"</script><!--'


def _page(spec_file: Path, tmp_path: Path) -> str:
    model = graph_model(spec_file)
    model["metadata"] = {"note": HOSTILE, "x\u2028y": "<b>&amp;"}
    return render_page(model)


def test_the_page_is_self_contained(spec_file: Path, tmp_path: Path) -> None:
    page = _page(spec_file, tmp_path)
    assert not re.search(r"<(?:link|img|iframe)\b|\bsrc\s*=|@import|url\(\s*['\"]?(?:https?:|//)", page, re.I)
    assert "sourceMappingURL" not in page
    assert "default-src 'none'" in page  # the browser refuses any request the page might make
    assert "Copyright (c) 2012-2014 Chris Pettitt" in page  # the vendored library's licence travels with it


def test_text_from_the_file_cannot_close_the_data_block(spec_file: Path, tmp_path: Path) -> None:
    page = _page(spec_file, tmp_path)
    assert page.count("</script>") == 3  # data, dagre, ours: none added by the hostile metadata
    data = re.search(r'<script type="application/json" id="mp-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["metadata"] == {"note": HOSTILE, "x\u2028y": "<b>&amp;"}


def test_non_finite_arguments_are_strict_json_on_the_page(tmp_path: Path) -> None:
    """JSON has no Infinity or NaN: a spec's ``-.inf`` pad value reaches the page as ``{"$float": "-inf"}``."""
    spec = tmp_path / "pad.yaml"
    spec.write_text("modelpack: 2\ninputs:\n  x: {shape: [1, 3]}\nnodes:\n"
                    "  - {name: pad, op: aten.constant_pad_nd, in: [x], args: {pad: [1, 1], value: -.inf}}\n"
                    "  - {name: fill, op: aten.full_like, in: [pad], args: {fill_value: .nan}}\n"
                    "outputs: [fill]\n")
    page = render_page(graph_model(spec))
    data = re.search(r'<script type="application/json" id="mp-data">(.*?)</script>', page, re.S).group(1)

    def refuse(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    args = {n["name"]: n["args"] for n in json.loads(data, parse_constant=refuse)["nodes"] if "args" in n}
    assert args["pad"]["value"] == {"$float": "-inf"} and args["fill"]["fill_value"] == {"$float": "nan"}


def test_vendored_dagre_matches_its_recorded_checksum() -> None:
    table = (VENDOR / "VERSIONS.md").read_text()
    digest = hashlib.sha256((VENDOR / "dagre.min.js").read_bytes()).hexdigest()
    assert re.search(rf"\| dagre\.min\.js \|.*\| 3\.1\.3 \| MIT.*\| {digest} \|", table)
    assert "Permission is hereby granted" in (VENDOR / "LICENSE-dagre").read_text()


# --------------------------------------------------------------------------- SVG and CLI


def test_svg_draws_the_top_level_with_modules_collapsed(spec_file: Path) -> None:
    model = graph_model(spec_file)
    items, edges = top_level(model)
    assert [i["lines"][0] for i in items] == ["input x", "stem", "stage", "mean", "size", "expand", "Linear",
                                                  "output logits"]
    assert items[2]["lines"][1] == "6 nodes"
    root = ET.fromstring(render_svg(model))  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(root.findall("s:g", ns)) == len(items)
    assert len(root.findall("s:path", ns)) == len(edges)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "[batch, 4, 8, 8]" in texts and "stage" in texts


def test_svg_escapes_names(spec_file: Path) -> None:
    model = graph_model(spec_file)
    model["name"] = "<&>"
    assert ET.fromstring(render_svg(model)).find("{http://www.w3.org/2000/svg}title").text == "<&>"


def test_cli_writes_html_and_svg(spec_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(spec_file)]) == 0
    assert capsys.readouterr().out == "wrote tiny.html\n"
    assert (tmp_path / "tiny.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["show", str(spec_file), "--format", "svg", "-o", "pic.svg"]) == 0
    assert (tmp_path / "pic.svg").read_text().startswith("<svg")
    assert main(["show", str(spec_file), "--format", "gif"]) == 2


def test_show_refuses_an_unknown_format(spec_file: Path) -> None:
    with pytest.raises(ValueError, match="format 'pdf' is not one of html, svg, png"):
        show(spec_file, format="pdf")


def test_importing_show_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, modelpack.show, modelpack.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
