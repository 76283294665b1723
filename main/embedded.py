"""Embedded defaults for a machine with nothing but Python.

When `DATABASE_URL` is unset, an embedded PostgreSQL from the `pgserver` wheel is started
(or reattached) with its data under `./.data/pg`; every command (migrate, tests, the web
server, workers) shares that one server. When `CELERY_BROKER_URL` is unset, Celery uses
kombu's filesystem transport under `./.data/broker`, which needs no server and works
between processes on one machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA_DIR = Path(
    os.environ.get("EMBEDDED_DATA_DIR", Path(__file__).resolve().parent.parent / ".data")
)
EMBEDDED_DB_NAME = "commerce"

# Server settings for bulk loading (ALTER SYSTEM, kept in the data folder). Bigger buffers
# keep the final tables' primary-key indexes in memory while rows arrive in random key
# order; fewer checkpoints mean fewer full-page images in the WAL.
EMBEDDED_SETTINGS = {
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
}


def embedded_database_url() -> str:
    """Start (or attach to) the embedded PostgreSQL and return a URL for its database."""
    import logging

    _private_runtime_dir()
    import pgserver  # imported lazily: only needed when no DATABASE_URL is given

    # pgserver logs every start, attach and stop at INFO; keep commands' output clean.
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    pgdata = DATA_DIR / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process using it exits, so no
    # stray postgres is left behind after `make test` or `make demo`.
    fresh = not (pgdata / "PG_VERSION").exists()
    forget_dead_users(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    if EMBEDDED_SETTINGS["shared_buffers"] not in server.psql("SHOW shared_buffers;"):
        for name, value in EMBEDDED_SETTINGS.items():
            server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
        server.psql("SELECT pg_reload_conf();")
        if fresh:  # nobody else uses it yet: restart now so shared_buffers applies too
            server.cleanup()
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DB_NAME};")
    return server.get_uri(EMBEDDED_DB_NAME)


def _private_runtime_dir() -> None:
    # pgserver keeps a lock file in the runtime dir (read when it is imported); give it a
    # private one (CI and root shells have no XDG_RUNTIME_DIR, and platformdirs warns).
    runtime = DATA_DIR / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def forget_dead_users(pgdata: Path) -> list[int]:
    """Drop the processes that died without saying so (SIGKILL, SIGTERM) from pgserver's
    list of the server's users, and return them. pgserver stops the server when its last
    listed user exits; one dead entry would keep it running after every later command."""
    import psutil

    _private_runtime_dir()
    from pgserver.postgres_server import PostgresServer  # its lock: pgserver 0.1.4 inside

    listed = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not listed.exists():
            return []
        pids = _pids(listed.read_text())
        if pids is None:  # the users it named are unknown: it is left to those starting now
            listed.write_text("[]")
            return []
        dead = [pid for pid in pids if not psutil.pid_exists(pid)]
        if dead:
            listed.write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead


def _pids(text: str) -> list[int] | None:
    """pgserver's list of users, or None when the file holds none: a process stopped
    while pgserver rewrote it (Ctrl-C reaches every process of a command at once) leaves
    it empty or cut, and pgserver itself then fails on every start."""
    try:
        pids = json.loads(text)
    except ValueError:
        return None
    if not isinstance(pids, list) or not all(type(pid) is int for pid in pids):
        return None
    return pids


def embedded_broker_url() -> str:
    """Prepare the filesystem broker folders and return its URL."""
    root = DATA_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://"


def embedded_broker_options() -> dict:
    root = DATA_DIR / "broker"
    return {
        "data_folder_in": str(root / "out"),
        "data_folder_out": str(root / "out"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        # kombu polls the folder once a second by default: each hop of the per-tenant
        # scheduler (one upload done, the next queued) would wait for that
        "polling_interval": 0.1,
    }
