"""JSON nested past Python's recursion limit is a client's malformed body: 400 problem+json
(or, inside a batch, that record's reject), never a 500."""

import json

import pytest

from apps.ingestions.engine.testing import customer_row
from apps.ingestions.models import RecordBatch
from apps.tenants.services import tenant_create

DEEP = 100_000
DEEPLY = "[" * DEEP + "]" * DEEP  # one element, nested past the decoder


@pytest.fixture
def keyed(api, db):
    return api.as_tenant(tenant_create(name="deep")[1].raw)


def test_a_deeply_nested_json_body_is_a_400_parse_error(keyed):
    """DRF's JSON parser (session creation) refuses it as malformed JSON."""
    body = "[" * DEEP + "]" * DEEP
    response = keyed.post("/api/v1/ingest/sessions/", body, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (400, "application/problem+json")
    assert "nested too deeply" in response.json()["detail"]


def test_a_deeply_nested_json_array_element_is_that_records_reject(keyed):
    """A JSON array batch whose one element nests past what the decoder reads at once: that
    element is its record's invalid_json reject, as its line in NDJSON is; a batch the
    outline shows malformed is still a 400."""
    body = "[" * DEEP + "]" * DEEP
    response = keyed.post("/api/v1/ingest/records/products/", body, content_type="application/json")
    assert response.status_code == 202, response.content[:300]
    batch = response.json()
    assert (batch["records"], batch["rejected"], batch["state"]) == (1, 1, "merged")
    assert (batch["rejects"][0]["line"], batch["rejects"][0]["code"]) == (1, "invalid_json")
    assert "nested too deeply" in batch["rejects"][0]["message"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("{" + DEEPLY + "}", "Expected `array`, got `object`"),
        ("[" + DEEPLY + "] x", "it does not start with '[' and end with ']'."),
        ("[" + DEEPLY + ', "a]', "a string at byte 200003 never ends."),
        ("\n [" + DEEPLY + "]]", "an unmatched ']' at byte 200003."),
        ("[" + DEEPLY + ",{]", "it ends inside an element."),
        ("[" + DEEPLY + ",]", "element 2 is empty (two commas, or a trailing one)."),
        ("[" + DEEPLY + ",, 1]", "element 2 is empty (two commas, or a trailing one)."),
    ],
)
def test_a_malformed_deep_json_array_batch_is_a_400(keyed, body, detail):
    """Found element by element, a deep array is still read whole first: any fault of its
    own outline (an empty element included) is the whole batch's 400; an element that is
    no JSON is its record's reject (tests/ingestions/test_records_edges.py)."""
    response = keyed.post("/api/v1/ingest/records/", body, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (400, "bad_json")
    assert response.json()["detail"].startswith("The body is not a JSON array: ")
    assert detail in response.json()["detail"]
    assert not RecordBatch.objects.exists()


def test_a_deeply_nested_record_is_that_records_reject_in_ndjson_and_in_an_array(keyed):
    """One record nested too deep is that record's invalid_json reject, in NDJSON and in a
    JSON array alike; the other records are accepted."""
    # the outline's marks inside a string are text
    good = json.dumps({"type": "customers", "record": customer_row(name='A "[" ], {\\ }')})
    deep = (
        '{"type": "customers", "record": {"metadata": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}}"
    )
    response = keyed.post(
        "/api/v1/ingest/records/", f"{good}\n{deep}\n", content_type="application/x-ndjson"
    )
    in_an_array = keyed.post(
        "/api/v1/ingest/records/", f"[{good},\n {deep}]", content_type="application/json"
    )
    for answer in (response, in_an_array):
        assert answer.status_code == 202, answer.content[:300]
        batch = answer.json()
        assert (batch["records"], batch["rejected"]) == (2, 1)
        assert (batch["rejects"][0]["line"], batch["rejects"][0]["code"]) == (2, "invalid_json")
        assert "nested too deeply" in batch["rejects"][0]["message"]
    assert RecordBatch.objects.filter(accepted=1).count() == 2


def test_a_number_past_pythons_digit_limit_is_a_400_in_the_clients_terms(keyed):
    """A 5,000-digit integer cannot be read by Python's JSON decoder: 400, saying the
    limit, not "use sys.set_int_max_str_digits()"."""
    body = '{"filename": "a.ndjson", "size": 1' + "0" * 5000 + "}"
    response = keyed.post("/api/v1/ingest/sessions/", body, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (400, "application/problem+json")
    assert response.json()["detail"] == "JSON parse error - a number has more than 4300 digits."
