"""Recovery from a dead worker by the workers themselves, with no beat running: every worker
sends the re-queue job every WORKER_HOUSEKEEPING_SECONDS (main/celery.py). Real worker
processes (prefork pool) on the configured broker: Redis in CI, the embedded filesystem
transport when CELERY_BROKER_URL is unset."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, Upload
from apps.ingestions.services import upload_create
from apps.tenants.services import tenant_create
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROWS = 20_000
STUCK_SECONDS = 2  # UPLOAD_STUCK_SECONDS of the workers
HOUSEKEEPING_SECONDS = 1  # WORKER_HOUSEKEEPING_SECONDS of the workers
# The per-tenant merge lock every load takes first (apps/ingestions/engine/merge.py).
_MERGE_LOCK = "SELECT pg_advisory_{}(hashtextextended('ingest:' || %s::text, 0))"


@pytest.fixture
def start_worker(celery_processes):
    """A real worker process with short housekeeping timings."""
    env = {
        "UPLOAD_STUCK_SECONDS": str(STUCK_SECONDS),
        "WORKER_HOUSEKEEPING_SECONDS": str(HOUSEKEEPING_SECONDS),
        "LOG_LEVEL": "INFO",
    }
    return lambda: celery_processes(env)


def _ready(log: Path) -> bool:
    return " ready." in log.read_text(errors="replace")


def _requeue_runs(log: Path) -> int:
    """How many re-queue jobs the worker has run to the end."""
    return sum(
        "upload_requeue_task[" in line and "succeeded" in line
        for line in log.read_text(errors="replace").splitlines()
    )


def _upload(upload_id) -> Upload:
    return Upload.objects.get(id=upload_id)


def _loaded_once(rows: int) -> dict:
    return {
        "state": "completed",
        "total": rows,
        "inserted": rows,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "pending": 0,
        "duplicates": 0,
        "warned": 0,
    }


@contextlib.contextmanager
def _held_in_processing(tenant) -> Iterator[tuple[Upload, psycopg.Connection]]:
    """Send an upload of ROWS customers while the test holds the tenant's merge lock, and
    yield it once a worker has it `processing` (the worker's load waits for the lock, holding
    the upload's own, however fast it would be otherwise), with the connection holding it."""
    rows = [
        customer_row(customer_id=uid(f"rec-{n}"), email=f"r{n}@example.com") for n in range(ROWS)
    ]
    with psycopg.connect(database_url_of_tests(), autocommit=True) as gate:
        gate.execute(_MERGE_LOCK.format("lock"), (str(tenant.id),))
        upload = upload_create(
            tenant=tenant, stream=io.BytesIO(ndjson_bytes(rows)), filename="customers_1.ndjson"
        ).upload
        wait_for(lambda: _upload(upload.id).state == "processing", timeout=30)
        yield _upload(upload.id), gate


def test_an_upload_whose_worker_is_killed_is_completed_by_a_new_worker_with_no_beat(
    start_worker,
):
    """A worker SIGKILLed (main process and pool) mid-upload, a new one started at once, and no
    beat: the new worker's own housekeeping re-queues the upload, and it completes with every
    row loaded once."""
    tenant, _ = tenant_create(name="recovery")
    first, first_log = start_worker()
    wait_for(lambda: _ready(first_log), timeout=60)
    with _held_in_processing(tenant) as (upload, gate):
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed = time.monotonic()
        # The dead worker's server session ends once its statement returns: no lock is left.
        gate.execute(_MERGE_LOCK.format("unlock"), (str(tenant.id),))

    _, second_log = start_worker()
    done = wait_for(lambda: (u := _upload(upload.id)).is_terminal and u, timeout=45, interval=0.2)
    sys.stdout.write(f"recovered {time.monotonic() - killed:.1f} s after the kill\n")

    assert {"state": done.state, **done.row_counts} == _loaded_once(ROWS)
    assert Customer.objects.filter(tenant=tenant).count() == ROWS
    assert done.started_at > upload.started_at
    assert f"upload {upload.id} re-queued (was processing)" in second_log.read_text(
        errors="replace"
    )


def test_an_upload_a_live_worker_holds_is_never_re_queued_by_the_housekeeping(start_worker):
    """Past UPLOAD_STUCK_SECONDS with no progress, but held by a live worker (waiting for the
    tenant's lock): the workers' re-queue jobs run and leave it alone; it completes once."""
    tenant, _ = tenant_create(name="held")
    worker, log = start_worker()
    wait_for(lambda: _ready(log), timeout=60)
    with _held_in_processing(tenant) as (upload, gate):
        time.sleep(STUCK_SECONDS + 0.5)  # stale from here on
        runs = _requeue_runs(log)

        def two_more_requeue_runs() -> bool:
            return _requeue_runs(log) >= runs + 2

        wait_for(two_more_requeue_runs, timeout=30)
        held = _upload(upload.id)
        assert (held.state, held.started_at) == ("processing", upload.started_at)
        gate.execute(_MERGE_LOCK.format("unlock"), (str(tenant.id),))

    done = wait_for(lambda: (u := _upload(upload.id)).is_terminal and u, timeout=30, interval=0.2)
    assert {"state": done.state, **done.row_counts} == _loaded_once(ROWS)
    assert done.started_at == upload.started_at
    assert log.read_text(errors="replace").count("upload started") == 1
    assert worker.poll() is None
