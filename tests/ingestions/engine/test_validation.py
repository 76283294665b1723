"""Row validation: every reject code of SPEC 5 (but orphan, see test_merge), the strict JSON
types clients rely on, and what valid rows are stored as."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection

from apps.ingestions.engine.testing import (
    customer_row,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import Customer, Order, OrderItem, Product, Reject
from tests.factories import assert_counts_add_up, raw_row, rejects_of

FACTORIES = {
    "customers": customer_row,
    "products": product_row,
    "orders": order_row,
    "order_items": order_item_row,
}
KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
}


def _row(record_type: str, label: str, **overrides):
    return FACTORIES[record_type](**{KEYS[record_type]: uid(label), **overrides})


def _without(row: dict, name: str) -> dict:
    return {k: v for k, v in row.items() if k != name}


def C(**kw):  # short names keep the table readable
    return ("customers", _row("customers", "bad", **kw))


def P(**kw):
    return ("products", _row("products", "bad", **kw))


def O(**kw):  # noqa: E743
    return ("orders", _row("orders", "bad", **kw))


def I(**kw):  # noqa: E743
    return ("order_items", _row("order_items", "bad", **kw))


def raw(record_type: str, **literals: str):
    return (record_type, raw_row(_row(record_type, "bad"), **literals))


def missing(record_type: str, name: str):
    return (record_type, _without(_row(record_type, "bad"), name))


def line(record_type: str, text: str | bytes):
    return (record_type, text)


_DEEP = "[" * 100_000
_HUGE_EXPONENT = "1e99999999999999999999"  # beyond what decimal.Decimal can represent
# Zero written with 99999999999 decimal places: a Decimal holds it in a few bytes, but
# written out positionally it takes 100 GB.
_ZERO_HUGE_SCALE = "0e-99999999999"

REJECTS = [
    # invalid_json
    pytest.param(*line("customers", '{"customer_id": "x"'), "", "invalid_json", id="json-cut"),
    pytest.param(*line("customers", "{'name': 'x'}"), "", "invalid_json", id="json-quotes"),
    pytest.param(*line("customers", '{"a": 1} {"b": 2}'), "", "invalid_json", id="json-two"),
    pytest.param(*line("customers", "{,}"), "", "invalid_json", id="json-comma"),
    pytest.param(*raw("products", price="NaN"), "", "invalid_json", id="json-nan"),
    pytest.param(*line("customers", '{"name": "a\x00b"}'), "", "invalid_json", id="json-nul-byte"),
    pytest.param(
        *line("customers", b'{"customer_id": "\xff\xfe", "name": "x"}'),
        "",
        "invalid_json",
        id="json-bad-utf8",
    ),
    pytest.param(
        *line("customers", _DEEP),
        "",
        "invalid_json",
        id="json-deep-nesting",
    ),
    # not_an_object
    pytest.param(*line("customers", "[1, 2]"), "", "not_an_object", id="array"),
    pytest.param(*line("customers", '"text"'), "", "not_an_object", id="string"),
    pytest.param(*line("customers", "42"), "", "not_an_object", id="number"),
    pytest.param(*line("customers", "null"), "", "not_an_object", id="null"),
    pytest.param(*line("products", "true"), "", "not_an_object", id="bool"),
    # missing_field
    pytest.param(*missing("customers", "email"), "email", "missing_field", id="no-email"),
    pytest.param(*C(email=None), "email", "missing_field", id="null-email"),
    pytest.param(*missing("customers", "created_at"), "created_at", "missing_field", id="no-ts"),
    pytest.param(*missing("customers", "customer_id"), "customer_id", "missing_field", id="no-id"),
    pytest.param(*missing("products", "active"), "active", "missing_field", id="no-active"),
    pytest.param(*missing("products", "price"), "price", "missing_field", id="no-price"),
    pytest.param(*missing("orders", "currency"), "currency", "missing_field", id="no-currency"),
    pytest.param(*missing("orders", "customer_id"), "customer_id", "missing_field", id="no-cust"),
    pytest.param(*missing("order_items", "line_total"), "line_total", "missing_field", id="no-lt"),
    pytest.param(*missing("order_items", "product_id"), "product_id", "missing_field", id="no-p"),
    # invalid_type: strict JSON types
    pytest.param(*C(name=123), "name", "invalid_type", id="name-number"),
    pytest.param(*C(name=["Ada"]), "name", "invalid_type", id="name-array"),
    pytest.param(*P(sku=123), "sku", "invalid_type", id="sku-number"),
    pytest.param(*O(external_order_id=1001), "external_order_id", "invalid_type", id="ext-num"),
    pytest.param(*C(customer_id=123), "customer_id", "invalid_type", id="uuid-number"),
    pytest.param(*C(email=True), "email", "invalid_type", id="email-bool"),
    pytest.param(*P(active="true"), "active", "invalid_type", id="bool-string"),
    pytest.param(*P(active=1), "active", "invalid_type", id="bool-number"),
    pytest.param(*I(quantity=3.0, line_total="59.97"), "quantity", "invalid_type", id="qty-3.0"),
    pytest.param(*I(quantity="3", line_total="59.97"), "quantity", "invalid_type", id="qty-str"),
    pytest.param(*I(quantity=True), "quantity", "invalid_type", id="qty-bool"),
    pytest.param(*P(price=True), "price", "invalid_type", id="price-bool"),
    pytest.param(*P(price="abc"), "price", "invalid_type", id="price-word"),
    pytest.param(*P(price="19,99"), "price", "invalid_type", id="price-comma"),
    pytest.param(*P(price=[19.99]), "price", "invalid_type", id="price-array"),
    pytest.param(*C(metadata="tier=gold"), "metadata", "invalid_type", id="meta-string"),
    pytest.param(*C(metadata=[1]), "metadata", "invalid_type", id="meta-array"),
    pytest.param(*O(raw_payload=7), "raw_payload", "invalid_type", id="payload-number"),
    pytest.param(*C(created_at=1704164645), "created_at", "invalid_type", id="ts-epoch"),
    pytest.param(*O(currency=978), "currency", "invalid_type", id="currency-number"),
    pytest.param(*C(name="Ada\x00Lovelace"), "name", "invalid_type", id="name-nul"),
    pytest.param(*C(metadata={"k": "v\x00"}), "metadata", "invalid_type", id="meta-nul"),
    pytest.param(*C(metadata={"k\x00": 1}), "metadata", "invalid_type", id="meta-key-nul"),
    pytest.param(*O(raw_payload={"a": ["\x00"]}), "raw_payload", "invalid_type", id="pay-nul"),
    pytest.param(*C(email="ada\x00@example.com"), "email", "invalid_type", id="email-nul"),
    # invalid_uuid
    pytest.param(*C(customer_id="not-a-uuid"), "customer_id", "invalid_uuid", id="uuid-word"),
    pytest.param(*C(customer_id=uid("x") + "0"), "customer_id", "invalid_uuid", id="uuid-long"),
    pytest.param(*C(customer_id=""), "customer_id", "invalid_uuid", id="uuid-empty"),
    pytest.param(*C(customer_id=uid("x")[:-1] + "\x00"), "customer_id", "invalid_uuid", id="u-nul"),
    pytest.param(*P(category_id="cat-1"), "category_id", "invalid_uuid", id="uuid-optional"),
    pytest.param(*O(customer_id="c1"), "customer_id", "invalid_uuid", id="uuid-ref"),
    pytest.param(*I(order_id="o-1"), "order_id", "invalid_uuid", id="uuid-item-order"),
    # too_long (characters, not bytes)
    pytest.param(*C(name="n" * 256), "name", "too_long", id="name-256"),
    pytest.param(*C(name="é" * 256), "name", "too_long", id="name-256-accents"),
    pytest.param(*C(email="a" * 243 + "@example.com"), "email", "too_long", id="email-255"),
    pytest.param(*P(sku="s" * 65), "sku", "too_long", id="sku-65"),
    pytest.param(*O(external_order_id="e" * 129), "external_order_id", "too_long", id="ext-129"),
    pytest.param(*O(order_status="s" * 33), "order_status", "too_long", id="status-33"),
    pytest.param(
        *O(customer_name_snapshot="n" * 256), "customer_name_snapshot", "too_long", id="snap-256"
    ),
    # out_of_range
    pytest.param(*P(price="-0.01"), "price", "out_of_range", id="price-negative"),
    pytest.param(*P(price=-1), "price", "out_of_range", id="price-negative-number"),
    pytest.param(*P(price="1.999"), "price", "out_of_range", id="price-3-places"),
    pytest.param(*raw("products", price="1.999"), "price", "out_of_range", id="price-3-num"),
    pytest.param(*P(price="10000000000"), "price", "out_of_range", id="price-11-digits"),
    pytest.param(*P(price=10000000000), "price", "out_of_range", id="price-11-digit-int"),
    pytest.param(*raw("products", price="1e10"), "price", "out_of_range", id="price-1e10"),
    pytest.param(*O(total_amount="-5"), "total_amount", "out_of_range", id="total-negative"),
    pytest.param(*I(quantity=0), "quantity", "out_of_range", id="qty-0"),
    pytest.param(*I(quantity=-2), "quantity", "out_of_range", id="qty-negative"),
    pytest.param(*I(quantity=2**31), "quantity", "out_of_range", id="qty-2-31"),
    pytest.param(*I(unit_price="0.001"), "unit_price", "out_of_range", id="unit-3-places"),
    pytest.param(*I(line_total="12345678901.00"), "line_total", "out_of_range", id="line-total-11"),
    pytest.param(
        *P(price=_HUGE_EXPONENT),
        "price",
        "out_of_range",
        id="price-string-huge-exponent",
    ),
    pytest.param(
        *raw("products", price=_HUGE_EXPONENT),
        "price",
        "out_of_range",
        id="price-number-huge-exponent",
    ),
    # out_of_range: exponents and lengths no decimal(12, 2) needs, in every numeric field and
    # in both forms (string, JSON number); bounded from the exponent, before any arithmetic
    pytest.param(*P(price=_ZERO_HUGE_SCALE), "price", "out_of_range", id="price-zero-huge-scale"),
    pytest.param(
        *raw("products", price=_ZERO_HUGE_SCALE),
        "price",
        "out_of_range",
        id="price-number-zero-huge-scale",
    ),
    pytest.param(*P(price="0e-16384"), "price", "out_of_range", id="price-zero-scale-16384"),
    pytest.param(*raw("products", price="0E-30000000"), "price", "out_of_range", id="price-0e-3e7"),
    pytest.param(*raw("products", price="-0e-99999"), "price", "out_of_range", id="price-neg-zero"),
    pytest.param(*raw("products", price="1.5e-99999"), "price", "out_of_range", id="price-tiny"),
    pytest.param(*raw("products", price="1e999999999"), "price", "out_of_range", id="price-1e9e8"),
    pytest.param(*raw("products", price="-1e999999999"), "price", "out_of_range", id="price-neg"),
    pytest.param(*raw("products", price="1E+400"), "price", "out_of_range", id="price-1E+400"),
    pytest.param(*P(price="1E+400"), "price", "out_of_range", id="price-string-1E+400"),
    pytest.param(*P(price="1" * 100_000), "price", "out_of_range", id="price-100k-digits"),
    pytest.param(*raw("products", price="9" * 4300), "price", "out_of_range", id="price-big-int"),
    pytest.param(
        *P(price="0." + "0" * 99_999 + "1"), "price", "out_of_range", id="price-long-frac"
    ),
    pytest.param(*P(price="\u0661" * 11), "price", "out_of_range", id="price-11-arabic-digits"),
    pytest.param(
        *O(total_amount=_ZERO_HUGE_SCALE), "total_amount", "out_of_range", id="total-huge-scale"
    ),
    pytest.param(
        *raw("orders", total_amount="1e999999999"), "total_amount", "out_of_range", id="total-1e9e8"
    ),
    pytest.param(
        *raw("order_items", unit_price=_ZERO_HUGE_SCALE),
        "unit_price",
        "out_of_range",
        id="unit-price-huge-scale",
    ),
    pytest.param(
        *I(unit_price="0e-30000000", line_total="0"),
        "unit_price",
        "out_of_range",
        id="unit-price-string-huge-scale",
    ),
    pytest.param(
        *raw("order_items", line_total=_ZERO_HUGE_SCALE, unit_price="0"),
        "line_total",
        "out_of_range",
        id="line-total-huge-scale",
    ),
    pytest.param(
        *raw("order_items", line_total="1E+400"), "line_total", "out_of_range", id="line-total-big"
    ),
    pytest.param(
        *raw("order_items", quantity="9" * 4300), "quantity", "out_of_range", id="qty-big"
    ),
    pytest.param(
        *raw("order_items", quantity="1e999999999"), "quantity", "invalid_type", id="qty-1e9e8"
    ),
    pytest.param(*raw("order_items", quantity="2e0"), "quantity", "invalid_type", id="qty-2e0"),
    # past the 4300 digits Python makes an int of: the same number all the same
    pytest.param(*raw("products", price="9" * 4301), "price", "out_of_range", id="price-huger-int"),
    pytest.param(
        *raw("order_items", quantity="9" * 4301), "quantity", "out_of_range", id="qty-huger"
    ),
    # invalid_type: not a number, whatever the digits
    pytest.param(*P(price="NaN"), "price", "invalid_type", id="price-string-nan"),
    pytest.param(*P(price="Infinity"), "price", "invalid_type", id="price-string-infinity"),
    pytest.param(*P(price="-Infinity"), "price", "invalid_type", id="price-string-neg-inf"),
    pytest.param(*P(price="sNaN"), "price", "invalid_type", id="price-string-snan"),
    pytest.param(*P(price="1_000"), "price", "invalid_type", id="price-underscore"),
    pytest.param(*P(price=" 1.5"), "price", "invalid_type", id="price-space"),
    pytest.param(*P(price="1" * 1000 + "x"), "price", "invalid_type", id="price-digits-then-x"),
    # out_of_range: numbers in an object that jsonb cannot store, or would print to more
    # than a million digits together (each 1e131071 prints 131072)
    pytest.param(
        *raw("customers", metadata='{"n": 1e131072}'), "metadata", "out_of_range", id="m-1"
    ),
    pytest.param(
        *raw("customers", metadata='{"n": 0e-16384}'), "metadata", "out_of_range", id="m-2"
    ),
    pytest.param(
        *raw("customers", metadata='{"n": [' + ", ".join(["1e131071"] * 9) + "]}"),
        "metadata",
        "out_of_range",
        id="meta-numbers-print-too-long",
    ),
    pytest.param(
        *raw("orders", raw_payload='{"a": {"b": [' + ", ".join(["1e-16383"] * 70) + "]}}"),
        "raw_payload",
        "out_of_range",
        id="payload-numbers-print-too-long",
    ),
    # invalid_email
    pytest.param(*C(email="ada.example.com"), "email", "invalid_email", id="email-no-at"),
    pytest.param(*C(email="ada@example"), "email", "invalid_email", id="email-undotted"),
    pytest.param(*C(email="ada@@example.com"), "email", "invalid_email", id="email-two-at"),
    pytest.param(*C(email="a@b@example.com"), "email", "invalid_email", id="email-at-at"),
    pytest.param(*C(email="ada lovelace@example.com"), "email", "invalid_email", id="email-sp"),
    pytest.param(*C(email="@example.com"), "email", "invalid_email", id="email-no-local"),
    pytest.param(*C(email="ada@example..com"), "email", "invalid_email", id="email-dots"),
    pytest.param(*C(email=""), "email", "invalid_email", id="email-empty"),
    pytest.param(
        *O(customer_email_snapshot="nope"),
        "customer_email_snapshot",
        "invalid_email",
        id="snapshot-email",
    ),
    # invalid_currency
    pytest.param(*O(currency="ZZZ"), "currency", "invalid_currency", id="ZZZ"),
    pytest.param(*O(currency="eur"), "currency", "invalid_currency", id="lowercase"),
    pytest.param(*O(currency="EURO"), "currency", "invalid_currency", id="EURO"),
    pytest.param(*O(currency="HRK"), "currency", "invalid_currency", id="withdrawn-HRK"),
    pytest.param(*O(currency="XXX"), "currency", "invalid_currency", id="no-currency-XXX"),
    pytest.param(*O(currency=""), "currency", "invalid_currency", id="empty"),
    # invalid_timestamp
    pytest.param(*C(created_at="yesterday"), "created_at", "invalid_timestamp", id="ts-word"),
    pytest.param(
        *C(created_at="2024-13-01T00:00:00Z"), "created_at", "invalid_timestamp", id="m13"
    ),
    pytest.param(
        *C(created_at="2024-02-30T00:00:00Z"), "created_at", "invalid_timestamp", id="d30"
    ),
    pytest.param(
        *C(created_at="2024-01-02T25:00:00Z"), "created_at", "invalid_timestamp", id="h25"
    ),
    pytest.param(*C(created_at=""), "created_at", "invalid_timestamp", id="ts-empty"),
    pytest.param(
        *O(order_date="2024-01-02T03:04:05+25:00"), "order_date", "invalid_timestamp", id="tz25"
    ),
    pytest.param(*O(order_date="02/01/2024"), "order_date", "invalid_timestamp", id="ts-local"),
    # line_total_mismatch (quantity 2 x 19.99 = 39.98)
    pytest.param(*I(line_total="39.96"), "line_total", "line_total_mismatch", id="lt-minus-2c"),
    pytest.param(*I(line_total="40.00"), "line_total", "line_total_mismatch", id="lt-plus-2c"),
    pytest.param(*I(line_total="19.99"), "line_total", "line_total_mismatch", id="lt-unit"),
    pytest.param(
        *I(quantity=3, unit_price="0.33", line_total="1.01"),
        "line_total",
        "line_total_mismatch",
        id="lt-0.02-over",
    ),
    # line_too_long (default limit: 1 MiB)
    pytest.param(*C(note="x" * (1 << 20)), "", "line_too_long", id="line-over-1mib"),
]


@pytest.mark.parametrize(("record_type", "bad", "field", "code"), REJECTS)
def test_a_bad_row_is_rejected_with_its_line_field_and_code(
    tenant, ndjson, load, record_type, bad, field, code
):
    """The bad row on line 3 is one reject with the exact field and code; the good rows
    around it still load (or are held, for types with parents)."""
    good = [_row(record_type, "good1"), _row(record_type, "good2")]
    upload = load(tenant, ndjson(f"{record_type}_1.ndjson", [good[0], "", bad, good[1]]))
    assert rejects_of(upload) == [(3, field, code)]
    assert (upload.state, upload.rows_total, upload.rows_rejected) == (
        "completed_with_errors",
        3,
        1,
    )
    assert upload.rows_inserted + upload.rows_pending == 2
    assert_counts_add_up(upload)
    reject = Reject.objects.get(upload=upload)
    assert reject.message
    if code != "line_too_long":
        expected_raw = bad if isinstance(bad, str | bytes) else json.dumps(bad)
        if isinstance(expected_raw, bytes):
            expected_raw = expected_raw.decode("utf-8", "replace")
        assert reject.raw == expected_raw.replace("\x00", "\ufffd")


def test_a_huge_exponent_is_one_reject_and_memory_stays_flat(tenant, ndjson, load):
    """Five prices of zero written with 30 million decimal places (a 1 KB file) are five
    `out_of_range` rejects, the good rows load, and no value is ever written out in full."""
    bad = [raw_row(product_row(product_id=uid(f"bad{i}")), price="0e-30000000") for i in range(5)]
    good = [product_row(product_id=uid("good1")), product_row(product_id=uid("good2"))]
    path = ndjson("products_1.ndjson", [good[0], *bad, good[1]])
    gc.collect()
    tracemalloc.start()
    try:
        upload = load(tenant, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rejects_of(upload) == [(line, "price", "out_of_range") for line in range(2, 7)]
    assert (upload.state, upload.rows_inserted) == ("completed_with_errors", 2)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1024 / 1024:.1f} MiB"
    message = Reject.objects.filter(upload=upload).first().message
    assert message == "price allows 10 integer digits and 2 decimal places, got 0E-30000000"


@pytest.mark.parametrize(
    ("record_type", "row"),
    [
        ("products", raw_row(product_row(product_id=uid("bad")), price=_ZERO_HUGE_SCALE)),
        ("products", product_row(product_id=uid("bad"), price=_ZERO_HUGE_SCALE)),
        ("orders", order_row(order_id=uid("bad"), total_amount="1e999999999")),
        (
            "order_items",
            raw_row(order_item_row(order_item_id=uid("bad")), line_total=_ZERO_HUGE_SCALE),
        ),
    ],
)
def test_a_strict_upload_with_a_huge_exponent_is_refused_not_crashed(
    tenant, ndjson, load, record_type, row
):
    """strict=true: the row is an `out_of_range` reject and the upload is refused as strict
    uploads with a reject are (nothing merged), not failed with an internal error."""
    good = _row(record_type, "good")
    upload = load(tenant, ndjson(f"{record_type}_1.ndjson", [good, row]), strict=True)
    field = {"products": "price", "orders": "total_amount", "order_items": "line_total"}
    assert rejects_of(upload) == [(2, field[record_type], "out_of_range")]
    assert (upload.state, upload.error_code) == ("failed", "strict_rejected")
    assert upload.rows_inserted == 0


@pytest.mark.parametrize(
    ("field", "literal"),
    [("price", '"' + "1" * 60_000 + 'x"'), ("price", '"' + "1" * 60_000 + '.5x"')],
)
def test_a_long_numeric_string_is_checked_in_linear_time(tenant, ndjson, load, field, literal):
    """A string of 60 000 digits and a stray character is an `invalid_type` reject found in
    linear time (the check once backtracked quadratically: tens of seconds per value), and
    the message quotes only its start."""
    row = raw_row(product_row(product_id=uid("bad")), **{field: literal})
    started = time.monotonic()
    upload = load(tenant, ndjson("products_1.ndjson", [product_row(), row]))
    elapsed = time.monotonic() - started
    assert rejects_of(upload) == [(2, field, "invalid_type")]
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert len(Reject.objects.get(upload=upload).message) < 200


def test_rejects_keep_their_order_and_line_numbers_in_a_file_with_many(tenant, ndjson, load):
    """Several bad rows in one file each get their own physical line number."""
    rows = [
        customer_row(customer_id=uid("a")),
        customer_row(customer_id=uid("b"), email="x"),
        "",
        "[]",
        customer_row(customer_id=uid("c")),
        customer_row(customer_id="nope"),
        _without(customer_row(customer_id=uid("d")), "name"),
    ]
    upload = load(tenant, ndjson("customers_1.ndjson", rows))
    assert rejects_of(upload) == [
        (2, "email", "invalid_email"),
        (4, "", "not_an_object"),
        (6, "customer_id", "invalid_uuid"),
        (7, "name", "missing_field"),
    ]
    assert (upload.rows_total, upload.rows_inserted, upload.rows_rejected) == (6, 2, 4)
    assert Customer.objects.filter(tenant=tenant).count() == 2


# --- what valid rows are stored as ------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "stored"),
    [
        ('"19.99"', Decimal("19.99")),
        ("19.99", Decimal("19.99")),
        ("1e2", Decimal("100.00")),
        ('"1e2"', Decimal("100.00")),
        ("1.15", Decimal("1.15")),
        ("0", Decimal("0.00")),
        ('"0.5"', Decimal("0.50")),
        ("19.990", Decimal("19.99")),
        ("9999999999.99", Decimal("9999999999.99")),
        ('"9999999999.99"', Decimal("9999999999.99")),
        ("0.1e1", Decimal("1.00")),
        ('"007.50"', Decimal("7.50")),
        ('"9999999999"', Decimal("9999999999.00")),
        ('"00000000001.5"', Decimal("1.50")),  # 11 digits, 10 significant
        ('"\u0661\u0662.\u0665"', Decimal("12.50")),  # Arabic-Indic digits: 12.5
        ('"' + "\u0669" * 10 + '.\u0669\u0669"', Decimal("9999999999.99")),
        # trailing zeros, negative zero and exponents keep their value, within bounds
        ('"1.500"', Decimal("1.50")),
        ("1.500", Decimal("1.50")),
        ("9999999999.990", Decimal("9999999999.99")),
        ('"1.5' + "0" * 16382 + '"', Decimal("1.50")),  # 16383 decimal places, the most
        ('"0e-16383"', Decimal("0.00")),
        ("0E-16383", Decimal("0.00")),
        ("-0e-5", Decimal("0.00")),
        ("-0.0", Decimal("0.00")),
        ('"-0"', Decimal("0.00")),
        ("0e999999999", Decimal("0.00")),
        ("1.5E+9", Decimal("1500000000.00")),
        ("12345e-2", Decimal("123.45")),
        ("9999999999", Decimal("9999999999.00")),
    ],
)
def test_decimals_are_stored_exactly(tenant, ndjson, load, literal, stored):
    """Decimals given as JSON numbers or numeric strings are stored exactly, never through a
    binary float (9999999999.99 and 1.15 have no exact float)."""
    row = raw_row(product_row(product_id=uid("p")), price=literal)
    upload = load(tenant, ndjson("products_1.ndjson", [row]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    price = Product.objects.get(tenant=tenant, product_id=uid("p")).price
    assert price == stored
    assert str(price) == str(stored)


_LONG = "1" + "0" * 4400  # an integer past Python's 4300 digits for reading one


def test_an_integer_too_long_for_python_to_read_is_a_number_all_the_same(tenant, ndjson, load):
    """Metadata keeps it, exactly (as `1e4400` is kept); a price that long is out of range,
    as one of 4200 digits is. Both were `invalid_json` ("Integer value out of range")."""
    customer = raw_row(customer_row(customer_id=uid("long")), metadata=f'{{"n": {_LONG}}}')
    upload = load(tenant, ndjson("customers_1.ndjson", [customer]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT metadata::text FROM customers WHERE tenant_id = %s", [tenant.id])
        assert cursor.fetchone()[0] == f'{{"n": {_LONG}}}'
    prices = [
        raw_row(product_row(product_id=uid(f"p{n}")), price=price)
        for n, price in enumerate(["1" * 4200, _LONG, '"x"', f"-{_LONG}"])
    ]
    upload = load(tenant, ndjson("products_1.ndjson", prices))
    assert rejects_of(upload) == [
        (1, "price", "out_of_range"),
        (2, "price", "out_of_range"),
        (3, "price", "invalid_type"),
        (4, "price", "out_of_range"),
    ]


@pytest.mark.parametrize(
    ("quantity", "unit_price", "line_total"),
    [
        (2, "19.99", "39.98"),
        (2, "19.99", "39.97"),  # 0.01 under: the tolerance is inclusive
        (2, "19.99", "39.99"),  # 0.01 over
        (3, "0.33", "1.00"),
        (3, "0.33", "0.98"),
        (1, 0, 0),
        (2**31 - 1, "0.00", "0.00"),
        (2, "1.500", "3.000"),
        (4, "2.5e0", "1e1"),
        (3, "0e-16383", "0E+9"),
        (2**31 - 1, "4.65", "9985798958.55"),
    ],
)
def test_line_total_within_a_cent_of_quantity_times_unit_price_is_kept(
    tenant, ndjson, load, quantity, unit_price, line_total
):
    """line_total may differ from quantity x unit_price by at most 0.01, inclusive."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    load(tenant, ndjson("products_1.ndjson", [product_row()]))
    load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    item = order_item_row(quantity=quantity, unit_price=unit_price, line_total=line_total)
    upload = load(tenant, ndjson("order_items_1.ndjson", [item]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    stored = OrderItem.objects.get(tenant=tenant, order_item_id=uid("i1"))
    assert (stored.quantity, stored.line_total) == (quantity, Decimal(str(line_total)))


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+00:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+02:00", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05-05:30", datetime(2024, 1, 2, 8, 34, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T23:30:00.5+14:00", datetime(2024, 1, 2, 9, 30, 0, 500000, tzinfo=UTC)),
        ("2024-02-29T23:59:59.123456Z", datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5Z", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        # past the microsecond, digits are dropped, not rounded (PostgreSQL would round),
        # whichever way the offset is written
        ("2024-01-02T03:04:05.1234567Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.1234567+00:00", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("9999-12-31T23:59:59.9999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_timestamps_keep_their_instant_and_no_offset_means_utc(tenant, ndjson, load, text, instant):
    """ISO 8601 timestamps are stored as the instant they name; without an offset, UTC."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(created_at=text)]))
    stored = Customer.objects.get(tenant=tenant, customer_id=uid("c1")).created_at
    assert stored == instant


def test_no_offset_means_utc_whatever_the_session_time_zone(tenant, ndjson, load):
    """A timestamp without an offset is UTC even when the database session is not."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'America/New_York'")
    try:
        load(tenant, ndjson("customers_1.ndjson", [customer_row(created_at="2024-07-01T12:00")]))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
    stored = Customer.objects.get(tenant=tenant, customer_id=uid("c1")).created_at
    assert stored == datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    assert stored.astimezone(timezone(timedelta(hours=-4))).hour == 8


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Ñandú",
        "山田 太郎",
        "Ада Лавлейс 🚀",
        'Tab\tNewline\nBackslash\\ "quoted" \\N',
        "é" * 255,
        "🚀" * 255,
    ],
)
def test_unicode_and_special_characters_in_names_are_kept_exactly(tenant, ndjson, load, name):
    """Names are stored character for character (255 is a character limit, not bytes), and
    COPY-special characters survive."""
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(name=name)]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c1")).name == name


def test_unicode_escapes_decode_to_the_same_name(tenant, ndjson, load):
    """`\\u00eb` and a raw `ë` (and a surrogate pair) are the same text."""
    row = raw_row(customer_row(), name='"Zo\\u00eb \\ud83d\\ude80"')
    load(tenant, ndjson("customers_1.ndjson", [row]))
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c1")).name == "Zoë 🚀"


def test_a_lone_surrogate_is_rejected_rather_than_crashing(tenant, ndjson, load):
    """A string that is not valid Unicode is a reject, and the rest of the file loads."""
    bad = raw_row(customer_row(customer_id=uid("c2")), name='"\\ud800"')
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(), bad]))
    assert rejects_of(upload) == [(2, "", "invalid_json")]
    assert upload.rows_inserted == 1


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "a.b+tag@sub.example.co.uk",
        "zoë@exämple.de",
        "x@y.z",
        "a" * 242 + "@example.com",
    ],
)
def test_emails_are_checked_by_syntax_only(tenant, ndjson, load, email):
    """One `@` and a dotted domain are enough; no DNS lookup decides it."""
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(email=email)]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c1")).email == email


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY", "CHF", "GBP", "INR"])
def test_active_iso_4217_currencies_are_accepted(tenant, ndjson, load, currency):
    """Active ISO 4217 codes are kept as given."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    upload = load(tenant, ndjson("orders_1.ndjson", [order_row(currency=currency)]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    assert Order.objects.get(tenant=tenant, order_id=uid("o1")).currency == currency


@pytest.mark.parametrize("text", ["\\u0000", "C:\\u0000x", "\\\\u0000", "\\\\\\u0000"])
def test_a_backslash_and_u0000_in_an_object_is_text_not_a_nul(tenant, ndjson, load, text):
    """Only a real NUL is refused in an object: a backslash followed by "u0000" is text
    (its JSON escape once looked like the escape of a NUL) and is stored as it came."""
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(metadata={text: [text]})]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)
    assert Customer.objects.get(tenant=tenant).metadata == {text: [text]}


def test_numbers_in_an_object_print_to_a_million_digits_at_most(tenant, ndjson, load):
    """Numbers jsonb can store are kept as long as all of an object's print (in full, as
    PostgreSQL prints them) to at most a million digits: seven times 1e131071 is fine."""
    metadata = '{"n": [' + ", ".join(["1e131071"] * 7) + '], "m": 1e-16383}'
    row = raw_row(customer_row(), metadata=metadata)
    upload = load(tenant, ndjson("customers_1.ndjson", [row]))
    assert (upload.rows_inserted, upload.rows_rejected) == (1, 0)


def test_unknown_fields_are_ignored(tenant, ndjson, load):
    """Fields outside the record's table are ignored, whatever their type or content."""
    row = customer_row(
        loyalty_points=12,
        nested={"deep": [1, {"x": None}]},
        note="\x00 not stored, so not a problem",
        price="not a price",
    )
    upload = load(tenant, ndjson("customers_1.ndjson", [row]))
    assert (upload.state, upload.rows_inserted, upload.rows_rejected) == ("completed", 1, 0)
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c1")).name == "Ada Lovelace"


