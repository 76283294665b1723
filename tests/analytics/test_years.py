"""Top products over several years: what `sources` reads for a range (two year-to-date
rows per group inside a year, December rows for the years between, the totals when that
is fewer), and every group's figures over ranges across years against the final tables."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from apps.analytics.params import Range
from apps.analytics.sources import product_source
from apps.ingestions.engine.testing import (
    customer_row,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from tests.analytics.test_consistency import (
    _bounds,
    _items,
    _people_and_products,
    _truth_rows,
)


def _reads(span: Range, first: datetime, last: datetime) -> tuple[list, int, int]:
    """The year-to-date months `product_source` reads (sorted, with their signs), how
    many items' reads and how many all-time totals' reads."""
    query, values = product_source(uuid4(), span, None, first, last)
    months = []
    for member in query.split(" UNION ALL "):
        if "analytics_product_ytd" in member:
            sign = -1 if "-lines" in member else 1
            name = member.split("ANY(%(")[1].split(")s")[0]
            months += [(m.strftime("%Y-%m"), sign) for m in values[name]]
    return sorted(months), query.count("FROM analytics_lines"), query.count("_totals WHERE tenant")


def _at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_range_inside_a_year_is_two_year_to_date_rows_and_its_ends_items():
    """Feb 10 to Nov 20: each end takes most of its month, so it is that month less the
    items of the rest of it, and the months come down to two rows: November's less
    January's."""
    first, last = _at(2024, 1, 5), _at(2024, 12, 20)
    span = Range(start=_at(2024, 2, 10), end=_at(2024, 11, 20), tz="UTC")
    assert _reads(span, first, last) == ([("2024-01", -1), ("2024-11", 1)], 2, 0)
    # ends that take less than half their months: their items, the months between
    span = Range(start=_at(2024, 2, 20), end=_at(2024, 11, 10), tz="UTC")
    assert _reads(span, first, last) == ([("2024-02", -1), ("2024-10", 1)], 2, 0)
    # from the first order's month on: nothing before it to take away
    span = Range(start=_at(2024, 1, 1), end=_at(2024, 7, 1), tz="UTC")
    assert _reads(span, first, last) == ([("2024-06", 1)], 0, 0)


def test_a_range_across_years_reads_the_fewest_rows_the_terms_leave():
    first, last = _at(2021, 11, 3), _at(2025, 2, 27)
    # mid-2023 to mid-2024: the December rows of 2021 and 2022 that both ends would need
    # cancel out; left are 2023's, less June 2023's, plus June 2024's
    span = Range(start=_at(2023, 7, 1), end=_at(2024, 7, 1), tz="UTC")
    assert _reads(span, first, last) == ([("2023-06", -1), ("2023-12", 1), ("2024-06", 1)], 0, 0)
    # March 2024 to January 2025 the same way, not through the totals
    span = Range(start=_at(2024, 3, 1), end=_at(2025, 2, 1), tz="UTC")
    assert _reads(span, first, last) == ([("2024-02", -1), ("2024-12", 1), ("2025-01", 1)], 0, 0)
    # past the last order: the totals, less what came before the start
    span = Range(start=_at(2022, 1, 1), end=None, tz="UTC")
    assert _reads(span, first, last) == ([("2021-12", -1)], 0, 1)
    # from March 2022 on: the totals less 2021 and two months of 2022
    span = Range(start=_at(2022, 3, 1), end=_at(2025, 6, 1), tz="UTC")
    assert _reads(span, first, last) == ([("2021-12", -1), ("2022-02", -1)], 0, 1)
    # everything, or nothing before the first order
    assert _reads(Range(start=None, end=None, tz="UTC"), first, last) == ([], 0, 1)
    span = Range(start=None, end=_at(2021, 11, 1), tz="UTC")
    assert _reads(span, first, last) == ([], 0, 0)


def test_the_last_month_of_the_calendar_reads_its_items_to_the_end_of_time():
    """December 9999: the month after it is the end of time, and the items of its end are
    read without an upper bound (an order may be at the calendar's very last instant)."""
    first, last = _at(9999, 11, 1), datetime.max.replace(tzinfo=UTC)
    span = Range(start=_at(9999, 12, 2), end=_at(9999, 12, 30), tz="UTC")
    query, values = product_source(uuid4(), span, None, first, last)
    assert "analytics_product_totals WHERE tenant" in query  # Cum(end of time): everything
    assert datetime.max.replace(tzinfo=UTC) not in values.values()


