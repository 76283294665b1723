"""A live batch's one statement stores it and says whether the tenant's merge is on its way
and will see it (`record_store`): a fresh request is left alone, a stale or missing one is
sent again, a merge that begins waits for a batch that counted on it, and a refused batch
leaves the connection usable."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import MergeRequest, RecordBatch
from apps.ingestions.services import record_batch_accept
from tests.factories import database_url_of_tests

_DELETE = "DELETE FROM record_merge_requests WHERE tenant_id = %s"

pytestmark = pytest.mark.django_db(transaction=True)


def _send(client, name: str):
    return client.generic(
        "POST",
        "/api/v1/ingest/records/customers/",
        ndjson_bytes([customer_row(customer_id=uid(name))]),
        content_type="application/x-ndjson",
    )


def _sent_at(tenant):
    return MergeRequest.objects.filter(tenant=tenant).values_list("sent_at", flat=True).first()


def test_the_first_batch_sends_the_merge_and_the_next_leave_it_alone(client, tenant, queue):
    assert not connection.in_atomic_block  # the path under test: autocommit
    assert _send(client, "a").status_code == 202
    first = _sent_at(tenant)
    assert first is not None
    assert timezone.now() - first < timedelta(seconds=5)
    for name in ("b", "c"):
        assert _send(client, name).status_code == 202
    assert _sent_at(tenant) == first  # read, not written again
    assert RecordBatch.objects.filter(tenant=tenant, state="accepted").count() == 3


def test_a_stale_request_is_sent_again(client, tenant, queue, settings):
    """A request older than LIVE_MERGE_RESEND_SECONDS (its message lost): sent again."""
    long_ago = timezone.now() - timedelta(seconds=settings.LIVE_MERGE_RESEND_SECONDS + 60)
    MergeRequest.objects.create(tenant=tenant, sent_at=long_ago)
    assert _send(client, "a").status_code == 202
    assert _sent_at(tenant) > long_ago + timedelta(seconds=30)


def test_a_merge_that_has_begun_is_not_counted_on(client, tenant, queue):
    """A merge deletes its request when it begins: the next batch sends a new one."""
    assert _send(client, "a").status_code == 202
    MergeRequest.objects.filter(tenant=tenant).delete()  # as records_merge does first
    assert _send(client, "b").status_code == 202
    assert _sent_at(tenant) is not None


def test_a_refused_batch_leaves_the_connection_usable(client, tenant, queue, settings):
    settings.LIVE_BACKLOG_LIMIT = 1
    assert _send(client, "a").status_code == 202
    refused = _send(client, "b")
    assert refused.status_code == 429, refused.content
    assert not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert RecordBatch.objects.filter(tenant=tenant).count() == 1


def _accept(tenant, name: str):
    body = ndjson_bytes([customer_row(customer_id=uid(name))])
    return record_batch_accept(tenant=tenant, record_type="customers", body=body, json_array=False)


def test_a_merge_that_begins_waits_for_a_batch_that_counted_on_it(tenant, queue):
    """The batch locked the request it counted on: the merge's delete of it (its first
    step, before it reads the batches) waits until the batch is committed."""
    sent = timezone.now()
    MergeRequest.objects.create(tenant=tenant, sent_at=sent)
    with psycopg.connect(database_url_of_tests(), autocommit=True) as merge:
        merge.execute("SET lock_timeout = '300ms'")
        with transaction.atomic():
            _accept(tenant, "a")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                merge.execute(_DELETE, [tenant.id])
        assert merge.execute(_DELETE, [tenant.id]).rowcount == 1  # committed: it goes on
    assert RecordBatch.objects.filter(tenant=tenant, state="accepted").count() == 1


def test_a_batch_stored_while_a_merge_begins_sends_the_next_one(tenant, queue):
    """The merge's delete of the request is not committed yet when the batch is stored:
    the batch waits for it, finds the request gone (not the version its snapshot saw),
    and sends a new merge."""
    sent = timezone.now()
    MergeRequest.objects.create(tenant=tenant, sent_at=sent)
    done = threading.Event()

    def store():
        try:
            _accept(tenant, "a")
        finally:
            connection.close()
            done.set()

    with psycopg.connect(database_url_of_tests()) as merge:
        merge.execute(_DELETE, [tenant.id])  # its transaction left open
        worker = threading.Thread(target=store)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()  # the batch waits for the merge's delete
        merge.commit()
    worker.join(timeout=10)
    assert done.is_set()
    assert _sent_at(tenant) > sent  # a new merge was sent for it