def test_optional_fields_take_their_defaults(tenant, ndjson, load):
    """metadata defaults to {}, category_id and raw_payload to null; null equals absent."""
    load(tenant, ndjson("customers_1.ndjson", [_without(customer_row(), "metadata")]))
    load(tenant, ndjson("products_1.ndjson", [product_row(category_id=None)]))
    load(tenant, ndjson("orders_1.ndjson", [_without(order_row(), "raw_payload")]))
    assert Customer.objects.get(tenant=tenant).metadata == {}
    assert Product.objects.get(tenant=tenant).category_id is None
    assert Order.objects.get(tenant=tenant).raw_payload is None


def test_every_field_of_every_type_is_stored_as_given(tenant, ndjson, load):
    """A valid row of each type arrives in its final table with every value intact."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(metadata={"tier": "gold", "n": 1.5})]))
    load(tenant, ndjson("products_1.ndjson", [product_row()]))
    load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    load(tenant, ndjson("order_items_1.ndjson", [order_item_row()]))
    customer = Customer.objects.get(tenant=tenant)
    assert (customer.customer_id, customer.name, customer.email) == (
        uuid.UUID(uid("c1")),
        "Ada Lovelace",
        "ada@example.com",
    )
    assert customer.metadata == {"tier": "gold", "n": 1.5}
    product = Product.objects.get(tenant=tenant)
    assert (product.sku, product.price, product.category_id, product.active) == (
        "SKU-1",
        Decimal("19.99"),
        uuid.UUID(uid("cat1")),
        True,
    )
    order = Order.objects.get(tenant=tenant)
    assert (order.external_order_id, order.total_amount, order.currency) == (
        "EXT-1",
        Decimal("39.98"),
        "EUR",
    )
    assert order.order_date == datetime(2024, 2, 3, 3, 5, 6, tzinfo=UTC)
    assert order.raw_payload == {"source": "test"}
    item = OrderItem.objects.get(tenant=tenant)
    assert (item.quantity, item.unit_price, item.line_total) == (
        2,
        Decimal("19.99"),
        Decimal("39.98"),
    )


@pytest.mark.parametrize(
    ("row", "field", "code"),
    [
        (customer_row(name="Ada\x00"), "name", "invalid_type"),
        (customer_row(metadata={"a": "\x00"}), "metadata", "invalid_type"),
        (customer_row(metadata={"\x00": 1}), "metadata", "invalid_type"),
        (customer_row(email="\x00@example.com"), "email", "invalid_type"),
        (customer_row(created_at="2024-01-02\x00"), "created_at", "invalid_timestamp"),
        (customer_row(customer_id="\x00"), "customer_id", "invalid_uuid"),
    ],
)
def test_nul_characters_are_rejected_rather_than_crashing(tenant, ndjson, load, row, field, code):
    """PostgreSQL text cannot hold NUL: a row carrying one is a reject of that field, the
    reject's raw line is stored, and the next row still loads."""
    upload = load(tenant, ndjson("customers_1.ndjson", [row, customer_row(customer_id=uid("ok"))]))
    assert rejects_of(upload) == [(1, field, code)]
    assert (upload.state, upload.rows_inserted) == ("completed_with_errors", 1)
    assert "\\u0000" in Reject.objects.get(upload=upload).raw
