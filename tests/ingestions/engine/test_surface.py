"""The engine's public surface: `apps.ingestions.engine` exports what code outside it uses,
and nothing outside it (apps, main, scripts, the client) reaches into a private module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from apps.ingestions import engine

ROOT = Path(__file__).resolve().parents[3]
ENGINE = "apps.ingestions.engine"
PUBLIC = {ENGINE, f"{ENGINE}.testing"}  # the package, and its helpers for tests and sample data
OUTSIDE = ("apps", "main", "scripts", "ingest_client")


def _modules(*packages: str) -> list[tuple[str, Path]]:
    found = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((name.removesuffix(".__init__"), path))
    return found


def _imported(name: str, path: Path) -> set[str]:
    """Every module `name` names in an import, anywhere in it (functions too); for `from a
    import b`, a.b when that is a module of the project, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, source] if source else base)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                as_path = ROOT.joinpath(*sub.split("."))
                module = as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists()
                found.add(sub if module else source)
    return found


@pytest.mark.parametrize("name", engine.__all__)
def test_every_exported_name_exists(name):
    """`from apps.ingestions.engine import *` gives every name `__all__` promises."""
    assert hasattr(engine, name)


def test_code_outside_the_engine_imports_only_its_package_or_testing():
    """Services, APIs, commands, scripts and the client use `apps.ingestions.engine` (or
    `engine.testing`), never one of the engine's private modules."""
    leaks = sorted(
        f"{name} imports {target}"
        for name, path in _modules(*OUTSIDE)
        if not name.startswith(f"{ENGINE}.") and name != ENGINE
        for target in _imported(name, path)
        if target.startswith(f"{ENGINE}.") and target not in PUBLIC
    )
    assert leaks == []


def test_the_checker_sees_a_private_import(tmp_path):
    """The checker itself: `from apps.ingestions.engine.merge import x` is a private import,
    `from apps.ingestions import engine` and `from apps.ingestions.engine import x` are not."""
    path = tmp_path / "example.py"
    path.write_text(
        "from apps.ingestions import engine\n"
        "from apps.ingestions.engine import RECORDS\n"
        "def f():\n    from apps.ingestions.engine.merge import merge_rows\n"
    )
    assert _imported("example", path) == {ENGINE, f"{ENGINE}.merge"}


def test_the_client_imports_nothing_of_the_server():
    """`ingest_client` is installed on its own: it imports nothing from apps or main."""
    server = sorted(
        f"{name} imports {target}"
        for name, path in _modules("ingest_client")
        for target in _imported(name, path)
        if target.split(".")[0] in ("apps", "main")
    )
    assert server == []
