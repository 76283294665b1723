"""The analytics endpoints: exact answers over a small shop, ranges and time zones, what
another tenant sees, and each bad parameter as a 400 that names it."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.analytics.params import Range
from apps.analytics.selectors import analytics_summary
from apps.ingestions.engine.testing import order_item_row, order_row, uid
from apps.tenants.services import api_key_rotate
from tests.factories import shop_load

pytestmark = pytest.mark.django_db

SUMMARY = "/api/v1/analytics/summary/"
DAILY = "/api/v1/analytics/daily/"
PRODUCTS = "/api/v1/analytics/top-products/"
CUSTOMERS = "/api/v1/analytics/customers/top/"
EMPTY = {
    "orders": 0,
    "items": 0,
    "units": 0,
    "customers": 0,
    "revenue": {},
    "average_order_value": {},
}


def _get(client, path, **params):
    """The answer's JSON, which never holds a float: counts are integers, money strings."""
    response = client.get(path, params)
    assert response.status_code == 200, response.content
    data = response.json()
    values = [data]
    while values:
        value = values.pop()
        assert not isinstance(value, float), f"a float in {response.content!r}"
        values.extend(value.values() if isinstance(value, dict) else [])
        values.extend(value if isinstance(value, list) else [])
    return data


def test_the_summary_counts_every_order_and_never_adds_currencies(shop, client_for):
    """Three orders in two currencies: revenue and average order value per currency,
    rounded half up to the cent, as exact strings."""
    assert _get(client_for(shop), SUMMARY) == {
        "orders": 3,
        "items": 4,
        "units": 7,
        "customers": 2,
        "revenue": {"EUR": "35.01", "USD": "5.00"},
        "average_order_value": {"EUR": "17.51", "USD": "5.00"},
    }


def test_a_date_range_takes_whole_days_and_a_timestamp_is_exact(shop, client_for):
    """`to` as a date includes all of that day; `from` as a timestamp starts at that
    instant; `currency` keeps one currency's orders."""
    client = client_for(shop)
    one_day = _get(client, SUMMARY, **{"from": "2024-03-01", "to": "2024-03-01"})
    assert (one_day["orders"], one_day["items"], one_day["units"]) == (2, 3, 5)
    later = _get(client, SUMMARY, **{"from": "2024-03-01T12:00:00Z"})
    assert later["revenue"] == {"EUR": "10.01", "USD": "5.00"}
    # digits past the microsecond are dropped, as a row's timestamp's are
    assert _get(client, SUMMARY, **{"from": "2024-03-01T12:00:00.000000999Z"}) == later
    dollars = _get(client, SUMMARY, currency="USD")
    assert dollars == {
        "orders": 1,
        "items": 1,
        "units": 2,
        "customers": 1,
        "revenue": {"USD": "5.00"},
        "average_order_value": {"USD": "5.00"},
    }


def test_daily_totals_fall_on_the_day_of_the_time_zone_asked_for(shop, client_for):
    """An order at 23:30 UTC is on the next day in Berlin; days without orders are left
    out."""
    client = client_for(shop)
    utc = _get(client, DAILY)
    assert utc == {
        "tz": "UTC",
        "days": [
            {
                "date": "2024-03-01",
                "orders": 2,
                "items": 3,
                "units": 5,
                "customers": 2,
                "revenue": {"EUR": "35.01"},
                "average_order_value": {"EUR": "17.51"},
            },
            {
                "date": "2024-03-05",
                "orders": 1,
                "items": 1,
                "units": 2,
                "customers": 1,
                "revenue": {"USD": "5.00"},
                "average_order_value": {"USD": "5.00"},
            },
        ],
    }
    berlin = _get(client, DAILY, tz="Europe/Berlin", currency="EUR")
    assert berlin == {
        "tz": "Europe/Berlin",
        "days": [
            {
                "date": "2024-03-01",
                "orders": 1,
                "items": 2,
                "units": 4,
                "customers": 1,
                "revenue": {"EUR": "25.00"},
                "average_order_value": {"EUR": "25.00"},
            },
            {
                "date": "2024-03-02",
                "orders": 1,
                "items": 1,
                "units": 1,
                "customers": 1,
                "revenue": {"EUR": "10.01"},
                "average_order_value": {"EUR": "10.01"},
            },
        ],
    }


