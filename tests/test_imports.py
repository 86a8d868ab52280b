"""The package's layers: no import cycle (function-local imports included), no layer importing
one above it, pure maths free of I/O, and the comparison independent of the report."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """dars module -> the dars modules it imports anywhere in its body (a function-local import
    is a dependency too: it only hides a cycle until the function runs)."""
    modules = {_module_name(p): p for p in (SRC / "dars").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


#: The packages from the bottom up; a module may import its own layer's package and those below.
#: Packages sharing a layer are independent of each other.
LAYERS = [
    {"dars.core"},
    {"dars.stats"},
    {"dars.store"},
    {"dars.data", "dars.models"},
    {"dars.pseudo", "dars.engine"},
    {"dars.reporting", "dars.jobs"},
    {"dars.compare"},
    {"dars.cli"},
]


def package_of(module: str) -> str:
    """The layer package a module belongs to (``dars`` itself: the bottom one)."""
    top = ".".join(module.split(".")[:2])
    return "dars.core" if top == "dars" else top


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer, or of another package of the same layer."""
    rank = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    bad = []
    for module, deps in graph.items():
        own = package_of(module)
        for dep in sorted(deps):
            other = package_of(dep)
            if other != own and rank[other] >= rank[own]:
                bad.append(f"{module} -> {dep}")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in import_graph()}
    assert packages == set().union(*LAYERS)


def test_checker_sees_an_upward_import() -> None:
    graph = {"dars.core.options": {"dars.engine.train"}, "dars.engine.train": set(),
             "dars.data.dataset": {"dars.models.tiny"}, "dars.models.tiny": set()}
    assert layer_violations(graph) == ["dars.core.options -> dars.engine.train",
                                       "dars.data.dataset -> dars.models.tiny"]


def test_no_layer_imports_one_above_it() -> None:
    assert layer_violations(import_graph()) == []


@pytest.mark.parametrize("module", ["dars.pseudo.thresholds", "dars.pseudo.assign",
                                    "dars.stats.counting"])
def test_pure_maths_imports_no_io(module: str) -> None:
    """The numeric cores reach no module that opens stores or files."""
    graph = import_graph()
    io_modules = {"dars.store.probstore", "dars.store.artifacts", "dars.data.images",
                  "dars.pseudo.stage"}
    assert reachable(graph, module) & io_modules == set()


def test_compare_does_not_use_the_report_as_a_library() -> None:
    assert "dars.reporting.run_report" not in reachable(import_graph(), "dars.compare")