@pytest.mark.django_db
def test_an_order_at_the_calendar_s_very_last_instant_is_in_the_top_products(
    tenant, ndjson, load, client_for
):
    """`from` at 9999-12-31T23:59:59.999999Z: the order there and its item count, as in
    the summary (the end of time's stand-in is an instant an order can have)."""
    when = "9999-12-31T23:59:59.999999Z"
    for name, row in (
        ("customers_1.ndjson", customer_row()),
        ("products_1.ndjson", product_row()),
        ("orders_1.ndjson", order_row(order_date=when, total_amount="39.98", currency="EUR")),
        ("order_items_1.ndjson", order_item_row()),
    ):
        assert load(tenant, ndjson(name, [row])).rows_inserted == 1
    client = client_for(tenant)
    summary = client.get("/api/v1/analytics/summary/", {"from": when}).json()
    assert (summary["orders"], summary["units"]) == (1, 2)
    top = client.get("/api/v1/analytics/top-products/", {"from": when}).json()["products"]
    assert [(p["product_id"], p["units"], p["revenue"]) for p in top] == [(uid("p1"), 2, "39.98")]


YEARS_QUERIES = [
    {},
    {"from": "2022-01-01", "to": "2024-12-31"},
    {"from": "2023-07-01", "to": "2024-06-30", "tz": "Europe/Berlin"},
    {"from": "2024-03-01", "to": "2025-01-31", "currency": "USD"},
    {"from": "2022-03-01"},
    {"to": "2023-01-20", "tz": "America/New_York"},
    {"from": "2022-12-20", "to": "2023-01-10"},
    {"from": "2021-12-05", "to": "2024-11-25"},
    {"from": "2023-02-03T10:00:00Z", "to": "2023-02-27T08:00:00Z"},
    {"from": "2020-01-01", "to": "2021-10-31"},
    # the totals less the years from the start's on (fewer reads than the years before)
    {"from": "2024-11-01"},
    {"from": "2024-06-10", "to": "2025-03-01", "currency": "EUR"},
]
FIRST = datetime(2021, 11, 3, tzinfo=UTC)


def _top_all(tenant, query: dict) -> list[dict]:
    """Every group's units and revenue in the range, from the final tables, best first."""
    _, start, end = _bounds(query)
    groups = defaultdict(lambda: [0, Decimal(0)])
    for product_id, _, _, quantity, line_total, when, code in _truth_rows(tenant)[1]:
        inside = (start is None or when >= start) and (end is None or when < end)
        if inside and query.get("currency") in (None, code):
            groups[(product_id, code)][0] += quantity
            groups[(product_id, code)][1] += line_total
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
    return [
        {"product_id": str(p), "currency": code, "units": units, "revenue": f"{revenue:.2f}"}
        for (p, code), (units, revenue) in ranked
    ]


def test_every_products_figures_over_ranges_across_years_match_the_final_tables(
    tenant, ndjson, load, client_for
):
    """Orders from November 2021 to February 2025, some moved to another year: every
    group's figures, not just the top ones, equal the ground truth over ranges inside a
    year, across years, open at either end, and before the first order."""
    rng = random.Random(5)
    client = client_for(tenant)
    _people_and_products(tenant, load, ndjson)
    days = (datetime(2025, 2, 27, tzinfo=UTC) - FIRST).days
    orders = [
        order_row(
            order_id=uid(f"o{n}"),
            customer_id=uid(f"c{rng.randrange(6)}"),
            currency=rng.choice(("EUR", "USD")),
            order_date=(FIRST + timedelta(minutes=rng.randrange(days * 24 * 60))).isoformat(),
        )
        for n in range(120)
    ]
    items = _items(rng, 120)
    load(tenant, ndjson("orders_1.ndjson", orders))
    load(tenant, ndjson("order_items_1.ndjson", items))

    def check() -> list:
        answers = []
        for query in YEARS_QUERIES:
            response = client.get("/api/v1/analytics/top-products/", {**query, "limit": "100"})
            assert response.status_code == 200, response.content
            got = [
                {k: row[k] for k in ("product_id", "currency", "units", "revenue")}
                for row in response.json()["products"]
            ]
            assert got == _top_all(tenant, query), query
            answers.append(got)
        return answers

    before = check()
    moved = [
        dict(row, order_date=f"{2022 + n % 3}-0{1 + n % 9}-15T12:00:00Z")
        for n, row in enumerate(orders[:30])
    ]
    load(tenant, ndjson("orders_2.ndjson", moved))
    assert check() != before
