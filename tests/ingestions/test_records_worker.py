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
