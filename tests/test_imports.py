"""harness/ and tools/ import each other in one direction: the module graph has no circles.

The graph is read from the sources with `ast`, so it holds every import a module can run: top-level,
inside functions (lazy) and under `if TYPE_CHECKING:`. Importing a module runs the `__init__` of each
package above it first, so an import is an edge to those packages too (but the importer's own), and a
name a package re-exports is an edge from the package to the module that defines it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("harness", "tools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for root in ROOTS for path in sorted((REPO / root).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules one import statement runs (the deepest module each name resolves to)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    found = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    if len(found) < len(node.names) and base in known:
        found.add(base)
    return found


def _with_packages(modules: set[str], importer: str, known: set[str]) -> set[str]:
    """`modules` and the packages above them whose `__init__` the import runs (not the importer's own)."""
    parts = importer.split(".")
    own = {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
    above = {".".join(name.split(".")[:end]) for name in modules for end in range(1, name.count(".") + 2)}
    return (above & known) - own


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports anywhere in its source."""
    sources = _sources()
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, is_package, known)
        graph[module] = _with_packages(edges, module, known)
    return graph


def _groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set(stack[stack.index(node) :])
            del stack[stack.index(node) :]
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _shortest_path(graph: dict[str, set[str]], start: str, end: str, group: set[str]) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while end not in paths:
        frontier = [
            paths.setdefault(successor, [*paths[node], successor])[-1]
            for node in frontier
            for successor in sorted(graph[node] & group)
            if successor not in paths
        ]
    return paths[end]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest circle through each import that closes one, each written from its first module back to it."""
    found: dict[frozenset[tuple[str, str]], list[str]] = {}
    for group in _groups(graph):
        for module in sorted(group):
            for imported in sorted(graph[module] & group):
                circle = [module, *_shortest_path(graph, imported, module, group)]
                start = circle.index(min(circle))
                circle = [*circle[start:-1], *circle[:start], circle[start]]
                found.setdefault(frozenset(zip(circle[:-1], circle[1:], strict=True)), circle)
    return sorted(found.values())


def test_the_graph_sees_lazy_type_checking_and_package_imports():
    graph = import_graph()
    assert {"harness.errors", "harness.spec"} <= graph["harness.cli"]  # top level, inside a function
    assert "harness.spec" in graph["harness.trial_dir"]  # under TYPE_CHECKING
    assert "harness.spec._schema" in graph["harness.spec"]  # a package's re-export
    assert "harness.sweep._supervisor" in graph["harness.sweep"]  # a package's re-export
    assert {"harness.speech", "harness.speech.corpora"} <= graph["tools.twins.tokenizers"]  # the package's __init__
    assert "harness.launch" not in graph["harness.launch._slurm"]  # but not its own package's


def test_each_circle_is_named_once_from_its_first_module():
    graph = {"b": {"a"}, "a": {"b", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}
    assert circles(graph) == [["a", "b", "a"], ["c", "d", "c"]]


def test_harness_and_tools_have_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in found)
