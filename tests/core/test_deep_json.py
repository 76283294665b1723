"""JSON nested past Python's recursion limit is a client's malformed body: 400 problem+json
(or, inside a batch, that record's reject), never a 500."""

import json

import pytest

from apps.ingestions.engine.testing import customer_row
from apps.tenants.services import tenant_create

DEEP = 100_000


@pytest.fixture
def keyed(api, db):
    return api.as_tenant(tenant_create(name="deep")[1].raw)


def test_a_deeply_nested_json_body_is_a_400_parse_error(keyed):
    """DRF's JSON parser (session creation) refuses it as malformed JSON."""
    body = "[" * DEEP + "]" * DEEP
    response = keyed.post("/api/v1/ingest/sessions/", body, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (400, "application/problem+json")
    assert "nested too deeply" in response.json()["detail"]


def test_a_deeply_nested_json_array_batch_is_a_400(keyed):
    """A records batch whose body is nested too deep to be an array of records."""
    body = "[" * DEEP + "]" * DEEP
    response = keyed.post("/api/v1/ingest/records/products/", body, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (400, "bad_json")


def test_a_deeply_nested_record_in_an_ndjson_batch_is_that_records_reject(keyed):
    """In NDJSON, one line nested too deep is that record's invalid_json reject; the other
    records are accepted. (In a JSON array the whole body cannot be read: 400 bad_json.)"""
    good = json.dumps({"type": "customers", "record": customer_row()})
    deep = (
        '{"type": "customers", "record": {"metadata": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}}"
    )
    response = keyed.post(
        "/api/v1/ingest/records/", f"{good}\n{deep}\n", content_type="application/x-ndjson"
    )
    assert response.status_code == 202, response.content[:300]
    batch = response.json()
    assert (batch["records"], batch["rejected"]) == (2, 1)
    assert (batch["rejects"][0]["line"], batch["rejects"][0]["code"]) == (2, "invalid_json")
    in_an_array = keyed.post(
        "/api/v1/ingest/records/", f"[{good}, {deep}]", content_type="application/json"
    )
    assert (in_an_array.status_code, in_an_array.json()["code"]) == (400, "bad_json")


def test_a_number_past_pythons_digit_limit_is_a_400_in_the_clients_terms(keyed):
    """A 5,000-digit integer cannot be read by Python's JSON decoder: 400, saying the
    limit, not "use sys.set_int_max_str_digits()"."""
    body = '{"filename": "a.ndjson", "size": 1' + "0" * 5000 + "}"
    response = keyed.post("/api/v1/ingest/sessions/", body, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (400, "application/problem+json")
    assert response.json()["detail"] == "JSON parse error - a number has more than 4300 digits."
