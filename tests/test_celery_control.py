"""`celery -A main status` and `celery -A main inspect active` on both kinds of broker: the
configured one (Redis in CI) and the embedded filesystem transport used when
CELERY_BROKER_URL is unset. With no worker, or no broker, they say so and exit non-zero
instead of hanging."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from scripts.stack import local_command, running_processes
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.django_db


def _celery(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        local_command(["celery", "-A", "main", *args]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_status_and_inspect_see_a_worker_on_the_embedded_filesystem_broker(tmp_path, monkeypatch):
    """With CELERY_BROKER_URL unset, remote control goes through the filesystem transport's
    control folder: `status` and `inspect active` list the running worker."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # for every process started here
    env = {"DATABASE_URL": database_url_of_tests(), "EMBEDDED_DATA_DIR": str(tmp_path)}
    env = {**os.environ, **env}
    node = f"control-{os.getpid()}@{socket.gethostname()}"
    worker = ["celery", "-A", "main", "worker", "--pool", "solo", "-n", node, "--loglevel", "INFO"]
    with running_processes(
        {"worker": local_command(worker)}, env=env, log_dir=tmp_path / "logs"
    ) as processes:
        log = tmp_path / "logs" / "worker.log"
        wait_for(lambda: " ready." in log.read_text(errors="replace"), timeout=60)
        assert processes["worker"].poll() is None
        status = _celery("status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"{node}: OK" in status.stdout
        active = _celery("inspect", "active", env=env)
        assert active.returncode == 0, active.stderr
        assert f"{node}: OK" in active.stdout
    assert "filesystem://" in log.read_text(errors="replace")


def test_status_with_no_worker_says_so_quickly(tmp_path):
    """No worker on the broker: a clear message and exit status 69, within seconds."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "EMBEDDED_DATA_DIR": str(tmp_path),
    }
    env.pop("CELERY_BROKER_URL", None)  # a broker of this test's own: nobody listens there
    started = time.monotonic()
    status = _celery("status", env=env)
    assert (status.returncode, time.monotonic() - started < 30) == (69, True)
    assert "No nodes replied within time constraint" in status.stdout + status.stderr


def test_status_with_the_broker_down_says_so_instead_of_hanging():
    """An unreachable Redis: the connection error, exit status 69, within seconds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens on it
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
    }
    started = time.monotonic()
    status = _celery("status", env=env)
    assert (status.returncode, time.monotonic() - started < 45) == (69, True)
    assert "Could not connect to the message broker" in status.stdout + status.stderr
