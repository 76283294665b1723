"""The code is as `make lint` wants it: `ruff check` and `ruff format --check` pass on the
whole repository (the settings in pyproject.toml), so the test command keeps lint true at
every commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command", [["check", "."], ["format", "--check", "."]], ids=["check", "format"]
)
def test_ruff_finds_nothing_to_change(command):
    """ruff, the pinned one of the venv, exits 0 and names no file."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
