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
