"""The graph model behind ``modelpack show``: a .mpk or a spec -> plain JSON-able data.

Everything the page needs is computed here, once, in Python: nodes (inputs,
layers, ops, outputs) with their arguments, spec ``file:line`` and parameters;
edges labelled with shapes; and the module hierarchy read from the dotted node
names (``layer1.0.conv1`` sits in groups ``layer1`` and ``layer1.0``). Node kinds
are generic: any ``layer:`` or ``op:`` node is shown with its name and args, so
new vocabulary entries need no change here.

Shapes come from ``modelpack.torch.shapes.output_shapes`` when torch is
installed; without it only the declared (symbolic) input shapes label edges.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from ..codec import dtype_by_name, nbytes_of
from ..errors import FormatError, ModelPackError, SpecError
from ..spec import load_spec, validate
from ..spec.blocks import expand_with_origins
from ..spec.graph import walk_placeholders
from ..spec.yamlio import Path, Positions

__all__ = ["graph_model", "SPEC_SUFFIXES"]

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def graph_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The page's data for a model file (anything ``modelpack.open`` reads) or a bare spec file."""
    path = os.fspath(path)
    if path.lower().endswith(SPEC_SUFFIXES):
        return _model(load_spec(path), path, metadata={}, entries=None)
    from .. import api

    with api.open(path) as pack:
        if pack.spec_text is None:
            raise SpecError("this file holds tensors but no model spec; `modelpack inspect` lists them",
                            source=path)
        label = f"{path}:spec.yaml"
        spec = load_spec(pack.spec_text.encode("utf-8"), name=label)
        entries = {n: {"dtype": e["dtype"], "shape": list(e["shape"])} for n, e in pack.entries.items()}
        return _model(spec, path, metadata=pack.metadata, entries=entries)


