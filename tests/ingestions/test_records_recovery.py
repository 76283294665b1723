"""Live records survive a killed worker and a lost message (SPEC 9, exactly once): real
`celery -A main worker` processes (prefork, no beat) on the configured broker, Redis in CI,
the embedded filesystem transport when CELERY_BROKER_URL is unset. A worker is SIGKILLed
(its whole process group) while its merge is inside its transaction; a new worker's own
housekeeping (`records_merge_stuck`) sends the merge again, and every row lands once."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psycopg
import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import Customer, Order, RecordBatch, Upload
from apps.tenants.services import tenant_create
from main.celery import app
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BATCHES = 8
CUSTOMERS = 150  # per batch, with as many orders: half theirs, half the next batch's customers'
PER_MERGE = 2 * 2 * CUSTOMERS  # LIVE_MERGE_RECORDS of the workers: two batches a transaction
WORKER_ENV = {
    "UPLOAD_STUCK_SECONDS": "2",
    "WORKER_HOUSEKEEPING_SECONDS": "1",  # the re-queue job, and with it records_merge_stuck
    "LIVE_MERGE_STUCK_SECONDS": "2",
    "LIVE_MERGE_RECORDS": str(PER_MERGE),
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
}
# The per-tenant merge lock every load and merge takes first (engine.lock_tenant).
_MERGE_LOCK = "SELECT pg_advisory_{}(hashtextextended('ingest:' || %s::text, 0))"


@pytest.fixture
def start_worker(celery_processes):
    """A real worker process with WORKER_ENV."""
    return lambda: celery_processes(WORKER_ENV)


def _batch_elements(k: int) -> list:
    """Batch k (mixed): CUSTOMERS customers, an order for each of the first half of them, an
    order for each of the first half of batch k+1's customers (held until those arrive,
    across micro-batches and across the kill), and one bad element (a reject)."""
    half = CUSTOMERS // 2
    elements: list = [
        {
            "type": "customers",
            "record": customer_row(customer_id=uid(f"c{k}-{n}"), email=f"c{k}-{n}@example.com"),
        }
        for n in range(CUSTOMERS)
    ]
    owners = [(k, n) for n in range(half)]
    if k + 1 < BATCHES:
        owners += [(k + 1, n) for n in range(half)]
    for owner, n in owners:
        order = order_row(
            order_id=uid(f"o{k}-{owner}-{n}"),
            external_order_id=f"EXT-{k}-{owner}-{n}",
            customer_id=uid(f"c{owner}-{n}"),
        )
        elements.append({"type": "orders", "record": order})
    elements.append({"type": "customers", "record": {**customer_row(), "email": "nope"}})
    return elements


def _accept_batches(client) -> list[dict]:
    """POST the BATCHES batches, in order; their 202 answers."""
    answers = []
    for k in range(BATCHES):
        response = client.generic(
            "POST",
            "/api/v1/ingest/records/",
            ndjson_bytes(_batch_elements(k)),
            content_type="application/x-ndjson",
        )
        assert response.status_code == 202, response.content
        answers.append(response.json())
    return answers


def _merged_ids(tenant) -> list[int]:
    return sorted(
        RecordBatch.objects.filter(tenant=tenant, state="merged").values_list("id", flat=True)
    )


def _merges_logged(*logs: Path) -> int:
    """How many batches the workers' "record batches merged" lines (committed) add up to."""
    total = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if '"record batches merged"' in line:
                total += json.loads(line[line.index("{") :])["batches"]
    return total


def _assert_each_row_once(client, tenant, answers: list[dict]) -> None:
    """Every batch merged, its counts adding up to its records, every accepted row inserted
    (none updated, unchanged or duplicated: nothing merged twice), and each final table
    holding exactly the accepted rows."""
    half = CUSTOMERS // 2
    for k, answer in enumerate(answers):
        shown = client.get(answer["url"]).json()
        accepted = CUSTOMERS + half + (half if k + 1 < BATCHES else 0)
        assert shown["state"] == "merged"
        assert shown["rows"] == {
            "total": accepted + 1,
            "inserted": accepted,
            "updated": 0,
            "unchanged": 0,
            "rejected": 1,
            "pending": 0,
            "duplicates": 0,
            "warned": 0,
        }, k
    assert Customer.objects.filter(tenant=tenant).count() == BATCHES * CUSTOMERS
    assert Order.objects.filter(tenant=tenant).count() == (2 * BATCHES - 1) * half
    parts = Upload.objects.filter(tenant=tenant, batch__isnull=False)
    assert set(parts.values_list("state", flat=True)) == {"completed"}


def _blocked_by(observer: psycopg.Connection, holder: int) -> list[tuple[int, str]]:
    """The server processes waiting for a lock server process `holder` holds, with their
    query (asked in autocommit: pg_stat_activity is read once per transaction)."""
    return observer.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
        (holder,),
    ).fetchall()


def _running(observer: psycopg.Connection, pid: int) -> bool:
    return observer.execute(
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
    ).fetchone()[0]


