"""gunicorn's settings, read from the project root by a plain `gunicorn main.wsgi` (the
containers and `scripts/stack.py` run it so). Command-line options and `GUNICORN_CMD_ARGS`
override these; `--workers N --threads M` keep the worker class (gevent ignores threads).

- The gevent worker (`main.gunicorn_worker`): a few hundred slow or idle clients never make
  the service unavailable to others, and uploads still stream into PostgreSQL as they
  arrive. gunicorn's own error answers are problem+json there.
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
worker_class = "main.gunicorn_worker.ProblemGeventWorker"
logger_class = "main.gunicorn_worker.QuietAccessLogger"  # its access line only when written
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)  # or --workers
# Connections one worker holds at once (idle keep-alives and slow uploads included).
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS") or 1000)
# Under gevent this is only the worker's heartbeat: a worker whose event loop stalls this
# long is replaced. A slow upload does not stall it (every read and query yields).
timeout = 60
keepalive = 5  # seconds an idle kept-alive connection stays open
# A greenlet per connection would each keep a database connection open for the
# connection's life; a request takes one from the process's pool instead and gives it back
# at its end (settings: DATABASE_POOL_SIZE, DATABASE_CONN_MAX_AGE).
# The pool holds a connection for each upload streaming its body into PostgreSQL (at most
# WEB_MAX_STREAMING_BODIES) and 8 more for everything else, so that big uploads in
# flight never leave a small request waiting for a connection.
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
_streaming = int(os.environ.get("WEB_MAX_STREAMING_BODIES") or 16)
os.environ.setdefault("DATABASE_POOL_SIZE", str(_streaming + 8))
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


def post_worker_init(worker):
    # Everything loaded by now (Django, the project, its URLs and views, imported here
    # rather than on the first request) is left out of the garbage collector's passes: a
    # full pass otherwise walks all of it, and under load froze a worker's requests for
    # 60-80 ms every few seconds.
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view
    gc.freeze()
