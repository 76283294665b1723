"""`batch_data` builds a batch's representation directly, for speed: it must stay exactly
what `BatchOutputSerializer` (the schema's shape) gives, for every kind of batch."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from rest_framework.request import Request

from apps.ingestions.engine.testing import customer_row, order_row, product_row, uid
from apps.ingestions.models import RecordBatch
from apps.ingestions.presenters import BatchOutputSerializer, batch_data
from apps.ingestions.services import records_merge

pytestmark = pytest.mark.django_db


def _same(batch: RecordBatch, request) -> dict:
    direct = batch_data(batch, request)
    shaped = BatchOutputSerializer(batch, context={"request": request}).data
    assert json.dumps(direct) == json.dumps(shaped)  # the same keys, order and values
    return direct


def test_batch_data_is_the_serializers_shape_for_every_kind_of_batch(client, tenant):
    rules = {"schema": {"properties": {"name": {"maxLength": 5}}}, "action": "warn"}
    put = client.put("/api/v1/ingest/rules/customers/", rules, format="json")
    assert put.status_code == 200
    elements = [
        {"type": "customers", "record": customer_row(customer_id=uid("c"), name="Ada Lovelace")},
        {"type": "products", "record": {**product_row(), "price": "x", "name": 7}},
        {"type": "orders", "record": order_row(customer_id=uid("c"))},
        {"type": "orders", "record": order_row(customer_id=uid("nobody"))},
        {"record": {}},
    ]
    sent = client.post("/api/v1/ingest/records/", elements, format="json")
    assert sent.status_code == 202, sent.content
    batch = RecordBatch.objects.get(id=sent.json()["id"])
    request = Request(RequestFactory().get("/", HTTP_HOST="shop.example:8443"))
    accepted = _same(batch, request)
    assert (accepted["state"], len(accepted["rejects"]), len(accepted["warnings"])) == (
        "accepted",
        2,
        1,
    )
    assert len(accepted["rejects"][0]["errors"]) == 2  # the product's two problems
    assert accepted["url"].startswith("http://shop.example:8443/")
    _same(batch, None)  # an event's: no request, the configured address
    assert records_merge(tenant_id=tenant.id) == 1
    merged = RecordBatch.objects.get(id=batch.id)
    shown = _same(merged, request)
    assert shown["state"] == "merged"
    assert shown["merged_at"] is not None
    assert shown["rows"]["pending"] == 1  # the order of a customer not sent yet
    single = client.post(
        "/api/v1/ingest/records/customers/", [customer_row()], format="json"
    ).json()
    _same(RecordBatch.objects.get(id=single["id"]), request)
