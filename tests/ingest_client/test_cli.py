"""The command's entry points and options: the shims, `python -m`, the console script, and
the test hook that is not an option."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ingest_client.cli import main, parse_size

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {
    "bulk_ingest.py": [str(ROOT / "bulk_ingest.py")],
    "scripts/bulk_ingest.py": [str(ROOT / "scripts" / "bulk_ingest.py")],
    "python -m ingest_client": ["-m", "ingest_client"],
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_shows_the_same_help_without_the_test_hook(entry):
    """`--help` works through both shims and `python -m`; it lists the options of SPEC 6
    and says nothing of stopping after some chunks."""
    done = run(*ENTRY_POINTS[entry], "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {entry.rpartition('/')[2]} ")
    for option in ("--data-dir", "--api-url", "--tenant-id", "--dry-run", "--parallel"):
        assert option in done.stdout
    assert "Exit codes: 0 every file completed" in done.stdout
    assert "stop-after-chunks" not in done.stdout
    assert "stop as if interrupted" not in " ".join(done.stdout.split())


def test_the_test_hook_is_not_an_option():
    """`--stop-after-chunks` is refused like any unknown option (exit 2, nothing run)."""
    done = run(str(ROOT / "bulk_ingest.py"), "--stop-after-chunks", "2", "--dry-run")
    assert done.returncode == 2
    assert "unrecognized arguments: --stop-after-chunks 2" in done.stderr


def test_pip_install_gives_the_bulk_ingest_console_script():
    """pyproject.toml declares `bulk-ingest`, and it names the command's main()."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["bulk-ingest"].partition(":")
    assert (module, function) == ("ingest_client.cli", "main")
    assert getattr(sys.modules[module], function) is main


def test_sizes_are_read_in_binary_units():
    """--session-threshold and --chunk-size take 8MiB, 512k, 1g or plain bytes."""
    assert [parse_size(s) for s in ("8MiB", "512k", "1g", "100", "2 MB")] == [
        8 << 20,
        512 << 10,
        1 << 30,
        100,
        2 << 20,
    ]


@pytest.mark.parametrize("url", ["notaurl", "localhost:8000", "ftp://example.com", "http://"])
@pytest.mark.parametrize("command", [[], ["stream", "--type", "customers", "--api-key", "k"]])
def test_an_api_url_that_is_not_http_is_refused_at_once(command, url):
    """A --api-url without http(s):// and a host exits 2 before sending anything; it used
    to be retried with backoff for minutes."""
    done = run(str(ROOT / "bulk_ingest.py"), *command, "--api-url", url, "--data-dir", str(ROOT))
    assert done.returncode == 2
    assert f"argument --api-url: {url!r} is not an http:// or https:// URL" in done.stderr
