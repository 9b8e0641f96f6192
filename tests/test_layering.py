"""The import structure of src/ge2mst: no cycle between modules (read with `ast`, so function-level
imports count too), and every import points down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ge2mst"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The ge2mst modules that ``node`` (in ``module``) imports."""
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("ge2mst"):
            return []
    else:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    # `from .pkg import name` may name a submodule: count it as the submodule where it is one
    return [f"{base}.{alias.name}" if _exists(f"{base}.{alias.name}") else base for alias in node.names]


def _exists(module: str) -> bool:
    path = SRC.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        targets = graph.setdefault(module, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                targets.update(t for t in _resolve(module, path.name == "__init__.py", node)
                               if t != module and _exists(t))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names
                               if a.name.startswith("ge2mst") and a.name != module)
    return graph


def _package_face(module: str, graph: dict[str, set[str]]) -> bool:
    """A package's ``__init__`` only re-exports its submodules: importing it from inside the
    package is what the cycle check is about, not the package importing its own parts."""
    return any(t.startswith(module + ".") for t in graph.get(module, ()))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of module-to-module imports (ignoring a package face importing its own
    submodules), or None."""
    edges = {m: {t for t in ts if not (t.startswith(m + ".") and _package_face(m, graph))}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_reader_sees_a_cycle_when_there_is_one():
    graph = {"ge2mst.a": {"ge2mst.b"}, "ge2mst.b": {"ge2mst.c"}, "ge2mst.c": {"ge2mst.a"},
             "ge2mst.d": {"ge2mst.a"}}
    assert find_cycle(graph) == ["ge2mst.a", "ge2mst.b", "ge2mst.c", "ge2mst.a"]
    graph["ge2mst.c"] = set()
    assert find_cycle(graph) is None


def test_the_reader_finds_function_level_imports():
    graph = import_graph()
    assert "ge2mst.errors" in graph["ge2mst._checks"]
    # cli imports most commands' modules inside their handlers: they must be seen
    assert len(graph[next(m for m in graph if m.startswith("ge2mst.cli"))]) > 5


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
