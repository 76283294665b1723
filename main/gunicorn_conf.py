"""Gunicorn settings: `gunicorn main.wsgi --config python:main.gunicorn_conf` (the
containers run it so). Command-line options and `GUNICORN_CMD_ARGS` override these.

- gunicorn's own lines in the project's log format (JSON or console, `apps.core.logs`);
  one access line per request comes from Django (`apps.core.middleware.AccessMiddleware`).
- Prometheus multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` is set: the folder is
  emptied when gunicorn starts, and a dead worker's live gauges are dropped.
"""

import os
from pathlib import Path

# Imported now, not in child_exit: that hook runs in a signal handler, and a second worker
# exiting during the import would find the module half-initialised.
from prometheus_client import multiprocess

from apps.core.logs import logging_config

logconfig_dict = logging_config()
# The number of workers comes from WEB_CONCURRENCY (gunicorn reads it) or --workers.
# Uploads are streamed into PostgreSQL while they arrive: a big file over a slow link
# takes long, and a sync worker is busy for all of it.
timeout = 600
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # heartbeat off disk


def on_starting(server):
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # Counts of an earlier run's processes would be added to this run's.
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink(missing_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
