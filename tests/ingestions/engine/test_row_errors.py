"""Every problem of a rejected row (SPEC 10): one reject per row, whose `errors` are each
field's problem in field order and then the row rule's (checked only when the fields it
reads are valid), the first of them the reject's field, code and message. Stored only for a
row with more than one; a file and the live line check list the same."""

from __future__ import annotations

import json

import pytest

from apps.ingestions.engine import DEFAULT_MAX_LINE_BYTES, check_line, line_of
from apps.ingestions.engine.testing import ROW_FACTORIES, customer_row, order_item_row, uid
from apps.ingestions.models import Reject
from tests.factories import assert_counts_add_up, rejects_of

KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
}


def _without(row: dict, *names: str) -> dict:
    return {k: v for k, v in row.items() if k not in names}


def _order(**kw) -> dict:
    return _without(ROW_FACTORIES["orders"](**kw), "order_status")


MISMATCH = (
    "line_total",
    "line_total_mismatch",
    "line_total 40.00 differs from quantity x unit_price = 39.98",
)
QUANTITY_TEXT = ("quantity", "invalid_type", "quantity must be an integer, got string")

CASES = [
    pytest.param(
        "orders",
        _order(
            order_id="x",
            customer_id=5,
            customer_email_snapshot="nope",
            total_amount="abc",
            currency="EURO",
            order_date="02/01/2024",
        ),
        [
            ("order_id", "invalid_uuid", "order_id is not a valid UUID: 'x'"),
            ("customer_id", "invalid_type", "customer_id must be a UUID string, got number"),
            (
                "customer_email_snapshot",
                "invalid_email",
                "customer_email_snapshot is not a valid email address: 'nope'",
            ),
            ("total_amount", "invalid_type", "total_amount must be a decimal number, got 'abc'"),
            ("currency", "invalid_currency", "currency is not an active ISO 4217 code: 'EURO'"),
            ("order_status", "missing_field", "order_status is required"),
            (
                "order_date",
                "invalid_timestamp",
                "order_date is not an ISO 8601 timestamp: '02/01/2024'",
            ),
        ],
        id="seven-bad-fields",
    ),
    pytest.param(
        "products",
        _without(
            ROW_FACTORIES["products"](product_id="nope", sku="x" * 65, price="-1", active="yes"),
            "name",
        ),
        [
            ("product_id", "invalid_uuid", "product_id is not a valid UUID: 'nope'"),
            ("sku", "too_long", "sku is 65 characters; the limit is 64"),
            ("name", "missing_field", "name is required"),
            ("price", "out_of_range", "price must be >= 0, got -1"),
            ("active", "invalid_type", "active must be true or false, got string"),
        ],
        id="missing-among-bad",
    ),
    pytest.param("order_items", order_item_row(line_total="40.00"), [MISMATCH], id="row-rule-only"),
    pytest.param(
        "order_items",
        order_item_row(order_item_id="x", line_total="40.00"),
        [("order_item_id", "invalid_uuid", "order_item_id is not a valid UUID: 'x'"), MISMATCH],
        id="bad-field-and-row-rule",
    ),
    pytest.param(
        "order_items",
        order_item_row(order_id="x", quantity="2", line_total="40.00"),
        [("order_id", "invalid_uuid", "order_id is not a valid UUID: 'x'"), QUANTITY_TEXT],
        id="rule-input-invalid",
    ),
    pytest.param(
        "order_items",
        _without(order_item_row(product_id=7, line_total="1.00"), "unit_price"),
        [
            ("product_id", "invalid_type", "product_id must be a UUID string, got number"),
            ("unit_price", "missing_field", "unit_price is required"),
        ],
        id="rule-input-missing",
    ),
    pytest.param(
        "order_items",
        order_item_row(line_total="abc"),
        [("line_total", "invalid_type", "line_total must be a decimal number, got 'abc'")],
        id="rule-field-itself-invalid",
    ),
    pytest.param(
        "customers",
        customer_row(customer_id="nope"),
        [("customer_id", "invalid_uuid", "customer_id is not a valid UUID: 'nope'")],
        id="one-bad-field",
    ),
    pytest.param(
        "customers",
        "[1, 2]",
        [("", "not_an_object", "the line is a JSON array, not an object")],
        id="not-an-object",
    ),
    pytest.param(
        "customers",
        '{"customer_id": ',
        [("", "invalid_json", "Input data was truncated")],
        id="invalid-json",
    ),
    pytest.param(
        "customers",
        '{"customer_id": "y", "name": "x\\ud83d"}',
        [
            (
                "",
                "invalid_json",
                "JSON is malformed: \\ud83d is half a UTF-16 surrogate pair (byte 31)",
            )
        ],
        id="lone-high-surrogate",  # msgspec says "truncated" this close to the end
    ),
    pytest.param(
        "customers",
        '{"name": "\\\\ud83d", "customer_id": ',
        [("", "invalid_json", "Input data was truncated")],
        id="escaped-backslash-then-text",
    ),
]


