"""`pip install .`: the wheel built from a copy of the checkout holds the server (its
migrations, templates and static files) and the client with its `bulk-ingest` command; httpx
and rich come only with the `client` extra. Building fetches the build backend (setuptools)
from the package index, as `pip install .` does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel` builds from a clean copy (no build/ left in the checkout)."""
    src = tmp_path_factory.mktemp("checkout")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("main", "apps", "ingest_client"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("commerce_ingest-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _metadata(wheel: zipfile.ZipFile, name: str) -> str:
    [path] = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_holds_the_server_and_the_client_and_nothing_else(wheel):
    """Three top-level packages; the tests, scripts and docs stay out."""
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"main", "apps", "ingest_client"}
    for needed in (
        "apps/tenants/migrations/0002_tenant_name_unique_ci.py",
        "apps/tenants/templates/admin/tenants/issued_keys.html",
        "apps/dashboard/templates/dashboard/index.html",
        "apps/dashboard/static/dashboard/dashboard.js",
        "ingest_client/cli.py",
    ):
        assert needed in names


def test_rich_comes_only_with_the_client_extra_and_httpx_with_the_server_too(wheel):
    """The server's requirements leave rich out and take httpx (webhook deliveries);
    `[client]` adds both."""
    metadata = Parser().parsestr(_metadata(wheel, "METADATA"))
    requires = metadata.get_all("Requires-Dist")
    plain = [r.split(";")[0].split("==")[0].lower() for r in requires if "extra ==" not in r]
    assert "django" in plain
    assert "httpx" in plain
    assert "rich" not in plain
    assert 'httpx==0.28.1; extra == "client"' in requires
    assert 'rich==15.0.0; extra == "client"' in requires
    assert metadata.get_all("Provides-Extra") == ["client"]


def test_the_wheel_installs_the_bulk_ingest_command(wheel):
    """The console script runs the client's CLI."""
    entry_points = _metadata(wheel, "entry_points.txt")
    assert "[console_scripts]\nbulk-ingest = ingest_client.cli:main" in entry_points


def test_the_client_without_its_extra_says_what_to_install():
    """Without httpx (the server's install), importing the client names the extra."""
    hide = "import sys; sys.modules['httpx'] = None; import ingest_client"
    result = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: The client needs httpx: pip install 'commerce-ingest[client]' "
        "(from a checkout: pip install '.[client]')."
    )


def _pins(lines) -> dict[str, str]:
    """`name[extra]==version` lines as {normalized name: version}."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version
    return found


def test_pyprojects_pins_are_requirements_txts():
    """The server's and the client's pins in pyproject.toml are those `make install` uses."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _pins((ROOT / "requirements.txt").read_text().splitlines())
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["client"])
    assert {name: locked.get(name) for name in declared} == declared
