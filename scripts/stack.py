"""Start the service's processes for a script: the web server (gunicorn) and a Celery
worker, on whatever the environment configures (the embedded defaults when nothing is
set), and stop them again. Used by `make demo` and `make bench`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_stack(
    *, env: dict | None = None, workers: int = 2, log_dir: Path | None = None
) -> Iterator[str]:
    """Yield the base URL of a running web server with a worker behind it."""
    env = {**os.environ, **(env or {})}
    port = free_port()
    log_dir = log_dir or ROOT / ".data" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = {
        "web": [
            str(BIN / "gunicorn"),
            "main.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--timeout",
            "600",
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "main",
            "worker",
            "--concurrency",
            str(workers),
            "--loglevel",
            "WARNING",
        ],
    }
    processes: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("ab")
            logs.append(log)
            processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, processes)
        yield base
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def _wait_ready(base: str, processes: dict[str, subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"the {name} process exited ({process.returncode}); see .data/logs"
                )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the web server did not become ready within {timeout:.0f}s")