def _good(record_type: str, label: str) -> dict:
    return ROW_FACTORIES[record_type](**{KEYS[record_type]: uid(label)})


def _line(row) -> str:
    return row if isinstance(row, str) else json.dumps(row)


@pytest.mark.parametrize(("record_type", "row", "expected"), CASES)
def test_a_rejected_row_lists_every_problem_in_field_order(
    tenant, ndjson, load, record_type, row, expected
):
    """The bad row between two good ones is one reject, with every problem in field order,
    the first its own field, code and message; the live line check lists the same."""
    rows = [_good(record_type, "good1"), row, _good(record_type, "good2")]
    upload = load(tenant, ndjson(f"{record_type}_1.ndjson", rows))
    assert rejects_of(upload) == [(2, *expected[0][:2])]
    assert (upload.state, upload.rows_total, upload.rows_rejected) == (
        "completed_with_errors",
        3,
        1,
    )
    assert upload.rows_inserted + upload.rows_pending == 2
    assert_counts_add_up(upload)
    reject = Reject.objects.get(upload=upload)
    assert (reject.field, reject.code, reject.message, reject.raw) == (*expected[0], _line(row))
    stored = [(e["field"], e["code"], e["message"]) for e in reject.errors]
    assert stored == (expected if len(expected) > 1 else [])  # one problem: the three fields
    line = line_of(2, _line(row).encode(), max_line_bytes=DEFAULT_MAX_LINE_BYTES)
    live = check_line(record_type, line)
    assert (live.field, live.code, live.message, live.raw) == (*expected[0], _line(row))
    assert [(e.field, e.code, e.message) for e in live.errors] == expected


def test_a_line_too_long_has_that_one_problem():
    """A line over the limit is not read: one problem, the line's."""
    line = line_of(4, b'{"customer_id": "x", "name": 5}', max_line_bytes=10)
    reject = check_line("customers", line)
    assert [(e.field, e.code) for e in reject.errors] == [("", "line_too_long")]


def test_rows_with_several_problems_in_several_chunks_keep_their_lists(
    tenant, ndjson, load, monkeypatch
):
    """Chunks of two rows, staged over the load's second connection: each reject keeps its
    own list, under its own line."""
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", 2)
    two = customer_row(customer_id=uid("two"), name=1, email="x")
    three = customer_row(customer_id="y", created_at="then")
    rows = [_good("customers", "a"), _good("customers", "b"), two, _good("customers", "c"), three]
    upload = load(tenant, ndjson("customers_chunks.ndjson", rows))
    assert (upload.rows_total, upload.rows_rejected, upload.rows_inserted) == (5, 2, 3)
    stored = {
        r.line: [(e["field"], e["code"]) for e in r.errors]
        for r in Reject.objects.filter(upload=upload)
    }
    assert stored == {
        3: [("name", "invalid_type"), ("email", "invalid_email")],
        5: [("customer_id", "invalid_uuid"), ("created_at", "invalid_timestamp")],
    }
