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


#: the layers, bottom to top; a module may import its own layer and those below it
LAYERS = [
    ("ge2mst.errors", "ge2mst._checks", "ge2mst._files", "ge2mst._faults", "ge2mst._version",
     "ge2mst._weights", "ge2mst.weights"),
    ("ge2mst.core", "ge2mst.data"),
    ("ge2mst.nn",),
    ("ge2mst.baselines",),
    ("ge2mst.models",),
    ("ge2mst.conversion",),
    ("ge2mst.analysis",),
    ("ge2mst.io",),
    ("ge2mst.training",),
    ("ge2mst.cli",),
]
#: what each side of a layer shared by two packages may not import from the other
APART = {"ge2mst.core": "ge2mst.data", "ge2mst.data": "ge2mst.core"}


def layer_of(module: str) -> tuple[int, str]:
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return rank, prefix
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        if module == "ge2mst":  # the package face re-exports from every layer
            continue
        rank, home = layer_of(module)
        for target in targets:
            if target == "ge2mst":
                wrong.append(f"{module} -> the package root (import the module itself)")
                continue
            there, prefix = layer_of(target)
            if there > rank or APART.get(home) == prefix:
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def test_the_layer_check_sees_an_upward_import():
    graph = {"ge2mst.core.neurons": {"ge2mst.nn.layers"}, "ge2mst.nn.layers": {"ge2mst.errors"},
             "ge2mst.data.load": {"ge2mst.core.coding"}}
    assert upward_imports(graph) == ["ge2mst.core.neurons -> ge2mst.nn.layers",
                                     "ge2mst.data.load -> ge2mst.core.coding"]


def test_imports_point_down_the_layers():
    wrong = upward_imports(import_graph())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_package_attribute_hides_a_submodule():
    """``import ge2mst.x.y as m`` must give the module y, not a function y re-exported by x."""
    import importlib
    import pkgutil

    import ge2mst

    hidden = []
    for info in pkgutil.walk_packages(ge2mst.__path__, "ge2mst."):
        if info.name.endswith("__main__"):  # running it is what importing it does
            continue
        module = importlib.import_module(info.name)
        parent, _, leaf = info.name.rpartition(".")
        if getattr(importlib.import_module(parent), leaf) is not module:
            hidden.append(info.name)
    assert not hidden, f"re-exported names hide these modules: {hidden}"


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_short():
    """No module of the package over 400 lines, no function over 60 (its ``def`` to its last
    line, docstring included): a longer one is split before it lands."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = _module_name(path)
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {lines} lines")
    assert not long_modules and not long_functions, (long_modules, long_functions)
