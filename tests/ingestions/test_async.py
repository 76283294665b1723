import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import Order, Upload
from apps.tenants.services import tenant_create
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _post(client, key, filename, rows):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.credentials(HTTP_X_API_KEY=key)
    file = SimpleUploadedFile(filename, ndjson_bytes(rows))
    return client.post("/api/v1/ingest/comprehensive/", {"file": file}, format="multipart")


def _done(upload_id):
    upload = Upload.objects.get(id=upload_id)
    return upload if upload.is_terminal else None


def test_files_uploaded_in_reverse_order_all_load_through_a_real_worker(celery_worker):
    """Orders sent before their customers are processed by a worker and end inserted."""
    from rest_framework.test import APIClient

    tenant, issued = tenant_create(name="async")
    client = APIClient()
    orders = _post(client, issued.raw, "orders_1.ndjson", [order_row(customer_id=uid("c1"))])
    assert orders.status_code == 202, orders.content
    customers = _post(
        client, issued.raw, "customers_1.ndjson", [customer_row(customer_id=uid("c1"))]
    )
    assert customers.status_code == 202, customers.content
    wait_for(lambda: _done(customers.json()["id"]))
    order_upload = wait_for(lambda: _done(orders.json()["id"]))
    wait_for(lambda: Upload.objects.get(id=orders.json()["id"]).rows_inserted == 1)
    assert order_upload.state == "completed"
    assert Order.objects.filter(tenant=tenant).count() == 1


def test_resuming_a_session_whose_processing_failed_runs_it_again(celery_worker, settings):
    """A session's gzip upload fails in the worker (the decompressed-size limit is too low);
    once the limit is raised, resume answers 202 and the worker loads the stored bytes."""
    from rest_framework.test import APIClient

    from apps.ingestions.models import Customer, Reject

    tenant, issued = tenant_create(name="rerun")
    rows = [customer_row(customer_id=uid(f"r{n}")) for n in range(50)]
    data = ndjson_bytes(rows, compression="gzip")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    token = client.post(
        "/api/v1/ingest/sessions/",
        {"filename": "customers_1.ndjson.gz", "size": len(data)},
        format="json",
    ).json()["token"]
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 100  # the worker runs in this process
    last = client.patch(
        f"/api/v1/ingest/sessions/{token}/",
        data,
        content_type="application/offset+octet-stream",
        headers={"Upload-Offset": "0"},
    )
    assert last.status_code == 202, last.content
    failed = wait_for(lambda: _done(last.json()["id"]))
    assert (failed.state, failed.error_code, failed.rows_inserted) == (
        "failed",
        "decompression_bomb",
        0,
    )

    settings.INGEST_MAX_DECOMPRESSED_BYTES = 1 << 30
    resumed = client.post(f"/api/v1/ingest/sessions/{token}/resume/")
    assert resumed.status_code == 202, resumed.content
    assert (resumed.json()["state"], resumed.json()["upload_id"]) == ("complete", str(failed.id))
    upload = wait_for(lambda: _done(failed.id))
    assert (upload.state, upload.error_code, upload.rows_inserted) == ("completed", "", 50)
    assert Customer.objects.filter(tenant=tenant).count() == 50
    assert not Reject.objects.filter(upload=upload).exists()
    again = client.post(f"/api/v1/ingest/sessions/{token}/resume/")
    assert again.status_code == 200  # nothing failed: nothing to run again
