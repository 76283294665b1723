"""Fairness between tenants: a tenant's second file does not wait for the tenant's merge
lock in a worker slot (it waits as `waiting`, and is queued again when the first ends), so
two big files of one tenant never take both slots of a worker while another tenant's small
upload waits behind them."""

from __future__ import annotations

import time

import psycopg
import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload, UploadState
from apps.ingestions.services import upload_run, upload_wake
from apps.tenants.services import tenant_create
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True)]

# The per-tenant merge lock every load takes first (apps/ingestions/engine/merge.py).
_MERGE_LOCK = "SELECT pg_advisory_{}(hashtextextended('ingest:' || %s::text, 0))"
_FINAL = ("completed", "completed_with_errors", "failed")


def _customers(name: str, count: int) -> bytes:
    return ndjson_bytes(
        [
            customer_row(customer_id=uid(f"{name}-{n}"), email=f"{name}.{n}@example.com")
            for n in range(count)
        ]
    )


def _post(client, filename: str, body: bytes) -> dict:
    answer = client.generic(
        "POST",
        f"/api/v1/ingest/comprehensive/?filename={filename}",
        body,
        content_type="application/x-ndjson",
    )
    assert answer.status_code == 202, answer.content
    return answer.json()


def _state(upload: dict) -> str:
    return Upload.objects.values_list("state", flat=True).get(id=upload["id"])


_UPLOAD_LOCK = "SELECT pg_advisory_{}(hashtextextended('upload:' || %s::text, 0))"


def _upload(tenant, name: str, state: str) -> Upload:
    return Upload.objects.create(
        tenant=tenant,
        record_type="customers",
        filename=f"customers_{name}.ndjson",
        sha256=uid(name),
        state=state,
    )


def test_a_tenants_second_file_waits_while_its_first_is_processed(tenant, other_tenant, queue):
    """Run by a worker while another of the tenant's files is `processing` (its worker
    holds its lock), an upload goes to `waiting` without loading anything; once the first
    has ended, the wake queues it (to this test's own queue, which no worker reads).
    Another tenant's upload is not held back."""
    first = _upload(tenant, "big", UploadState.PROCESSING)
    second = _upload(tenant, "more", UploadState.QUEUED)
    with psycopg.connect(database_url_of_tests(), autocommit=True) as worker:
        worker.execute(_UPLOAD_LOCK.format("lock"), (str(first.id),))
        upload_run(upload_id=second.id)
        held = Upload.objects.get(id=second.id)
        assert (held.state, held.started_at) == (UploadState.WAITING, None)
        assert upload_wake(tenant_id=tenant.id) == 0  # the first still runs
        # another tenant's upload of the same moment is not held back by this tenant's
        other = _upload(other_tenant, "small", UploadState.QUEUED)
        upload_run(upload_id=other.id)
        ran = Upload.objects.get(id=other.id)
        assert (ran.state, ran.error_code) == (UploadState.FAILED, "no_data")  # run: no bytes
        Upload.objects.filter(id=first.id).update(state=UploadState.COMPLETED)
    assert upload_wake(tenant_id=tenant.id) == 1
    assert Upload.objects.get(id=second.id).state == UploadState.QUEUED


def test_a_file_left_processing_by_a_dead_worker_holds_nothing_back(tenant):
    """Nobody holds the lock of an upload whose worker died: the tenant's other uploads
    run (the re-queue job sends the dead one again)."""
    _upload(tenant, "orphaned", UploadState.PROCESSING)
    queued = _upload(tenant, "next", UploadState.QUEUED)
    upload_run(upload_id=queued.id)
    ran = Upload.objects.get(id=queued.id)
    assert (ran.state, ran.error_code) == (UploadState.FAILED, "no_data")  # run: no bytes


def test_a_small_upload_of_another_tenant_is_not_held_behind_two_files_of_one(
    celery_processes, client_for
):
    """A worker of two slots; tenant A's first file is held in `processing` (the test holds
    A's merge lock), its second arrives: it waits without a slot, and tenant B's upload
    completes within 2 s meanwhile. Released, both of A's files complete."""
    celery_processes({})
    shop_a, _ = tenant_create(name="Big shop")
    shop_b, _ = tenant_create(name="Small shop")
    a, b = client_for(shop_a), client_for(shop_b)
    with psycopg.connect(database_url_of_tests(), autocommit=True) as gate:
        gate.execute(_MERGE_LOCK.format("lock"), (str(shop_a.id),))
        first = _post(a, "customers_1.ndjson", _customers("a1", 2000))
        wait_for(lambda: _state(first) == "processing", timeout=30)
        second = _post(a, "customers_2.ndjson", _customers("a2", 2000))
        wait_for(lambda: _state(second) == "waiting", timeout=30)
        sent = time.monotonic()
        small = _post(b, "customers_1.ndjson", _customers("b", 1000))
        wait_for(lambda: _state(small) in _FINAL, timeout=30)
        assert time.monotonic() - sent < 2.0
        assert _state(small) == "completed"
        assert (_state(first), _state(second)) == ("processing", "waiting")
        gate.execute(_MERGE_LOCK.format("unlock"), (str(shop_a.id),))
    wait_for(lambda: _state(first) in _FINAL and _state(second) in _FINAL, timeout=60)
    assert (_state(first), _state(second)) == ("completed", "completed")
    assert Upload.objects.get(id=second["id"]).rows_inserted == 2000