def test_top_products_are_ranked_per_product_and_currency(shop, client_for):
    """One entry per product and currency, by revenue (ties by product, then currency) or
    by units; `limit` cuts the list."""
    client = client_for(shop)
    pen = {"product_id": uid("pen"), "sku": "PEN", "name": "Pen"}
    ink = {"product_id": uid("ink"), "sku": "INK", "name": "Ink"}
    assert _get(client, PRODUCTS) == {
        "by": "revenue",
        "products": [
            {**ink, "currency": "EUR", "units": 3, "revenue": "30.01"},
            {**pen, "currency": "EUR", "units": 2, "revenue": "5.00"},
            {**pen, "currency": "USD", "units": 2, "revenue": "5.00"},
        ],
    }
    by_units = _get(client, PRODUCTS, by="units", limit="1", **{"from": "2024-03-05"})
    assert by_units == {
        "by": "units",
        "products": [{**pen, "currency": "USD", "units": 2, "revenue": "5.00"}],
    }


def test_top_customers_are_ranked_by_revenue_per_currency(shop, client_for):
    """Each customer once per currency they ordered in, with orders and revenue."""
    ada = {"customer_id": uid("ada"), "name": "Ada", "email": "ada@example.com"}
    bob = {"customer_id": uid("bob"), "name": "Bob", "email": "bob@example.com"}
    assert _get(client_for(shop), CUSTOMERS) == {
        "customers": [
            {**ada, "currency": "EUR", "orders": 1, "revenue": "25.00"},
            {**bob, "currency": "EUR", "orders": 1, "revenue": "10.01"},
            {**ada, "currency": "USD", "orders": 1, "revenue": "5.00"},
        ]
    }


@pytest.mark.parametrize(
    ("path", "empty"),
    [
        (SUMMARY, EMPTY),
        (DAILY, {"tz": "UTC", "days": []}),
        (PRODUCTS, {"by": "revenue", "products": []}),
        (CUSTOMERS, {"customers": []}),
    ],
)
def test_another_tenant_sees_nothing_of_the_shop(shop, other_tenant, client_for, path, empty):
    """The other tenant's answer is empty, not the shop's figures."""
    assert _get(client_for(other_tenant), path) == empty


@pytest.mark.parametrize("path", [SUMMARY, DAILY, PRODUCTS, CUSTOMERS])
@pytest.mark.parametrize(
    ("params", "all_of_it"),
    [
        ({"from": "9999-11-20", "to": "9999-12-30"}, False),
        ({"from": "9999-12-02T00:00:00Z", "to": "9999-12-31T12:00:00Z"}, False),
        ({"from": "2024-03-01", "to": "9999-12-28"}, True),
        ({"to": "9999-12-30", "tz": "America/New_York"}, True),
        ({"from": "2024-01-01T00:00:00-23:59", "to": "2024-12-31T00:00:00+23:59"}, True),
        ({"from": "0001-01-01", "tz": "Asia/Kolkata"}, True),
        ({"from": "0001-01-01T00:00:00+23:59", "tz": "Asia/Kolkata"}, True),
        # both before the first instant there is: a range there, empty
        ({"from": "0001-01-01T00:00:00+23:59", "to": "0001-01-01T05:00:00+23:59"}, False),
        ({"from": "9999-12-31", "to": "9999-12-31"}, False),
    ],
)
def test_ranges_at_the_calendars_ends_and_offsets_past_postgresqls_are_answered(
    shop, client_for, path, params, all_of_it
):
    """December 9999 has no month after it: its ends are read up to the end of time. ISO
    8601 offsets go to 23:59, PostgreSQL's to 15:59: bounds are sent in UTC. A day that
    starts before 0001-01-01 UTC (east of UTC) starts at the first instant there is. None
    is a 500; a range holding all of the shop's orders (2024) gives all of its figures."""
    client = client_for(shop)
    answer = _get(client, path, **params)
    if all_of_it:
        assert answer == _get(client, path, tz=params.get("tz", "UTC"))


