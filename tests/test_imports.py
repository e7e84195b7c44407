"""Imports between todoapp's modules run one way: no module reaches back, however
indirectly, into one that imports it (a circle makes the order of imports matter and
the layers hard to read). The lower layers never import the upper ones."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "todoapp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The todoapp modules that `path` imports (at any level of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            for alias in node.names:  # `from todoapp import security` names a module
                if f"{node.module}.{alias.name}" in modules:
                    found.add(f"{node.module}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(path, modules) - {name} for name, path in files.items()}
    # A package's __init__ is imported with any of its modules; it imports nothing here.
    return {
        name: {m for m in deps if m not in ("todoapp", "todoapp.services", "todoapp.routers")}
        for name, deps in graph.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read_from_the_sources() -> None:
    graph = import_graph()
    assert "todoapp.database" in graph["todoapp.pg_async"]
    assert "todoapp.pages" in graph["todoapp.fastlane"]


def test_no_module_imports_one_that_imports_it() -> None:
    assert _cycle(import_graph()) is None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_lower_layers_do_not_import_upper_ones() -> None:
    graph = import_graph()
    # The lane answers like the routes without importing them; the database knows
    # nothing of the lane's connections; services know nothing of HTTP.
    assert not {m for m in graph["todoapp.fastlane"] if m.startswith("todoapp.routers")}
    assert "todoapp.pg_async" not in graph["todoapp.database"]
    for path in (PACKAGE / "services").glob("*.py"):
        deps = graph[_module_name(path)]
        upper = {m for m in deps if m.startswith(("todoapp.routers", "todoapp.deps"))}
        assert not upper, (path.name, upper)
        source = path.read_text()
        assert "import fastapi" not in source, path.name
        assert "from fastapi" not in source, path.name
