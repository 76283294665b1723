"""Deliveries sent beside a worker's tasks, not in their slots.

An attempt may wait `WEBHOOK_TIMEOUT_SECONDS` on a receiver that never answers. Made in the
task's own slot, a tenant's slow receivers (or test events sent to one as fast as the rate
limit lets it) held the worker's slots, and every tenant's uploads waited behind them. The
delivery task only hands the delivery to a few sender threads of its worker process
(`SENDERS`) and returns at once; the threads mostly wait on the network.

Nothing is lost: a delivery lives in PostgreSQL, and a thread takes it (its lease) only when
it starts. One queued here but not started when its process dies is still due, and the
sweep sends it again; one under way is taken again once its lease is over (at least once,
as before). With every thread busy and `BACKLOG` deliveries waiting, a new one is left to
the sweep rather than held in memory.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from django.db import connections

from apps.webhooks.services import delivery_attempt

logger = logging.getLogger("apps.webhooks")

SENDERS = 4  # threads per worker process
BACKLOG = 4 * SENDERS  # deliveries waiting for one, per worker process

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_owner = 0  # the process the pool belongs to (a forked child makes its own)
_waiting = 0
_futures: set[Future] = set()  # under way or waiting


def send_beside(delivery_id: int) -> bool:
    """Hand the delivery to this process's senders; False when their backlog is full (the
    delivery stays due in PostgreSQL: the sweep sends it again)."""
    global _pool, _owner, _waiting
    with _lock:
        if _pool is None or _owner != os.getpid():
            _pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook-sender")
            _owner, _waiting = os.getpid(), 0
            _futures.clear()
        if _waiting >= BACKLOG + SENDERS:
            return False
        _waiting += 1
        future = _pool.submit(_send, delivery_id)
        _futures.add(future)
    future.add_done_callback(_futures.discard)
    return True


def senders_drain(*, timeout: float) -> None:
    """When the worker (or its pool process) stops: the attempts under way end and log
    their outcome (each is bounded by `WEBHOOK_TIMEOUT_SECONDS`), for at most `timeout`
    seconds; those waiting are dropped (still due in PostgreSQL: the sweep sends them)."""
    global _pool
    with _lock:
        pool, futures = (_pool, list(_futures)) if _owner == os.getpid() else (None, [])
        _pool = None
    if pool is None:
        return
    pool.shutdown(wait=False, cancel_futures=True)
    wait(futures, timeout=timeout)


def _send(delivery_id: int) -> None:
    global _waiting
    try:
        delivery_attempt(delivery_id=delivery_id)
    except Exception:  # its lease runs out, and it is taken again
        logger.exception("webhook delivery %s failed to run", delivery_id)
    finally:
        connections.close_all()  # this thread's own
        with _lock:
            _waiting -= 1


def senders_idle() -> bool:
    """Whether this process's senders have nothing under way or waiting (for a test that
    must not leave a delivery running behind it)."""
    with _lock:
        return _waiting == 0
