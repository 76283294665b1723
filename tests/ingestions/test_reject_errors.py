"""Every problem of a rejected row through the API (SPEC 10): an upload's and a live batch's
errors endpoints (JSON pages and NDJSON), the 202 answer and the batch detail, mixed-batch
elements, rejects stored before the list existed, and the OpenAPI document."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import RecordBatch, Reject

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"
UPLOADS = "/api/v1/ingest/uploads/"

# A customer with three bad fields (its id, its email, its timestamp) and no name.
SEVERAL = {
    **{k: v for k, v in customer_row().items() if k != "name"},
    "customer_id": "nope",
    "email": "x",
    "created_at": "yesterday",
}
SEVERAL_ERRORS = [
    {
        "field": "customer_id",
        "code": "invalid_uuid",
        "message": "customer_id is not a valid UUID: 'nope'",
    },
    {"field": "name", "code": "missing_field", "message": "name is required"},
    {
        "field": "email",
        "code": "invalid_email",
        "message": "email is not a valid email address: 'x'",
    },
    {
        "field": "created_at",
        "code": "invalid_timestamp",
        "message": "created_at is not an ISO 8601 timestamp: 'yesterday'",
    },
]
ONE = customer_row(customer_id=uid("one"), email="y")
ONE_ERROR = {
    "field": "email",
    "code": "invalid_email",
    "message": "email is not a valid email address: 'y'",
}
ROWS = [customer_row(customer_id=uid("good")), SEVERAL, '{"customer_id": ', ONE]


def _expected() -> list[dict]:
    lines = ndjson_bytes(ROWS).decode().splitlines()
    truncated = {"field": "", "code": "invalid_json", "message": "Input data was truncated"}
    return [
        {"line": 2, **SEVERAL_ERRORS[0], "errors": SEVERAL_ERRORS, "raw": lines[1]},
        {"line": 3, **truncated, "errors": [truncated], "raw": lines[2]},
        {"line": 4, **ONE_ERROR, "errors": [ONE_ERROR], "raw": lines[3]},
    ]


def _ndjson(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"] == NDJSON
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_an_uploads_errors_list_every_problem_of_each_row(client, tenant, ndjson, load):
    """JSON and NDJSON: a row with four problems is one reject listing them in field order,
    the first its field, code and message; a row with one lists that one."""
    upload = load(tenant, ndjson("customers_several.ndjson", ROWS))
    assert (upload.rows_total, upload.rows_rejected, upload.rows_inserted) == (4, 3, 1)
    url = f"{UPLOADS}{upload.id}/errors/"
    body = client.get(url).json()
    assert (body["count"], body["results"]) == (3, _expected())
    assert _ndjson(client.get(url, HTTP_ACCEPT=NDJSON)) == _expected()
    assert _ndjson(client.get(url, {"format": "ndjson"})) == _expected()
    # `code` is the reject's own: its first problem
    assert [r["line"] for r in client.get(url, {"code": "invalid_uuid"}).json()["results"]] == [2]
    assert client.get(url, {"code": "invalid_timestamp"}).json()["results"] == []


def test_a_reject_stored_before_the_list_is_answered_with_its_one_problem(
    client, tenant, ndjson, load
):
    """A reject without `errors` (stored before there were any) lists its field, code and
    message as its one problem."""
    upload = load(tenant, ndjson("customers_old.ndjson", [SEVERAL]))
    Reject.objects.filter(upload=upload).update(errors=[])
    [reject] = client.get(f"{UPLOADS}{upload.id}/errors/").json()["results"]
    assert reject["errors"] == [SEVERAL_ERRORS[0]]


def test_a_live_batch_answers_every_problem_at_once_and_in_its_errors(client, tenant):
    """The 202 answer, the batch's detail and its errors endpoint (JSON and NDJSON) list
    the same rejects, each with every problem of its row; counts are one per row."""
    response = client.generic(
        "POST", "/api/v1/ingest/records/customers/", ndjson_bytes(ROWS), content_type=NDJSON
    )
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["records"], answer["rejected"]) == (4, 3)
    assert answer["rejects"] == _expected()
    assert client.get(answer["url"]).json()["rejects"] == _expected()
    assert client.get(answer["errors_url"]).json()["results"] == _expected()
    assert _ndjson(client.get(answer["errors_url"], HTTP_ACCEPT=NDJSON)) == _expected()


def test_a_batch_stored_before_the_list_answers_each_reject_with_its_one_problem(client, tenant):
    """Rejects kept without `errors` list their field, code and message."""
    response = client.generic(
        "POST", "/api/v1/ingest/records/customers/", ndjson_bytes([ONE]), content_type=NDJSON
    )
    batch = RecordBatch.objects.get(id=response.json()["id"])
    old = [{k: v for k, v in r.items() if k != "errors"} for r in batch.rejects]
    RecordBatch.objects.filter(id=batch.id).update(rejects=old)
    answer = response.json()
    [reject] = client.get(answer["url"]).json()["rejects"]
    assert reject["errors"] == [ONE_ERROR]
    [listed] = client.get(answer["errors_url"]).json()["results"]
    assert listed["errors"] == [ONE_ERROR]


def test_a_mixed_batch_element_lists_each_problem_of_its_envelope(client, tenant):
    """An element with neither `type` nor `record`, or an unknown type and no record, names
    both; a good element's record is checked as a record of its type."""
    elements = [
        {"neither": 1},
        {"type": "invoices"},
        {"type": "orders", "record": {**order_row(), "order_id": "x", "currency": "EURO"}},
    ]
    response = client.generic(
        "POST", "/api/v1/ingest/records/", json.dumps(elements), content_type="application/json"
    )
    assert response.status_code == 202, response.content
    rejects = response.json()["rejects"]
    assert [[(e["field"], e["code"]) for e in r["errors"]] for r in rejects] == [
        [("type", "missing_field"), ("record", "missing_field")],
        [("type", "invalid_type"), ("record", "missing_field")],
        [("order_id", "invalid_uuid"), ("currency", "invalid_currency")],
    ]
    assert [(r["field"], r["code"]) for r in rejects] == [
        ("type", "missing_field"),
        ("type", "invalid_type"),
        ("order_id", "invalid_uuid"),
    ]


def test_the_openapi_document_describes_a_rejects_errors(db):
    """The reject of the errors endpoints and of a batch documents `errors`, a list of
    {field, code, message}."""
    document = json.loads(APIClient().get("/api/v1/schema/").content)
    schemas = document["components"]["schemas"]
    errors = schemas["RejectOutput"]["properties"]["errors"]
    assert errors["type"] == "array"
    item = schemas[errors["items"]["$ref"].rsplit("/", 1)[1]]
    assert set(item["properties"]) == {"field", "code", "message"}
    assert "errors" in schemas["RejectOutput"]["required"]
