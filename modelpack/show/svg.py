"""A static SVG of the top-level view (every module collapsed), without a browser.

The page lays out with dagre; this file is for READMEs and papers, where a
picture of the top level is enough, so it uses a small layered (Sugiyama-style)
layout of its own: ranks by longest path in file order (an edge pointing back,
possible once modules are collapsed, is ignored for ranking), a few barycentre
sweeps to reduce crossings, rows centred, edges as cubic curves labelled with
the shape they carry.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

__all__ = ["render_svg", "top_level"]

_CH, _ROW, _GAP, _H = 6.4, 62, 18, 36
_STYLE = """
text { font: 11px system-ui, -apple-system, 'Segoe UI', sans-serif; fill: #1d2430; }
.t { font-weight: 600; } .n { fill: #5b6575; font-size: 10px; } .e { font-size: 9.5px; fill: #6a7484; }
.layer { fill: #e9f0fb; stroke: #7a98c9; } .op { fill: #f3f4f6; stroke: #9aa3b0; }
.input, .output { fill: #fff6df; stroke: #c9a24a; } .group { fill: #dfe7f5; stroke: #5f7fb8; }
path { fill: none; stroke: #8c96a5; stroke-width: 1.1; }
"""


def top_level(model: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[int, int, str | None]]]:
    """The top-level boxes (nodes and outermost modules, file order) and the edges between them."""
    groups, nodes = model["groups"], model["nodes"]
    items: list[dict[str, Any]] = []
    where: dict[tuple[str, int], int] = {}
    of_node: list[int] = []
    for i, node in enumerate(nodes):
        g = node["group"]
        while g >= 0 and groups[g]["parent"] >= 0:
            g = groups[g]["parent"]
        key = ("g", g) if g >= 0 else ("n", i)
        if key not in where:
            where[key] = len(items)
            items.append(_box_of_group(model, g) if g >= 0 else _box_of_node(node))
        of_node.append(where[key])
    for g, item in enumerate(items):
        item["index"] = g
    edges: dict[tuple[int, int], str | None] = {}
    for src, dst, label in model["edges"]:
        a, b = of_node[src], of_node[dst]
        if a != b:
            edges[(a, b)] = label if edges.get((a, b), label) == label else None
    return items, [(a, b, label) for (a, b), label in edges.items()]


def _box_of_node(node: dict[str, Any]) -> dict[str, Any]:
    if node["kind"] in ("input", "output"):
        return {"kind": node["kind"], "lines": [f"{node['kind']} {node['name']}", node.get("shape", "")]}
    return {"kind": node["kind"], "lines": [node["type"], node["name"]]}


def _box_of_group(model: dict[str, Any], g: int) -> dict[str, Any]:
    name = model["groups"][g]["name"]
    count = sum(1 for n in model["nodes"] if n["name"].startswith(name + ".") and n["kind"] in ("layer", "op"))
    return {"kind": "group", "lines": [name, f"{count} nodes"]}


def _ranks(n: int, edges: list[tuple[int, int, str | None]]) -> list[int]:
    rank = [0] * n
    for a, b, _ in sorted(edges, key=lambda e: e[1]):
        if a < b:
            rank[b] = max(rank[b], rank[a] + 1)
    return rank


def _order(rank: list[int], edges: list[tuple[int, int, str | None]]) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(max(rank, default=0) + 1)]
    for i, r in enumerate(rank):
        rows[r].append(i)
    preds: dict[int, list[int]] = {}
    succs: dict[int, list[int]] = {}
    for a, b, _ in edges:
        preds.setdefault(b, []).append(a)
        succs.setdefault(a, []).append(b)
    for sweep in range(4):
        nbrs = preds if sweep % 2 == 0 else succs
        pos = {i: k for row in rows for k, i in enumerate(row)}
        for row in rows:
            row.sort(key=lambda i: sum(pos[j] for j in nbrs.get(i, [])) / len(nbrs[i]) if nbrs.get(i) else pos[i])
    return rows


def render_svg(model: dict[str, Any]) -> str:
    """The SVG text of the model's top-level view."""
    items, edges = top_level(model)
    for item in items:
        top, sub = item["lines"]
        item["w"] = max(70.0, max(len(top) * 1.12, len(sub) * 0.95) * _CH + 18)  # the top line is bold
    rows = _order(_ranks(len(items), edges), edges)
    width = max((sum(items[i]["w"] for i in row) + _GAP * (len(row) - 1) for row in rows), default=100.0) + 40
    for r, row in enumerate(rows):
        x = (width - sum(items[i]["w"] for i in row) - _GAP * (len(row) - 1)) / 2
        for i in row:
            items[i]["x"], items[i]["y"] = x, 20 + r * _ROW
            x += items[i]["w"] + _GAP
    height = 20 + len(rows) * _ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}">', f"<title>{escape(str(model['name']))}</title>",
           f"<style>{_STYLE}</style>",
           '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8c96a5" stroke="none"/></marker></defs>']
    out += [_edge(items[a], items[b], label) for a, b, label in edges]
    out += [_box(item) for item in items]
    out.append("</svg>\n")
    return "\n".join(out)


def _edge(a: dict[str, Any], b: dict[str, Any], label: str | None) -> str:
    x1, y1, x2, y2 = a["x"] + a["w"] / 2, a["y"] + _H, b["x"] + b["w"] / 2, b["y"]
    dy = max(20.0, abs(y2 - y1) / 2)
    path = (f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + dy:.1f} {x2:.1f},{y2 - dy:.1f} {x2:.1f},{y2:.1f}" '
            'marker-end="url(#a)"/>')
    if not label:
        return path
    return path + f'<text class="e" x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2 + 3:.1f}">{escape(label)}</text>'


def _box(item: dict[str, Any]) -> str:
    x, y, w = item["x"], item["y"], item["w"]
    top, sub = (escape(str(s)) for s in item["lines"])
    return (f'<g class="box"><rect class="{item["kind"]}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_H}" '
            f'rx="4"/><text class="t" x="{x + 8:.1f}" y="{y + 14:.1f}">{top}</text>'
            f'<text class="n" x="{x + 8:.1f}" y="{y + 27:.1f}">{sub}</text></g>')
