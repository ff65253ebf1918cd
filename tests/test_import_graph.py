"""The package's modules import each other without cycles: lower layers never import upper ones.

Every module is parsed with ``ast`` (nothing is imported), and every import
statement counts, at module level or inside a function (a lazy import is still
a dependency). ``from .spec import validate`` depends on the submodule when one
has that name, else on the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "modelpack"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imported(node: ast.AST, package: str, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            deps |= _imported(node, package, modules)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) or None, by depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "modelpack.torch.shapes" in graph["modelpack.inspect"]  # a function-level import
    assert "modelpack.spec.validate" in graph["modelpack.torch.shapes"]  # from ..spec import validate
    assert "modelpack.codec" in graph["modelpack.api"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_spec_layer_never_reaches_into_torch():
    graph = import_graph()
    spec = [m for m in graph if m == "modelpack.spec" or m.startswith("modelpack.spec.")]
    lower = [m for m in spec if m != "modelpack.spec.report"]  # report is the CLI's verb; it reads .mpk files
    assert not [(m, d) for m in lower for d in graph[m] if d.startswith(("modelpack.torch", "modelpack.api"))]