def _model(spec: Any, path: str, *, metadata: Mapping[str, str],
           entries: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    data = validate(spec, source=spec.source)
    expanded, origins = expand_with_origins(data)
    shapes, how = _shapes(data)
    weights = "file" if entries is not None else "spec (built on the meta device)"
    if entries is None:
        entries = _meta_entries(expanded)
        weights = weights if entries else "unknown (torch not installed)"
    lines = {name: _line(spec.positions, o.path) for name, o in origins.items()}
    nodes, edges = _nodes_and_edges(expanded, shapes, lines)
    _attach_params(nodes, entries)
    groups = _groups(nodes, _block_lines(data, spec.positions))
    return {
        "name": data.get("name") or os.path.basename(path),
        "file": path,
        "source": spec.source,
        "metadata": dict(metadata),
        "inputs": data.get("inputs") or {},
        "outputs": _outputs(expanded["outputs"]),
        "shapes": how,
        "weights": weights,
        "totals": _totals(entries),
        "nodes": nodes,
        "edges": edges,
        "groups": groups,
    }


# --------------------------------------------------------------------------- shapes and tensors


def _shapes(data: dict[str, Any]) -> tuple[dict[str, str], str]:
    """node -> output shape text, and how the shapes were found (only declared input shapes without torch)."""
    try:
        from ..torch.shapes import output_shapes
    except ImportError:
        return {}, "symbolic (torch is not installed)"
    try:
        return output_shapes(data), "propagated"
    except Exception as e:  # noqa: BLE001 - shapes only label edges: a propagation bug must not cost the page
        why = f"{type(e).__name__}: {e}"
        warnings.warn(f"shapes not propagated ({why}); edges show the declared input shapes only", RuntimeWarning,
                      stacklevel=2)
        return {}, f"symbolic (propagation failed: {why})"


def _meta_entries(expanded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A bare spec's parameter shapes, from a build on the meta device (no memory); {} without torch."""
    try:
        from ..torch.build import build_validated, held_tensors
    except ImportError:
        return {}
    try:
        model = build_validated(expanded, device="meta")
    except ModelPackError:
        return {}
    return {k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
            for k, t in held_tensors(model).items()}


def _totals(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    numel = sum(nbytes_of(e["shape"], 1) for e in entries.values())
    nbytes = sum(_nbytes(e) for e in entries.values())
    return {"tensors": len(entries), "params": numel, "bytes": nbytes}


def _nbytes(entry: Mapping[str, Any]) -> int:
    try:
        itemsize = dtype_by_name(entry["dtype"]).itemsize
    except FormatError:  # a meta-built dtype the codec table does not list: size unknown
        return 0
    return nbytes_of(entry["shape"], itemsize)


def _attach_params(nodes: list[dict[str, Any]], entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Give each node the tensors below its name (longest node-name prefix wins)."""
    by_name = {n["name"]: n for n in nodes if n["kind"] in ("layer", "op")}
    for tensor, entry in entries.items():
        owner = _owner(tensor, by_name)
        if owner is not None:
            owner.setdefault("params", []).append({
                "name": tensor[len(owner["name"]) + 1:], "shape": entry["shape"], "dtype": entry["dtype"],
                "numel": nbytes_of(entry["shape"], 1), "bytes": _nbytes(entry)})


def _owner(tensor: str, by_name: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    parts = tensor.split(".")
    for k in range(len(parts) - 1, 0, -1):
        node = by_name.get(".".join(parts[:k]))
        if node is not None:
            return node
    return None


# --------------------------------------------------------------------------- nodes and edges


def _line(positions: Positions, path: Path) -> int | None:
    where = positions.locate(path)
    return where[0] if where else None


def _nodes_and_edges(expanded: dict[str, Any], shapes: Mapping[str, str],
                     lines: Mapping[str, int | None]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    nodes: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for name, decl in (expanded.get("inputs") or {}).items():
        index[name] = len(nodes)
        nodes.append({"name": name, "kind": "input", "type": "input", "shape": _shape_text(decl),
                      "dtype": decl.get("dtype", "float32")})
    edges: list[list[Any]] = []
    for node in expanded["nodes"]:
        kind = "layer" if "layer" in node else "op"
        me = len(nodes)
        item: dict[str, Any] = {"name": node["name"], "kind": kind, "type": node[kind],
                                "args": node.get("args") or {}, "line": lines.get(node["name"])}
        if node["name"] in shapes:
            item["shape"] = shapes[node["name"]]
        nodes.append(item)
        for src in _sources(node):
            if src in index:
                edges.append([index[src], me, nodes[index[src]].get("shape")])
        index[node["name"]] = me
    for key, src in _outputs(expanded["outputs"]):
        me = len(nodes)
        nodes.append({"name": key, "kind": "output", "type": "output", "of": src})
        if src in index:
            edges.append([index[src], me, nodes[index[src]].get("shape")])
    return nodes, edges


def _sources(node: Mapping[str, Any]) -> Iterator[str]:
    """What a node reads: its ``in`` list, then ``{ref: name}`` inside its arguments, each once."""
    seen: set[str] = set()
    refs = [name for _, name in walk_placeholders(node.get("args") or {}, "ref")]
    for name in list(node.get("in") or []) + refs:
        if name not in seen:
            seen.add(name)
            yield name


def _shape_text(decl: Mapping[str, Any]) -> str:
    return "[" + ", ".join(str(d) for d in decl.get("shape", [])) + "]"


def _outputs(given: Any) -> list[list[str]]:
    """[output name, node] pairs; a list of outputs names each output after its node."""
    if isinstance(given, dict):
        return [[k, v] for k, v in given.items()]
    return [[v, v] for v in given]


# --------------------------------------------------------------------------- hierarchy


def _block_lines(data: dict[str, Any], positions: Positions) -> dict[str, int | None]:
    """Module path -> the line of the block node that instantiated it (``layer1.0: block basic``)."""
    out: dict[str, int | None] = {}
    blocks = data.get("blocks") or {}

    def walk(nodes: list[dict[str, Any]], prefix: str, where: Path, top: bool) -> None:
        for i, node in enumerate(nodes):
            if "block" in node:
                # only the outermost instantiation has a line a reader can act on
                out[prefix + node["name"]] = _line(positions, where + ("nodes", i)) if top else None
                walk(blocks[node["block"]]["nodes"], prefix + node["name"] + ".",
                     ("blocks", node["block"]), False)

    walk(data["nodes"], "", (), True)
    return out


def _groups(nodes: list[dict[str, Any]], block_lines: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """One group per module path (every proper dotted prefix of a layer/op name), parents first.

    Each node gets ``group`` (its innermost group's index, -1 at the top); each
    group gets ``parent`` likewise. Inputs and outputs stay at the top.
    """
    groups: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for node in nodes:
        parent = -1
        if node["kind"] in ("layer", "op"):
            parts = node["name"].split(".")
            for k in range(1, len(parts)):
                path = ".".join(parts[:k])
                if path not in index:
                    index[path] = len(groups)
                    group: dict[str, Any] = {"name": path, "parent": parent}
                    if block_lines.get(path) is not None:
                        group["line"] = block_lines[path]
                    groups.append(group)
                parent = index[path]
        node["group"] = parent
    return groups
