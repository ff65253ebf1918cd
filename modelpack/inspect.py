"""What a .mpk holds, for people: ``modelpack inspect`` and ``modelpack verify``.

Both go through :class:`modelpack.api.Pack`, the same checked reader that
``load`` uses. Inspect never reads tensor data; verify reads all of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, TextIO

from . import api, tree
from ._dotted import DottedTree
from .codec import dtype_by_name, nbytes_of
from ._text import printable
from .errors import ModelPackError

__all__ = ["describe", "inspect_report", "verify_report"]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _tensor_rows(pack: api.Pack) -> list[dict[str, Any]]:
    rows = []
    for name, e in pack.entries.items():
        row = dtype_by_name(e["dtype"])
        rows.append({
            "name": name, "dtype": e["dtype"], "shape": e["shape"], "kind": e["kind"],
            "numel": nbytes_of(e["shape"], 1), "nbytes": nbytes_of(e["shape"], row.itemsize),
        })
    return rows


def _top_level(tree_json: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per top-level key of a dict tree: how many tensors and bytes lie below it."""
    size = {r["name"]: r["nbytes"] for r in rows}
    if isinstance(tree_json, dict) and not any(k.startswith("$") for k in tree_json):
        items = list(tree_json.items())
    elif isinstance(tree_json, dict) and "$dict" in tree_json and isinstance(tree_json["$dict"], list):
        items = [(str(k), v) for k, v in tree_json["$dict"]]
    else:
        return []
    out = []
    for key, sub in items:
        names = set(tree.iter_refs(sub))
        out.append({"key": key, "tensors": len(names), "nbytes": sum(size[n] for n in names)})
    return out


def describe(path: Any) -> dict[str, Any]:
    """A JSON-able summary of a .mpk: metadata, tensors, spec nodes, sizes."""
    with api.Pack(path) as pack:
        rows = _tensor_rows(pack)
        info: dict[str, Any] = {
            "file": pack.path,
            "file_bytes": pack.file_bytes,
            "format_version": pack.manifest["version"],
            "metadata": pack.metadata,
            "tensor_count": len(rows),
            "tensor_bytes": sum(r["nbytes"] for r in rows),
            "tensors": rows,
            "contents": _top_level(pack.manifest["tree"], rows),
        }
        if pack.spec_text is not None:
            info["model"] = _describe_model(pack, rows)
    return info


