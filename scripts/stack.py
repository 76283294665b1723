"""Start the service's processes for a script: the web server (gunicorn) and a Celery
worker, on whatever the environment configures (the embedded defaults when nothing is
set), and stop them again. Used by `make demo`, `make bench` and the tests that need real
processes (`running_processes` starts any commands, e.g. the containers' own)."""

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


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux: /proc); gone ones are left out of the walk."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def resident_mb(pid: int) -> float:
    """A process's resident memory in MB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of `pid` and its descendants, in seconds (Linux: /proc):
    the living ones' own, and the children each has waited for (a worker's pool process
    replaced meanwhile still counts). A process gone meanwhile counts 0, so take it over
    processes that stay up."""
    total = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/stat") as stat:
                # the fields after the name, which is in parentheses and may hold spaces
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICKS


def busy_seconds() -> float | None:
    """CPU time all of the machine's cores have spent running its processes since it
    started (/proc/stat's user, nice, system, irq and softirq; not idle, iowait, or steal,
    the time a virtual machine's host ran something else), in seconds; None without /proc."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:8]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks
    return (user + nice + system + irq + softirq) / _TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_command(argv: list[str]) -> list[str]:
    """A command as a container runs it (`gunicorn ...`, `celery ...`, `python ...`), with
    the program taken from this virtualenv."""
    program, *args = argv
    if program == "python":
        return [sys.executable, *args]
    if (BIN / program).exists():
        return [str(BIN / program), *args]
    return list(argv)


@contextlib.contextmanager
def running_processes(
    commands: dict[str, list[str]], *, env: dict | None = None, log_dir: Path
) -> Iterator[dict[str, subprocess.Popen]]:
    """Start each command (stdout and stderr to `<log_dir>/<name>.log`) in the repository,
    yield them by name, and stop them all (SIGTERM, then SIGKILL after 30 s) at the end."""
    env = {**os.environ, **(env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("ab")
            logs.append(log)
            processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        yield processes
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


@contextlib.contextmanager
def running_stack(
    *,
    env: dict | None = None,
    workers: int = 2,
    log_dir: Path | None = None,
    processes: dict | None = None,
    beat: bool = False,
) -> Iterator[str]:
    """Yield the base URL of a running web server with a worker behind it (and with `beat`,
    Celery beat, so the periodic jobs run); `processes`, when given, is filled with them by
    name (`web`, `worker`, `beat`)."""
    port = free_port()
    node = f"stack{port}@{socket.gethostname()}"  # its own name: other workers may share the broker
    commands = {
        "web": [
            str(BIN / "gunicorn"),
            "main.wsgi",
            "--bind",
            f"127.0.0.1:{port}",  # the rest from gunicorn.conf.py
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "main",
            "worker",
            "--hostname",
            node,
            "--concurrency",
            str(workers),
            "--loglevel",
            "WARNING",
        ],
    }
    log_dir = log_dir or ROOT / ".data" / "logs"
    if beat:
        schedule = log_dir.parent / "celerybeat-schedule"
        commands["beat"] = [
            *(str(BIN / "celery"), "-A", "main", "beat", "--loglevel", "WARNING"),
            *("--schedule", str(schedule)),
        ]
    with running_processes(commands, env=env, log_dir=log_dir) as started:
        if processes is not None:
            processes.update(started)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, started)
        wait_worker(node, started, env=env)
        yield base


def settle(cursor) -> None:
    """Start a bench phase or scenario from the same server state: what the ones before it
    wrote vacuumed and analyzed now, not by autovacuum during it, and the WAL checkpointed
    (no checkpoint's full-page writes left pending). CHECKPOINT needs the server's
    superuser, the bench's role."""
    cursor.execute("VACUUM (ANALYZE)")
    cursor.execute("CHECKPOINT")


def wait_worker(
    node: str, processes: dict[str, subprocess.Popen], *, env: dict | None, timeout: float = 90
) -> None:
    """Wait until the worker `node` answers a ping: its pool is up and consuming, so what is
    timed from here (the demo, the bench) is not the worker's start."""
    command = [str(BIN / "celery"), "-A", "main", "inspect", "ping", "-d", node, "-t", "1"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes["worker"].poll() is not None:
            raise RuntimeError("the worker process exited; see its log")
        done = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the worker did not answer a ping within {timeout:.0f}s")


def wait_ready(base: str, processes: dict[str, subprocess.Popen], timeout: float = 60) -> None:
    """Wait until `base`/readyz answers 200; fail early if one of the processes exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} process exited ({process.returncode}); see its log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the web server did not become ready within {timeout:.0f}s")
