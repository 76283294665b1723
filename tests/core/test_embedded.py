"""The embedded PostgreSQL's bookkeeping (main/embedded.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from main.embedded import forget_dead_users


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_processes_that_died_unannounced_are_forgotten(tmp_path):
    """A user of the server killed without running its exit hooks stays on pgserver's
    list and would keep the server up for ever: the next start forgets it, and only it."""
    listed = tmp_path / ".handle_pids.json"
    dead = _dead_pid()
    listed.write_text(json.dumps([dead, os.getpid()]))
    assert forget_dead_users(tmp_path) == [dead]
    assert json.loads(listed.read_text()) == [os.getpid()]
    assert forget_dead_users(tmp_path) == []


def test_no_list_yet_is_nothing_to_forget(tmp_path):
    assert forget_dead_users(tmp_path) == []
    assert not (tmp_path / ".handle_pids.json").exists()


@pytest.mark.parametrize("text", ["", "[12, 3", "{}", '["x"]', "\x00\x00"])
def test_a_list_left_empty_or_cut_is_reset_so_the_server_starts_again(tmp_path, text):
    """Ctrl-C on `make demo --keep-running` stopped a process while pgserver rewrote its
    list: left empty, every later command failed in pgserver's own read of it."""
    listed = tmp_path / ".handle_pids.json"
    listed.write_text(text)
    assert forget_dead_users(tmp_path) == []
    assert json.loads(listed.read_text()) == []