def _describe_model(pack: api.Pack, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from .spec import validate as validate_spec

    # bytes, never str: a one-line str is a *path* to validate, and the text comes from the file
    spec = validate_spec(pack.spec_text.encode("utf-8"), source=f"{pack.path}:spec.yaml")
    shapes = _output_shapes(spec)
    owned = _rows_by_node(spec["nodes"], rows)
    nodes = []
    for node in spec["nodes"]:
        mine = owned[node["name"]]
        nodes.append({
            "node": node["name"],
            "kind": node.get("layer") or node.get("op") or (f"block {node['block']}" if "block" in node else ""),
            "output_shape": shapes.get(node["name"]),
            "params": sum(r["numel"] for r in mine),
            "dtype": ",".join(sorted({r["dtype"] for r in mine})),
        })
    return {"name": spec.get("name"), "inputs": spec.get("inputs"), "outputs": spec.get("outputs"), "nodes": nodes}


def _rows_by_node(nodes: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Node name -> the tensor rows under it (``fc`` owns ``fc.weight``), in one pass over the rows."""
    names = DottedTree()
    owned: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        names.add(node["name"], owned.setdefault(node["name"], []))
    for row in rows:
        for _, mine in names.prefixes(row["name"]):  # a valid spec has no node under another node
            mine.append(row)
    return owned


def _output_shapes(spec: dict[str, Any]) -> dict[str, str]:
    """By rule when every node has one (no torch import: fast), else by running torch on the meta device."""
    from .spec import expand_blocks
    from .spec.shape_rules import rule_shapes

    shapes = rule_shapes(spec, expand_blocks(spec))
    if shapes is not None:
        return shapes
    try:
        from .torch.shapes import output_shapes
    except ImportError:
        return {}
    return output_shapes(spec)


def _printable(value: Any) -> str:
    """A table cell from the file: escaped by itself, so a newline in it cannot break the table's rows."""
    return printable(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    cells = [[str(c) for c in headers]] + [[("" if c is None else _printable(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _dcp_report(path: str, *, as_json: bool, out: TextIO) -> int:
    """A distributed checkpoint folder: its shards (one per rank) and its tensors with their chunks."""
    from .dcp._layout import describe_folder

    info = describe_folder(path)
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    version = f", DCP {_printable(info['dcp_version'])}" if info["dcp_version"] else ""
    out.write(f"{info['folder']}: distributed checkpoint, {len(info['shards'])} shards, "
              f"{_human(info['file_bytes'])}{version}\n\n")
    _table(["shard", "chunks", "size"], [[s["file"], s["chunks"], _human(s["file_bytes"])] for s in info["shards"]], out)
    out.write("\n")
    _table(["tensor", "dtype", "shape", "chunks", "shards", "size"],
           [[t["name"], t["dtype"], t["shape"], t["chunks"], t["shards"], _human(t["nbytes"])]
            for t in info["tensors"][:200]], out)
    if len(info["tensors"]) > 200:
        out.write(f"... {len(info['tensors']) - 200} more (use --json for all)\n")
    params = sum(t["numel"] for t in info["tensors"])
    out.write(f"\ntotal: {info['tensor_count']} tensors, {params:,} elements, {_human(info['tensor_bytes'])}; "
              f"{len(info['objects'])} non-tensor values\n")
    return 0


def inspect_report(path: str, *, as_json: bool, out: TextIO) -> int:
    """Print the summary of one file, or of a distributed checkpoint folder (``modelpack inspect``)."""
    from .dcp import is_dcp_folder

    if is_dcp_folder(path):
        return _dcp_report(path, as_json=as_json, out=out)
    info = describe(path)
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    out.write(f"{info['file']}: {_human(info['file_bytes'])}, format version {info['format_version']}\n")
    for k, v in info["metadata"].items():
        out.write(f"  {_printable(k)}: {_printable(v)}\n")
    if "model" in info:
        model = info["model"]
        out.write(f"\nmodel {model['name']!r}: inputs {json.dumps(model['inputs'])}, outputs {model['outputs']}\n")
        _table(["node", "layer/op", "output shape", "params", "dtype"],
               [[n["node"], n["kind"], n["output_shape"], f"{n['params']:,}", n["dtype"]] for n in model["nodes"]], out)
    elif info["contents"]:
        out.write("\n")
        _table(["key", "tensors", "size"],
               [[c["key"], c["tensors"], _human(c["nbytes"])] for c in info["contents"]], out)
    if "model" not in info:
        out.write("\n")
        _table(["tensor", "dtype", "shape", "size"],
               [[r["name"], r["dtype"], r["shape"], _human(r["nbytes"])] for r in info["tensors"][:200]], out)
        if len(info["tensors"]) > 200:
            out.write(f"... {len(info['tensors']) - 200} more (use --json for all)\n")
    params = sum(r["numel"] for r in info["tensors"])
    out.write(f"\ntotal: {info['tensor_count']} tensors, {params:,} elements, {_human(info['tensor_bytes'])}\n")
    return 0


def error_text(e: BaseException) -> str:
    """The one line every command prints for a failure: ``path: what`` (``x.mpk: No such file or directory``).

    OS errors on the user's path read alike in every verb, whichever call hit them.
    """
    if isinstance(e, OSError) and not isinstance(e, ModelPackError) and e.filename is not None:
        return f"{os.fsdecode(e.filename)}: {e.strerror or e}"
    return str(e)


def verify_report(paths: Sequence[str], *, out: TextIO) -> int:
    """Verify each file (``modelpack verify``); 0 if all are intact, 1 otherwise."""
    from .checks import verify

    status = 0
    for path in paths:
        try:
            verify(path)
        except (ModelPackError, OSError) as e:
            text = error_text(e)
            out.write(f"{path}: FAILED: {printable(text.removeprefix(f'{path}: '))}\n")
            status = 1
        else:
            out.write(f"{path}: OK\n")
    return status