@pytest.mark.parametrize("path", [SUMMARY, DAILY, PRODUCTS, CUSTOMERS])
def test_without_a_key_the_answer_is_401(api, path):
    """No X-API-Key: 401 problem+json."""
    response = api.get(path)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (SUMMARY, {"from": "2024-13-01"}, "from"),
        (SUMMARY, {"from": "yesterday"}, "from"),
        (SUMMARY, {"to": "2024-03-01T25:00:00Z"}, "to"),
        (SUMMARY, {"from": "2024-03-02", "to": "2024-03-01"}, "to"),
        (SUMMARY, {"from": "0001-01-01T05:00:00+23:59", "to": "0001-01-01T00:00:00+23:59"}, "to"),
        (SUMMARY, {"from": "2024-03-01\x00"}, "from"),
        (SUMMARY, {"from": "２０２４-03-01"}, "from"),
        (SUMMARY, {"from": "9999-12-31T23:59:59+99:00"}, "from"),
        (SUMMARY, {"currency": "eur"}, "currency"),
        (DAILY, {"tz": "Mars/Olympus"}, "tz"),
        (DAILY, {"tz": "UTC\x00"}, "tz"),
        (DAILY, {"tz": "../etc/passwd"}, "tz"),
        (DAILY, {"tz": "localtime"}, "tz"),  # the machine's zone, not a place's
        (DAILY, {"tz": "Factory"}, "tz"),
        (PRODUCTS, {"limit": "0"}, "limit"),
        (PRODUCTS, {"limit": "101"}, "limit"),
        (PRODUCTS, {"limit": "٣"}, "limit"),
        (PRODUCTS, {"by": "foo"}, "by"),
        (CUSTOMERS, {"limit": "1.5"}, "limit"),
        (CUSTOMERS, {"from": ["2024-01-01", "2024-02-01"]}, "from"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it(tenant, client_for, path, params, field):
    """Each bad value: 400 problem+json with the parameter under `errors`."""
    response = client_for(tenant).get(path, params)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert list(response.json()["errors"]) == [field]


def test_an_unencoded_plus_in_an_offset_is_read_as_plus(shop, client_for):
    """`+01:00` sent unencoded arrives as a space; it is read as the offset it was."""
    client = client_for(shop)
    response = client.get(SUMMARY + "?from=2024-03-01T11:00:00+01:00&to=2024-03-01T11:00:00+01:00")
    assert response.status_code == 200, response.content
    assert response.json()["revenue"] == {"EUR": "25.00"}


def test_held_items_count_only_once_their_order_is_loaded(tenant, shop, ndjson, load, client_for):
    """An item whose order has not arrived is pending and not counted; when the order
    comes, both count."""
    client = client_for(shop)
    item = order_item_row(
        order_item_id=uid("i9"),
        order_id=uid("o9"),
        product_id=uid("pen"),
        quantity=4,
        unit_price="2.50",
        line_total="10.00",
    )
    assert load(tenant, ndjson("order_items_2.ndjson", [item])).rows_pending == 1
    assert _get(client, SUMMARY)["items"] == 4
    order = order_row(
        order_id=uid("o9"),
        customer_id=uid("bob"),
        currency="EUR",
        total_amount="10.00",
        order_date="2024-03-09T09:00:00Z",
    )
    load(tenant, ndjson("orders_2.ndjson", [order]))
    summary = _get(client, SUMMARY)
    assert (summary["orders"], summary["items"], summary["units"]) == (4, 5, 11)
    assert summary["revenue"] == {"EUR": "45.01", "USD": "5.00"}


def test_an_order_updated_from_25_to_45_adds_20_and_a_resent_one_adds_nothing(
    shop, ndjson, load, client_for
):
    """The answer follows the final tables: an update replaces the order's total, and the
    same record sent again changes nothing."""
    client = client_for(shop)
    order = order_row(
        order_id=uid("o1"),
        customer_id=uid("ada"),
        currency="EUR",
        total_amount="45.00",
        order_date="2024-03-01T10:00:00Z",
    )
    assert load(shop, ndjson("orders_2.ndjson", [order])).rows_updated == 1
    assert _get(client, SUMMARY)["revenue"] == {"EUR": "55.01", "USD": "5.00"}
    assert load(shop, ndjson("orders_3.ndjson", [order, order])).rows_updated == 0
    assert _get(client, SUMMARY)["revenue"] == {"EUR": "55.01", "USD": "5.00"}


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_each_answer_reads_one_read_only_snapshot(tenant, tmp_path, api):
    """As served (no transaction around the request), a selector opens its own REPEATABLE
    READ, READ ONLY transaction: the answer is the same, and nothing is left open."""
    shop_load(tenant, tmp_path)
    client = api.as_tenant(api_key_rotate(tenant=tenant, revoke_existing=False).raw)
    assert _get(client, SUMMARY)["revenue"] == {"EUR": "35.01", "USD": "5.00"}
    totals = analytics_summary(tenant=tenant, span=Range(start=None, end=None, tz="UTC"))
    assert (totals.orders, totals.items, totals.units) == (3, 4, 7)
    assert not connection.in_atomic_block
