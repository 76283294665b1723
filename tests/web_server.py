"""gunicorn on the test database, for the tests that must see what a real server sends
(Django's test client strips HEAD bodies itself and never keeps a connection alive)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests


@contextlib.contextmanager
def running_web_server(*, log_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Yield the base URL of `gunicorn main.wsgi` as it runs from the project root
    (gunicorn.conf.py), on the test database. `--threads 2` keeps connections alive should
    the configured worker be the sync one. Call it where the database is unblocked."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--threads", "2"]
    env = {"DATABASE_URL": database_url_of_tests(), **(env or {})}
    with running_processes({"web": command}, env=env, log_dir=log_dir) as processes:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, processes)
        yield base