def _holds_writes_on(observer: psycopg.Connection, pid: int, table: str) -> bool:
    """Whether server process `pid` has written to `table` in its open transaction."""
    return observer.execute(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND relation = %s::regclass"
        " AND mode = 'RowExclusiveLock')",
        (pid, table),
    ).fetchone()[0]


def test_a_worker_killed_mid_merge_loses_and_doubles_no_row(start_worker, client_for):
    """SIGKILL while the merge's third micro-batch has loaded its rows and waits to mark its
    batches merged: the two micro-batches committed before stay merged once, the killed
    one leaves nothing, and a new worker (no beat) merges the rest, every row once."""
    tenant, _ = tenant_create(name="killed-mid-merge")
    client = client_for(tenant)
    first, first_log = start_worker()
    url = database_url_of_tests()
    with psycopg.connect(url, autocommit=True) as gate, psycopg.connect(url) as row_gate:
        # Nothing merges while the batches arrive: their merges wait for the tenant's lock.
        gate.execute(_MERGE_LOCK.format("lock"), (str(tenant.id),))
        answers = _accept_batches(client)
        # The third micro-batch (the fifth and sixth batches) waits for this row to mark them.
        held = answers[5]["id"]
        row_gate.execute("SELECT id FROM record_batches WHERE id = %s FOR NO KEY UPDATE", (held,))
        gate.execute(_MERGE_LOCK.format("unlock"), (str(tenant.id),))

        waiting = wait_for(lambda: _blocked_by(gate, row_gate.info.backend_pid), timeout=60)
        [(pid, query)] = waiting
        assert query.startswith('UPDATE "record_batches"'), query
        assert _holds_writes_on(gate, pid, "customers")
        assert _holds_writes_on(gate, pid, "orders")
        assert _merged_ids(tenant) == sorted(a["id"] for a in answers[:4])

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed = time.monotonic()
        # The dead worker's server process ends (its transaction rolled back) once its
        # statement returns and it finds the connection gone.
        row_gate.rollback()
        wait_for(lambda: not _running(gate, pid), timeout=30)
    # What the two committed micro-batches merged, and nothing of the killed one.
    assert _merged_ids(tenant) == sorted(a["id"] for a in answers[:4])
    assert Customer.objects.filter(tenant=tenant).count() == 4 * CUSTOMERS
    assert Order.objects.filter(tenant=tenant).count() == 7 * (CUSTOMERS // 2)

    _, second_log = start_worker()
    wait_for(lambda: len(_merged_ids(tenant)) == BATCHES, timeout=60, interval=0.1)
    sys.stdout.write(
        f"all {BATCHES} batches merged {time.monotonic() - killed:.1f} s after the kill\n"
    )

    _assert_each_row_once(client, tenant, answers)
    assert _merges_logged(first_log) == 4  # the two micro-batches committed before the kill
    assert _merges_logged(first_log, second_log) == BATCHES


def test_batches_whose_merge_messages_are_lost_are_merged_by_the_housekeeping(
    start_worker, client_for, queue
):
    """Batches accepted with no worker running, their merge message then lost (the queue
    purged): a worker started later merges them, every row once, with no beat. One
    message was on its way for all of them: a batch sends none while one is."""
    tenant, _ = tenant_create(name="lost-messages")
    client = client_for(tenant)
    answers = _accept_batches(client)
    with app.connection_for_write() as conn:
        assert app.amqp.queues[queue](conn.default_channel).purge() == 1

    _, log = start_worker()
    wait_for(lambda: len(_merged_ids(tenant)) == BATCHES, timeout=60, interval=0.1)

    _assert_each_row_once(client, tenant, answers)
    assert _merges_logged(log) == BATCHES


def test_batches_from_many_clients_at_once_are_all_merged_without_the_housekeeping(
    celery_processes, client_for
):
    """8 clients post 30 small batches each while a worker (two processes) merges: one merge
    message per tenant is on its way at a time, merges start and end while batches commit,
    and still every batch is merged within seconds of the last 202, with the housekeeping
    off (a batch left behind would wait for it: LIVE_MERGE_STUCK_SECONDS is an hour)."""
    import threading

    from django.db import connection

    celery_processes(
        {**WORKER_ENV, "WORKER_HOUSEKEEPING_SECONDS": "0", "LIVE_MERGE_STUCK_SECONDS": "3600"}
    )
    tenant, _ = tenant_create(name="many-clients")
    errors: list = []

    def client_thread(number: int) -> None:
        client = client_for(tenant)
        try:
            for k in range(30):
                rows = [customer_row(customer_id=uid(f"m{number}-{k}-{n}")) for n in range(3)]
                response = client.generic(
                    "POST",
                    "/api/v1/ingest/records/customers/",
                    ndjson_bytes(rows),
                    content_type="application/x-ndjson",
                )
                if response.status_code != 202:
                    errors.append(response.content)
                time.sleep(0.002 * (k % 5))
        finally:
            connection.close()

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wait_for(
        lambda: not RecordBatch.objects.filter(tenant=tenant, state="accepted").exists(),
        timeout=20,
        interval=0.1,
    )
    assert RecordBatch.objects.filter(tenant=tenant, state="merged").count() == 240
    assert Customer.objects.filter(tenant=tenant).count() == 8 * 30 * 3
