"""The live backlog the limit refuses at (SPEC 9, backpressure): the tenant's records
accepted less those merged, kept as two totals, so a batch stored reads two rows instead
of summing the tenant's batches (which, with statistics taken while most batches were
unmerged, PostgreSQL did by reading every batch the tenant ever sent, on every request)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import BacklogAccepted, BacklogMerged, RecordBatch
from apps.ingestions.services import records_merge
from apps.tenants.services import api_key_rotate

_PATH = "/api/v1/ingest/records/customers/"


def _post(client, rows):
    return client.generic("POST", _PATH, ndjson_bytes(rows), content_type="application/x-ndjson")


def _totals(tenant) -> tuple[int | None, int | None]:
    accepted = BacklogAccepted.objects.filter(tenant=tenant).first()
    merged = BacklogMerged.objects.filter(tenant=tenant).first()
    return (accepted and accepted.records, merged and merged.records)


@pytest.mark.django_db
def test_the_totals_count_accepted_records_and_merges_only(client, tenant, settings):
    settings.LIVE_BACKLOG_LIMIT = 4
    two_and_a_reject = [customer_row(customer_id=uid("a")), customer_row(customer_id=uid("b"))]
    two_and_a_reject.append({"customer_id": "not a uuid"})
    assert _post(client, two_and_a_reject).status_code == 202
    assert _post(client, [{"customer_id": "bad"}]).status_code == 202  # all rejected: 0
    assert _totals(tenant) == (2, None)
    assert _post(client, [customer_row(customer_id=uid("c"))]).status_code == 202
    assert _totals(tenant) == (3, None)
    records_merge(tenant_id=tenant.id)
    assert _totals(tenant) == (3, 3)
    # Backlog 0 again: four more are taken (the limit is checked before a batch is added).
    for name in "defg":
        assert _post(client, [customer_row(customer_id=uid(name))]).status_code == 202
    refused = _post(client, [customer_row(customer_id=uid("h"))])
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("4 accepted records are waiting")
    assert _totals(tenant) == (7, 3)  # the refused batch counted nothing
    records_merge(tenant_id=tenant.id)
    assert _totals(tenant) == (7, 7)
    assert _post(client, [customer_row(customer_id=uid("h"))]).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_batches_stored_at_once_are_counted_one_after_another(tenant, settings):
    """Twelve clients at once against a limit of 5: exactly five batches are stored, each
    counted after the one before (a sum read from each statement's snapshot would let
    several see the same backlog and all pass)."""
    settings.LIVE_BACKLOG_LIMIT = 5
    settings.API_RATE_LIMIT = "1000/min"
    api_key = api_key_rotate(tenant=tenant, revoke_existing=False).raw
    start = threading.Barrier(12)
    statuses: list[int] = []

    def send(n: int) -> None:
        client = Client(HTTP_X_API_KEY=api_key)
        start.wait()
        try:
            statuses.append(_post(client, [customer_row(customer_id=uid(f"x{n}"))]).status_code)
        finally:
            connection.close()  # this thread's own

    threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 5 + [429] * 7
    assert RecordBatch.objects.filter(tenant=tenant).count() == 5
    assert _totals(tenant) == (5, None)
