"""`GET /api/v1/contract/{type}/`: each record type's JSON Schema, for anyone (no key),
with cache validators; an unknown type is a 404 naming the types; the OpenAPI document
points at it from the operations that take records."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from rest_framework.test import APIClient

from apps.ingestions.engine import RECORDS, record_schema
from apps.ingestions.engine.testing import customer_row, order_item_row, order_row, product_row

SERVER = "http://testserver"
ROWS = {
    "customers": customer_row(),
    "products": product_row(),
    "orders": order_row(),
    "order_items": order_item_row(),
}


@pytest.mark.parametrize("record_type", list(RECORDS))
def test_each_types_contract_is_served_without_a_key(db, record_type):
    """The engine's schema with its own URL as `$id`, as application/schema+json, no
    rate-limit headers (there is no key to count against); the sample rows meet it."""
    response = APIClient().get(f"/api/v1/contract/{record_type}/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/schema+json"
    assert response["Cache-Control"] == "public, max-age=3600"
    assert "RateLimit-Limit" not in response
    schema = json.loads(response.content)
    assert schema.pop("$id") == f"{SERVER}/api/v1/contract/{record_type}/"
    assert schema == record_schema(record_type)
    assert jsonschema_rs.validator_for(schema).is_valid(ROWS[record_type])


def test_a_wrong_key_does_not_matter_and_plain_json_is_on_request(db):
    """`Accept: application/json` answers the same document as application/json; an
    X-API-Key header, even a wrong one, is not looked at."""
    response = APIClient().get(
        "/api/v1/contract/orders", HTTP_ACCEPT="application/json", HTTP_X_API_KEY="ck_bad_key"
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["title"] == "orders"


def test_an_etag_sent_back_is_answered_304(db):
    """If-None-Match with the ETag (or weak, or "*") is a 304 without a body."""
    client = APIClient()
    etag = client.get("/api/v1/contract/products/")["ETag"]
    assert etag[0] == etag[-1] == '"'
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get("/api/v1/contract/products/", HTTP_IF_NONE_MATCH=header)
        assert (response.status_code, response.content) == (304, b""), header
        assert response["ETag"] == etag
    assert client.get("/api/v1/contract/products/", HTTP_IF_NONE_MATCH='"x"').status_code == 200


def test_an_unknown_type_is_a_404_problem_naming_the_types(db):
    response = APIClient().get("/api/v1/contract/invoices/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "unknown_type"
    assert body["types"] == list(RECORDS)
    assert "customers, products, orders, order_items" in body["detail"]


def test_the_contract_index_lists_each_types_url(db):
    response = APIClient().get("/api/v1/contract/")
    assert response.status_code == 200
    assert response.json() == {
        "types": {name: f"{SERVER}/api/v1/contract/{name}/" for name in RECORDS}
    }


def test_the_openapi_document_points_at_the_contract(db):
    """The contract endpoint is documented (public: no X-API-Key), and every operation
    that takes records names it."""
    document = json.loads(APIClient().get("/api/v1/schema/").content)
    contract = document["paths"]["/api/v1/contract/{record_type}/"]["get"]
    assert {"200", "304", "404"} <= set(contract["responses"])
    assert not [p for p in contract.get("parameters", []) if p["name"] == "X-API-Key"]
    assert set(contract["responses"]["200"]["content"]) == {
        "application/schema+json",
        "application/json",
    }
    takes_records = [
        document["paths"]["/api/v1/ingest/comprehensive/"]["post"],
        document["paths"]["/api/v1/ingest/orders/"]["post"],
        document["paths"]["/api/v1/ingest/records/{record_type}/"]["post"],
        document["paths"]["/api/v1/ingest/records/"]["post"],
    ]
    for operation in takes_records:
        assert "/api/v1/contract/{type}/" in operation["description"], operation["operationId"]
    assert "/api/v1/contract/{type}/" in document["info"]["description"]
