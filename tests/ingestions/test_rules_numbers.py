"""Numbers in a tenant's rules, as stored and read back: a rule checks rows with the exact
numbers it was written with, whatever their digits (it was read back as floats: 1e-400 was
zero, and a bound past a float's range a 500 on every batch), and a rule whose bound
jsonb prints in more digits than Python's `int()` reads is still shown, replaced and
ended."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from apps.ingestions.engine.testing import customer_row
from apps.ingestions.services import records_merge
from apps.ingestions.tables import Customer

pytestmark = pytest.mark.django_db

RULES = "/api/v1/ingest/rules/"
TINY = "0." + "0" * 399 + "1"  # 1e-400, written out
HUGE = "1" + "0" * 400 + ".5"  # past a float's range


def _put_rule(client, keyword: str, bound: str) -> None:
    """A rule on the customers' `metadata.s`, its bound written exactly as given."""
    rule = f'{{"{keyword}": {bound}}}'
    body = '{"schema": {"properties": {"metadata": {"properties": {"s": ' + rule + "}}}}}"
    answer = client.put(f"{RULES}customers/", body, content_type="application/json")
    assert answer.status_code == 200, answer.content


def _line(value: str) -> str:
    """A customer whose `metadata.s` is `value`, written exactly as given."""
    return json.dumps(customer_row(metadata={"s": "VALUE"})).replace('"VALUE"', value)


@pytest.mark.parametrize(
    ("keyword", "bound", "value", "accepted"),
    [
        ("maximum", "19.990000000000000000001", "19.990000000000000000001", True),
        ("maximum", "19.990000000000000000001", "19.990000000000000000002", False),
        ("exclusiveMaximum", "1e-400", "0", True),
        ("exclusiveMinimum", "-1e-400", "0", True),
        ("minimum", TINY, "0", False),
        ("enum", "[0.30000000000000001]", "0.3", False),
        ("enum", "[0.30000000000000001]", "0.30000000000000001", True),
        ("multipleOf", "1e-400", "5", True),
        ("maximum", HUGE, "3", True),
        ("minimum", HUGE, "3", False),
        ("maximum", "1e4300", "3", True),
    ],
)
def test_a_stored_rule_checks_a_batch_with_its_numbers_exactly(
    client, keyword, bound, value, accepted
):
    """As written, not as the float nearest: the rule in force is the one the PUT checked
    and shows (each case was wrong, or a 500, read back as floats)."""
    _put_rule(client, keyword, bound)
    answer = client.post(
        "/api/v1/ingest/records/customers/", _line(value), content_type="application/x-ndjson"
    )
    assert answer.status_code == 202, answer.content
    rejects = answer.json()["rejects"]
    assert (answer.json()["rejected"] == 0) is accepted, rejects
    if not accepted:
        [reject] = rejects
        assert (reject["field"], reject["code"]) == ("metadata.s", "rule_violation")


def test_a_bound_jsonb_prints_past_4300_digits_is_shown_replaced_and_ended(client):
    """`1e4300` is stored as 4,301 digits: reading it back with `int()` made the PUT's
    answer, every GET and the DELETE of the type's rules a 500."""
    _put_rule(client, "maximum", "1e4300")
    shown = client.get(f"{RULES}customers/")
    assert shown.status_code == 200, shown.content
    assert b'"maximum":1' + b"0" * 4300 + b"}" in shown.content
    assert client.get(RULES).status_code == 200
    _put_rule(client, "maximum", "5")
    again = client.get(f"{RULES}customers/").content
    assert json.loads(again, parse_int=Decimal)["versions"] == 2  # the 4,301 digits too
    assert client.delete(f"{RULES}customers/").status_code == 204


def test_an_unknown_format_is_refused(client):
    """A misspelt format checks nothing: refused, as a misspelt type is."""
    answer = client.put(
        f"{RULES}customers/",
        {"schema": {"properties": {"email": {"format": "emial"}}}},
        format="json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "invalid_rules"
    assert "Unknown format: 'emial'" in answer.json()["detail"]


def test_a_customers_metadata_number_of_4301_digits_reads_back(client, tenant):
    """A loaded customer's metadata with `1e4300` (jsonb prints 4,301 digits) is read as
    stored (the admin's page of it was a 500)."""
    line = json.dumps(customer_row(metadata={"n": "N"})).replace('"N"', "1e4300")
    answer = client.post(
        "/api/v1/ingest/records/customers/", line, content_type="application/x-ndjson"
    )
    assert (answer.status_code, answer.json()["rejected"]) == (202, 0), answer.content
    records_merge(tenant_id=tenant.id)
    assert Customer.objects.get(tenant=tenant).metadata == {"n": Decimal(10) ** 4300}


def test_a_lone_surrogate_in_a_rules_body_is_said_so(client):
    """Half a UTF-16 surrogate pair is named, with where it is, as a row's reject names it
    (the decoder's own words were "Input data was truncated")."""
    body = b'{"schema": {"properties": {"name": {"const": "\\ud800"}}}}'
    answer = client.put(f"{RULES}customers/", body, content_type="application/json")
    assert (answer.status_code, answer.json()["code"]) == (400, "parse_error")
    assert answer.json()["detail"] == (
        "JSON parse error - JSON is malformed: \\ud800 is half a UTF-16 surrogate pair (byte 46)"
    )
