"""Live records through a real broker and a real worker: merged once, in order."""

from __future__ import annotations

import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import Customer, Order, RecordBatch
from apps.ingestions.services import records_merge_enqueue
from apps.tenants.services import tenant_create
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_batches_are_merged_exactly_once_by_a_real_worker(celery_worker):
    """An order batch, then its customers: the worker merges both; extra merge messages
    (a redelivery, the housekeeping's) change nothing."""
    from rest_framework.test import APIClient

    tenant, issued = tenant_create(name="live")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)

    def post(record_type, rows):
        path = f"/api/v1/ingest/records/{record_type}/"
        response = client.generic(
            "POST", path, ndjson_bytes(rows), content_type="application/x-ndjson"
        )
        assert response.status_code == 202, response.content
        return response.json()

    orders = [order_row(order_id=uid(f"o{n}"), customer_id=uid(f"c{n}")) for n in range(20)]
    first = post("orders", orders)
    post("customers", [customer_row(customer_id=uid(f"c{n}")) for n in range(20)])
    wait_for(lambda: not RecordBatch.objects.filter(tenant=tenant, state="accepted").exists())
    for _ in range(3):
        records_merge_enqueue(tenant_id=tenant.id)
    wait_for(lambda: client.get(first["url"]).json()["rows"]["inserted"] == 20)
    assert Order.objects.filter(tenant=tenant).count() == 20
    assert Customer.objects.filter(tenant=tenant).count() == 20
    rows = client.get(first["url"]).json()["rows"]
    assert (rows["total"], rows["inserted"], rows["pending"], rows["duplicates"]) == (20, 20, 0, 0)


def _send_customer(client, name: str) -> None:
    """One live batch of one customer, accepted."""
    response = client.generic(
        "POST",
        "/api/v1/ingest/records/customers/",
        ndjson_bytes([customer_row(customer_id=uid(name))]),
        content_type="application/x-ndjson",
    )
    assert response.status_code == 202, response.content


def _tenant_locked(tenant_id):
    """A connection of its own holding the tenant's merge lock, as a loading file does: to
    the very server and database the test's connection uses (advisory locks are per
    database), embedded or not."""
    import psycopg
    from django.db import connection

    connection.ensure_connection()
    info = connection.connection.info
    conn = psycopg.connect(**info.get_parameters(), password=info.password, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(hashtextextended('ingest:' || %s::text, 0))", [tenant_id])
    return conn


def test_a_merge_that_finds_its_tenant_locked_puts_itself_off_and_others_go_on(celery_worker):
    """One worker process slot (solo). Tenant A's lock is held (a file of A loading): A's
    merge does not wait for it, so B's batch, sent after, is merged at once; A's follows
    as soon as the lock is released."""
    from rest_framework.test import APIClient

    def client_of(name):
        tenant, issued = tenant_create(name=name)
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=issued.raw)
        return tenant, client

    (a, client_a), (b, client_b) = client_of("busy"), client_of("other")
    rows = [customer_row(customer_id=uid(f"c{n}")) for n in range(5)]
    body = ndjson_bytes(rows)
    locked = _tenant_locked(str(a.id))
    try:
        for client in (client_a, client_b):
            response = client.generic(
                "POST",
                "/api/v1/ingest/records/customers/",
                body,
                content_type="application/x-ndjson",
            )
            assert response.status_code == 202, response.content
        wait_for(lambda: Customer.objects.filter(tenant=b).count() == 5, timeout=15)
        assert RecordBatch.objects.get(tenant=a).state == "accepted"
        assert Customer.objects.filter(tenant=a).count() == 0
    finally:
        locked.close()
    wait_for(lambda: Customer.objects.filter(tenant=a).count() == 5, timeout=15)
    assert RecordBatch.objects.get(tenant=a).state == "merged"


def test_a_merge_waits_briefly_for_its_tenants_lock_then_puts_itself_off(queue, settings):
    """Held by another merge for less than LIVE_MERGE_LOCK_WAIT, the lock is waited for and
    the batch merged at once; held longer (a file loading), the merge sends itself again
    for later (a merge request on its way) and merges nothing now."""
    import threading
    import time

    from rest_framework.test import APIClient

    from apps.ingestions.models import MergeRequest
    from apps.ingestions.services import records_merge

    settings.LIVE_MERGE_LOCK_WAIT = 0.5
    tenant, issued = tenant_create(name="waits")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)

    def post(n):
        _send_customer(client, f"w{n}")

    post(1)
    locked = _tenant_locked(str(tenant.id))
    threading.Timer(0.2, locked.close).start()
    started = time.monotonic()
    assert records_merge(tenant_id=tenant.id) == 1
    assert time.monotonic() - started >= 0.2
    assert Customer.objects.filter(tenant=tenant).count() == 1

    post(2)
    locked = _tenant_locked(str(tenant.id))
    try:
        started = time.monotonic()
        assert records_merge(tenant_id=tenant.id) == 0
        assert 0.5 <= time.monotonic() - started < 5
        assert MergeRequest.objects.filter(tenant=tenant).exists()
        assert RecordBatch.objects.filter(tenant=tenant, state="accepted").count() == 1
    finally:
        locked.close()
    assert records_merge(tenant_id=tenant.id) == 1
    assert Customer.objects.filter(tenant=tenant).count() == 2


def test_a_batchs_merge_starts_its_delay_after_it_and_takes_the_batches_sent_meanwhile(
    celery_worker, settings
):
    """The first batch sends the merge to start LIVE_MERGE_DELAY_SECONDS later: nothing is
    merged before then, and the batches sent in between go into the same transaction."""
    import time

    from rest_framework.test import APIClient

    settings.LIVE_MERGE_DELAY_SECONDS = 1.0
    tenant, issued = tenant_create(name="lingers")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    sent = time.monotonic()
    for n in range(3):
        _send_customer(client, f"l{n}")
    batches = RecordBatch.objects.filter(tenant=tenant)
    while time.monotonic() - sent < 0.8:
        assert not batches.filter(state="merged").exists()
        time.sleep(0.05)
    wait_for(lambda: not batches.filter(state="accepted").exists())
    assert batches.values("merged_at").distinct().count() == 1  # one transaction
    assert Customer.objects.filter(tenant=tenant).count() == 3
