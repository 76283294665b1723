"""The same bytes after an upload of them failed (nothing of it loaded): a new upload, its
retry, whether sent whole, received while a worker loads it, or retried by a resumed
session; while the first is not failed, the same bytes still answer with it."""

from __future__ import annotations

import io

import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, Reject, Upload
from apps.ingestions.services import upload_create, upload_retry, upload_run
from apps.tenants.services import tenant_create
from tests.ingestions.gated import customers_bytes, worker_loading

COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
# two good rows and a bad one: strict fails it, not strict loads the two
MIXED = ndjson_bytes(
    [
        customer_row(customer_id=uid("a")),
        {"customer_id": "nope"},
        customer_row(customer_id=uid("b")),
    ]
)


def _create(tenant, data: bytes, **options):
    return upload_create(
        tenant=tenant, stream=io.BytesIO(data), filename="customers_1.ndjson", **options
    )


@pytest.mark.django_db(transaction=True)
def test_the_same_bytes_after_a_failed_strict_upload_are_a_new_upload_that_loads():
    tenant, _ = tenant_create(name="again")
    strict = _create(tenant, MIXED, strict=True)
    assert upload_run(upload_id=strict.upload.id).state == "failed"
    assert Customer.objects.filter(tenant=tenant).count() == 0
    same = _create(tenant, MIXED, strict=True)  # the same request again: tried again
    assert same.created
    assert same.upload.id != strict.upload.id
    assert upload_run(upload_id=same.upload.id).state == "failed"
    lenient = _create(tenant, MIXED)
    assert lenient.created
    done = upload_run(upload_id=lenient.upload.id)
    assert (done.state, done.rows_inserted, done.rows_rejected) == ("completed_with_errors", 2, 1)
    assert Customer.objects.filter(tenant=tenant).count() == 2
    # and that one, not failed, is the original from now on
    assert not _create(tenant, MIXED).created
    assert Upload.objects.filter(tenant=tenant).count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_202_for_bytes_whose_upload_failed(client_for):
    tenant, _ = tenant_create(name="api")
    client = client_for(tenant)
    query = "?filename=customers_1.ndjson"
    first = client.generic("POST", COMPREHENSIVE + query + "&strict=true", MIXED)
    assert first.status_code == 202, first.content
    upload_run(upload_id=first.json()["id"])
    while_failed = client.generic("POST", COMPREHENSIVE + query, MIXED)
    assert while_failed.status_code == 202, while_failed.content
    assert while_failed.json()["id"] != first.json()["id"]
    again = client.generic("POST", COMPREHENSIVE + query, MIXED)
    assert (again.status_code, again.json()["id"]) == (200, while_failed.json()["id"])


@pytest.mark.django_db(transaction=True)
def test_a_resumed_session_does_not_retry_a_failed_upload_whose_bytes_came_again():
    """`upload_retry` leaves the failed upload as it is (its rejects too): the upload of the
    same bytes sent since loads them, and two of them would load them twice."""
    tenant, _ = tenant_create(name="retry")
    strict = _create(tenant, MIXED, strict=True)
    upload_run(upload_id=strict.upload.id)
    rejects = Reject.objects.filter(upload_id=strict.upload.id).count()
    again = _create(tenant, MIXED)
    assert again.created
    assert upload_retry(upload_id=strict.upload.id) is False
    failed = Upload.objects.get(id=strict.upload.id)
    assert (failed.state, failed.error_code) == ("failed", "strict_rejected")
    assert Reject.objects.filter(upload_id=strict.upload.id).count() == rejects
    # with no other upload of its bytes, it is retried as before
    Upload.objects.filter(id=again.upload.id).delete()
    assert upload_retry(upload_id=strict.upload.id) is True
    assert Upload.objects.get(id=strict.upload.id).state == "queued"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("queue")
def test_bytes_received_while_loading_after_a_failed_upload_of_them_load(settings):
    """Received while a worker loads it, sealed at its last byte: the failed upload of the
    same bytes is no original, so this one is sealed and loads them."""
    from tests.ingestions.test_receiving import _receiving

    settings.INGEST_RECEIVE_PATIENCE_SECONDS = 600
    tenant, _ = tenant_create(name="received")
    data = customers_bytes(20_000)
    failed = _create(tenant, data)
    Upload.objects.filter(id=failed.upload.id).update(state="failed", error_code="timed_out")
    receiving = _receiving(tenant, data, open_until=len(data) - 10)
    worker, worked = worker_loading(receiving.upload.id)
    receiving.body.release()
    receiving.thread.join(30)
    worker.join(60)
    outcome = receiving.out["result"]
    assert (outcome.created, outcome.upload.id) == (True, receiving.upload.id)
    loaded = Upload.objects.get(id=receiving.upload.id)
    assert (loaded.state, loaded.rows_inserted) == ("completed", 20_000)
    assert Customer.objects.filter(tenant=tenant).count() == 20_000
