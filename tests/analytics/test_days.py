"""Orders sorted into days by the days' first instants (`apps.analytics.days`): the instants
as PostgreSQL has them, and each order converted instead wherever a day is not one run of
instants, so that every answer is the zone's calendar day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from apps.analytics.days import MAX_DAYS, day_of, day_starts
from apps.analytics.params import Range
from apps.analytics.selectors import _where
from apps.analytics.services import analytics_catch_up
from apps.ingestions.engine.testing import customer_row, order_row, uid

pytestmark = pytest.mark.django_db


def _shop(tenant, load, ndjson, *dates: str) -> None:
    """One customer, and one order of 10.00 EUR at each of `dates`."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    orders = [
        order_row(order_id=uid(f"o{n}"), order_date=when, total_amount="10.00", currency="EUR")
        for n, when in enumerate(dates)
    ]
    assert load(tenant, ndjson("orders_1.ndjson", orders)).rows_inserted == len(dates)


def _starts(tenant, tz: str):
    analytics_catch_up(tenant_id=tenant.id)  # what the selectors' snapshot does first
    return day_starts(*_where(tenant, Range(start=None, end=None, tz=tz), None))


def _daily(client, tz: str) -> list[tuple[str, int]]:
    response = client.get("/api/v1/analytics/daily/", {"tz": tz})
    assert response.status_code == 200, response.content
    return [(day["date"], day["orders"]) for day in response.json()["days"]]


def test_days_start_where_the_zone_says_across_a_change_of_clocks(tenant, load, ndjson):
    """Berlin moves its clocks on 2024-03-31: that day starts at 23:00 UTC, the next at
    22:00 UTC."""
    _shop(tenant, load, ndjson, "2024-03-30T12:00:00Z", "2024-04-01T12:00:00Z")
    starts = _starts(tenant, "Europe/Berlin")
    assert [day_of(day) for day in starts.days] == [
        date(2024, 3, 30),
        date(2024, 3, 31),
        date(2024, 4, 1),
    ]
    assert [datetime.fromisoformat(start) for start in starts.starts] == [
        datetime(2024, 3, 29, 23, tzinfo=UTC),
        datetime(2024, 3, 30, 23, tzinfo=UTC),
        datetime(2024, 3, 31, 22, tzinfo=UTC),
        datetime(2024, 4, 1, 22, tzinfo=UTC),
    ]


def test_the_first_instant_of_a_day_counts_on_that_day(tenant, load, ndjson, client_for):
    """In Kolkata (+05:30) a day starts at 18:30 UTC: the microsecond before is the day
    before."""
    _shop(tenant, load, ndjson, "2024-03-01T18:29:59.999999Z", "2024-03-01T18:30:00Z")
    assert _starts(tenant, "Asia/Kolkata") is not None
    assert _daily(client_for(tenant), "Asia/Kolkata") == [("2024-03-01", 1), ("2024-03-02", 1)]


def test_an_hour_that_comes_back_after_midnight_counts_on_its_own_day(
    tenant, load, ndjson, client_for
):
    """Antarctica/Casey went back from 02:00 (+11) to 23:00 the day before (+08) at
    2010-03-04 15:00 UTC: 14:00 UTC was 01:00 on the 5th, 15:30 UTC 23:30 on the 4th. The
    5th is not one run of instants (its midnight came twice; PostgreSQL reads it as the
    second), so each order is converted."""
    orders = ("2010-03-04T10:00:00Z", "2010-03-04T14:00:00Z", "2010-03-04T15:30:00Z")
    _shop(tenant, load, ndjson, *orders, "2010-03-05T10:00:00Z")
    assert _starts(tenant, "Antarctica/Casey") is None
    assert _daily(client_for(tenant), "Antarctica/Casey") == [
        ("2010-03-04", 2),
        ("2010-03-05", 2),
    ]


def test_orders_further_apart_than_the_check_covers_are_converted_one_by_one(
    tenant, load, ndjson, client_for
):
    _shop(tenant, load, ndjson, "2010-01-01T12:00:00Z", "2020-01-01T23:30:00Z")
    assert (date(2020, 1, 1) - date(2010, 1, 1)).days > MAX_DAYS
    assert _starts(tenant, "Europe/Berlin") is None
    assert _daily(client_for(tenant), "Europe/Berlin") == [("2010-01-01", 1), ("2020-01-02", 1)]


def test_no_orders_no_days(tenant, client_for):
    assert _starts(tenant, "UTC") is None
    assert _daily(client_for(tenant), "UTC") == []


@pytest.mark.parametrize(
    ("when", "tz", "expected"),
    [
        ("9999-12-31T12:00:00Z", "UTC", [("9999-12-31", 1)]),
        ("9999-12-31T23:00:00Z", "Asia/Tokyo", [("+10000-01-01", 1)]),
        ("0001-01-01T00:00:00Z", "America/New_York", [("0000-12-31", 1)]),
        ("0001-01-01T12:00:00Z", "Asia/Tokyo", [("0001-01-01", 1)]),
    ],
)
@pytest.mark.parametrize("days_apart", [0, MAX_DAYS + 1], ids=["by-bounds", "per-order"])
def test_an_order_at_either_end_of_the_calendar_has_its_day(
    tenant, load, ndjson, client_for, when, tz, expected, days_apart
):
    """An order the contract takes (years 1 to 9999 in UTC) falls on 0000-12-31 or
    10000-01-01 in some zones: its day is named in ISO 8601's form, not a 500, whether the
    days are worked out by their bounds or each order converted (orders too far apart)."""
    dates = [when] if not days_apart else [when, "2024-06-01T12:00:00Z"]
    _shop(tenant, load, ndjson, *dates)
    answer = _daily(client_for(tenant), tz)
    assert [day for day in answer if day != ("2024-06-01", 1)] == expected
