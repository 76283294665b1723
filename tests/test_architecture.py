"""The shape of the code, checked: the import graph is one-way (no cycles, imports inside
functions included), modules stay small, long functions say why at their top, and code
outside the engine uses only the engine's public surface."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("apps", "main", "scripts", "ingest_client")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = "# long:"  # first line of a longer function's body: why it stays whole
ENGINE = "apps.ingestions.engine"
ENGINE_PUBLIC_SUBMODULES = {f"{ENGINE}.testing"}  # helpers the tests and sample data use


@cache
def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules `name` imports anywhere in its text (functions included). `from a
    import b` is an import of module a.b when it exists, else of a."""
    modules = project_modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif source in modules:
                    found.add(source)
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a -> b -> c -> a is one cycle; d -> a is not part of it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_itself_back_through_others():
    """No import cycle between the project's modules, lazy imports inside functions
    counted (they only hide a cycle)."""
    graph = {name: imports_of(name, path) for name, path in project_modules().items()}
    assert cycles(graph) == []


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_a_module_stays_small_and_long_functions_say_why(name):
    """At most 400 lines per module; a function over 60 lines starts with `# long:`."""
    path = project_modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has more than 400 lines"
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
            continue
        body = node.body
        first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) else body[0]
        between = "\n".join(lines[node.lineno - 1 : first.lineno])
        assert LONG_REASON in between, f"{path}:{node.lineno} {node.name} is long without a reason"


def test_code_outside_the_engine_uses_only_its_public_surface():
    """Services, APIs and scripts import `apps.ingestions.engine` (its __init__ exports
    what they need), never one of its private modules."""
    leaks = {
        f"{name} -> {target}"
        for name, path in project_modules().items()
        if not name.startswith(ENGINE)
        for target in imports_of(name, path)
        if target.startswith(f"{ENGINE}.") and target not in ENGINE_PUBLIC_SUBMODULES
    }
    assert leaks == set()
