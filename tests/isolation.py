"""Keep parallel test processes (pytest-xdist's `-n`) out of each other's way.

Loaded with `-p` (pyproject's addopts), before pytest-django reads the settings. Each test
process already has a database of its own (pytest-django suffixes the test database's name
with the process's id, gw0, gw1...). What the processes would otherwise share is the
broker and Redis, so each process past the first gets:

- its own default Celery queue (`CELERY_QUEUE`, and `WEBHOOK_QUEUE` when one is set): a
  stack worker started by one process never takes a task another process's test sent to
  the default queue, whose ids belong to another database. This holds on every broker,
  the embedded filesystem one included.
- its own Redis database (the number in `CELERY_BROKER_URL` and `REDIS_URL`): remote
  control, the cache and the rate limits' counters (keyed by ids that repeat from one test
  database to the next) stay apart. This needs a Redis with as many databases as test
  processes (16 by default; a Redis Cluster has only database 0), reached by a `redis://`
  or `rediss://` URL: others (a unix socket, Sentinel) are left as they are, and then the
  processes share them. CI and the embedded defaults are neither.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # Redis's default `databases`


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw3" in the fourth process
    return int(worker[2:]) if worker.startswith("gw") else 0


def redis_url_for(url: str, number: int) -> str:
    """`url` with its database moved on by `number` (modulo the databases Redis has)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not number:
        return url
    base = int(parts.path.strip("/") or 0)
    path = f"/{(base + number) % REDIS_DATABASES}"
    return urlunsplit(parts._replace(path=path))


def _isolate() -> None:
    number = _worker_number()
    if not number:
        return
    queue = os.environ.get("CELERY_QUEUE") or "celery"
    os.environ["CELERY_QUEUE"] = f"{queue}-gw{number}"
    if os.environ.get("WEBHOOK_QUEUE"):  # unset: deliveries go to the default queue
        os.environ["WEBHOOK_QUEUE"] += f"-gw{number}"
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        if os.environ.get(name):
            os.environ[name] = redis_url_for(os.environ[name], number)


_isolate()
