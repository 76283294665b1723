"""Every analytics endpoint against ground truth computed here, independently: the final
tables' rows read with plain SQL and added up in Python, after inserts (items before their
orders), updates, re-sent records, held rows that expire, and a live batch."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from apps.analytics import ranking, selectors
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.services import pending_expire, records_merge

pytestmark = pytest.mark.django_db

CURRENCIES = ("EUR", "USD", "JPY")
# Around the night Berlin moves its clocks (2024-03-31), so days in a zone matter.
FIRST_DAY = datetime(2024, 3, 29, tzinfo=UTC)
QUERIES = [
    {},
    {"from": "2024-03-30", "to": "2024-03-31"},
    {"from": "2024-03-30T06:30:00Z", "to": "2024-04-01T12:00:00+02:00"},
    {"from": "2024-03-30", "to": "2024-04-01", "tz": "Europe/Berlin"},
    {"tz": "America/St_Johns", "currency": "EUR"},
    {"currency": "USD", "to": "2024-03-31"},
]


def _orders(rng: random.Random, count: int, days: int = 5) -> list[dict]:
    return [
        order_row(
            order_id=uid(f"o{n}"),
            customer_id=uid(f"c{rng.randrange(6)}"),
            currency=rng.choice(CURRENCIES),
            total_amount=str(Decimal(rng.randrange(0, 50000)) / 100),
            order_date=(FIRST_DAY + timedelta(minutes=rng.randrange(days * 24 * 60))).isoformat(),
        )
        for n in range(count)
    ]


def _items(rng: random.Random, orders: int) -> list[dict]:
    rows = []
    for n in range(orders):
        for k in range(rng.randrange(4)):  # some orders have no items
            quantity, price = rng.randrange(1, 6), Decimal(rng.randrange(0, 9999)) / 100
            rows.append(
                order_item_row(
                    order_item_id=uid(f"i{n}.{k}"),
                    order_id=uid(f"o{n}"),
                    product_id=uid(f"p{rng.randrange(4)}"),
                    quantity=quantity,
                    unit_price=str(price),
                    line_total=str(price * quantity),
                )
            )
    return rows


def _people_and_products(tenant, load, ndjson) -> None:
    """The six customers and four products the orders and items refer to, loaded."""
    customers = [customer_row(customer_id=uid(f"c{n}"), name=f"C{n}") for n in range(6)]
    products = [product_row(product_id=uid(f"p{n}"), sku=f"P{n}") for n in range(4)]
    load(tenant, ndjson("customers_1.ndjson", customers))
    load(tenant, ndjson("products_1.ndjson", products))


def _truth_rows(tenant) -> tuple[list[tuple], list[tuple]]:
    """The tenant's orders (with their items counted one by one) and items (with their
    order's date and currency), straight from the final tables."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT o.order_id, o.customer_id, c.name, c.email, o.currency, o.total_amount, "
            "o.order_date, (SELECT count(*) FROM order_items i WHERE i.tenant_id = o.tenant_id "
            "AND i.order_id = o.order_id), (SELECT coalesce(sum(i.quantity), 0) FROM "
            "order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.order_id) "
            "FROM orders o JOIN customers c ON c.tenant_id = o.tenant_id "
            "AND c.customer_id = o.customer_id WHERE o.tenant_id = %s",
            [tenant.id],
        )
        orders = cursor.fetchall()
        cursor.execute(
            "SELECT i.product_id, p.sku, p.name, i.quantity, i.line_total, o.order_date, "
            "o.currency FROM order_items i, orders o, products p WHERE i.tenant_id = %s "
            "AND o.tenant_id = i.tenant_id AND o.order_id = i.order_id "
            "AND p.tenant_id = i.tenant_id AND p.product_id = i.product_id",
            [tenant.id],
        )
        return orders, cursor.fetchall()


def _bounds(query: dict) -> tuple:
    zone = ZoneInfo(query.get("tz", "UTC"))

    def moment(raw: str, *, end: bool) -> datetime:
        if len(raw) == 10:
            day = date.fromisoformat(raw) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(), tzinfo=zone)
        return datetime.fromisoformat(raw) + timedelta(microseconds=1 if end else 0)

    start = moment(query["from"], end=False) if "from" in query else None
    end = moment(query["to"], end=True) if "to" in query else None
    return zone, start, end


def _money(amounts: dict) -> dict:
    return {k: f"{v:.2f}" for k, v in sorted(amounts.items())}


def _totals(orders: list[tuple]) -> dict:
    revenue, count = defaultdict(Decimal), defaultdict(int)
    for row in orders:
        revenue[row[4]] += row[5]
        count[row[4]] += 1
    average = {
        k: (v / count[k]).quantize(Decimal("0.01"), ROUND_HALF_UP) for k, v in revenue.items()
    }
    return {
        "orders": len(orders),
        "items": sum(row[7] for row in orders),
        "units": sum(row[8] for row in orders),
        "customers": len({row[1] for row in orders}),
        "revenue": _money(revenue),
        "average_order_value": _money(average),
    }


def _expected(tenant, query: dict) -> dict[str, dict]:
    # long: one ground truth for all four endpoints, read the same way
    zone, start, end = _bounds(query)
    currency = query.get("currency")

    def chosen(when: datetime, code: str) -> bool:
        return (
            (start is None or when >= start)
            and (end is None or when < end)
            and currency in (None, code)
        )

    all_orders, all_items = _truth_rows(tenant)
    orders = [row for row in all_orders if chosen(row[6], row[4])]
    items = [row for row in all_items if chosen(row[5], row[6])]
    days = defaultdict(list)
    for row in orders:
        days[row[6].astimezone(zone).date()].append(row)
    products = defaultdict(lambda: [0, Decimal(0)])
    names = {}
    for product_id, sku, name, quantity, line_total, _, code in items:
        products[(product_id, code)][0] += quantity
        products[(product_id, code)][1] += line_total
        names[product_id] = (sku, name)
    ranked = sorted(products.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
    customers = defaultdict(lambda: [0, Decimal(0)])
    for row in orders:
        customers[(row[1], row[4])][0] += 1
        customers[(row[1], row[4])][1] += row[5]
        names[row[1]] = (row[2], row[3])
    top = sorted(customers.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:3]
    return {
        "summary": _totals(orders),
        "daily": {
            "tz": query.get("tz", "UTC"),
            "days": [{"date": d.isoformat(), **_totals(days[d])} for d in sorted(days)],
        },
        "top-products": {
            "by": "revenue",
            "products": [
                {
                    "product_id": str(p),
                    "sku": names[p][0],
                    "name": names[p][1],
                    "currency": code,
                    "units": units,
                    "revenue": f"{revenue:.2f}",
                }
                for (p, code), (units, revenue) in ranked[:5]
            ],
        },
        "customers/top": {
            "customers": [
                {
                    "customer_id": str(c),
                    "name": names[c][0],
                    "email": names[c][1],
                    "currency": code,
                    "orders": count,
                    "revenue": f"{revenue:.2f}",
                }
                for (c, code), (count, revenue) in top
            ]
        },
    }


def _assert_all_match(client, tenant, queries: list[dict] = QUERIES) -> list:
    answers = []
    for query in queries:
        expected = _expected(tenant, query)
        limits = {"top-products": {"limit": "5"}, "customers/top": {"limit": "3"}}
        for path, want in expected.items():
            response = client.get(f"/api/v1/analytics/{path}/", {**query, **limits.get(path, {})})
            assert response.status_code == 200, response.content
            assert response.json() == want, (path, query)
            answers.append(response.json())
    return answers


def test_every_endpoint_matches_the_final_tables_through_every_kind_of_change(
    tenant, ndjson, load, client_for
):
    """Items before their orders, updated orders and items, re-sent records, expired held
    rows and a live batch: after each, every endpoint equals the ground truth."""
    # long: one story of changes, checked after each step
    rng = random.Random(18)
    client = client_for(tenant)
    _people_and_products(tenant, load, ndjson)
    orders, items = _orders(rng, 40), _items(rng, 40)
    assert load(tenant, ndjson("order_items_1.ndjson", items)).rows_pending == len(items)
    _assert_all_match(client, tenant)  # held items count for nothing
    load(tenant, ndjson("orders_1.ndjson", orders))
    first = _assert_all_match(client, tenant)
    assert first[0]["items"] == len(items)

    changed = [dict(row) for row in orders[:12]]
    for n, row in enumerate(changed):
        row["total_amount"] = str(Decimal(row["total_amount"]) + 20)
        if n % 3 == 0:
            row["order_date"] = (FIRST_DAY + timedelta(hours=7 * n + 1)).isoformat()
        if n % 4 == 0:
            row["currency"] = "USD" if row["currency"] != "USD" else "EUR"
    moved = [dict(row) for row in items[:10]]
    for n, row in enumerate(moved):
        row["quantity"] += 1
        row["line_total"] = str(Decimal(row["unit_price"]) * row["quantity"])
        if n % 5 == 0:
            row["order_id"] = uid("o39")
    load(tenant, ndjson("orders_2.ndjson", changed))
    load(tenant, ndjson("order_items_2.ndjson", moved))
    updated = _assert_all_match(client, tenant)
    assert updated != first

    resent = load(tenant, ndjson("orders_3.ndjson", list(reversed(orders[12:]))))
    assert (resent.rows_inserted, resent.rows_updated) == (0, 0)
    assert _assert_all_match(client, tenant) == updated

    orphan_order = order_row(order_id=uid("lost"), customer_id=uid("nobody"))
    orphan_item = order_item_row(order_item_id=uid("lost-item"), order_id=uid("never"))
    assert load(tenant, ndjson("orders_4.ndjson", [orphan_order])).rows_pending == 1
    assert load(tenant, ndjson("order_items_4.ndjson", [orphan_item])).rows_pending == 1
    assert pending_expire(now=timezone.now() + timedelta(seconds=1), retention=timedelta()) == 2
    assert _assert_all_match(client, tenant) == updated

    live = [dict(orders[20], total_amount="120.00"), dict(orders[21], currency="JPY")]
    response = client.generic(
        "POST",
        "/api/v1/ingest/records/orders/",
        ndjson_bytes(live),
        content_type="application/x-ndjson",
    )
    assert response.status_code == 202, response.content
    assert records_merge(tenant_id=tenant.id) == 1
    assert _assert_all_match(client, tenant) != updated


# Over five months: ranges of whole months and the days beside them, short and long ones
# (the long ones are read as the totals less the rest), both ends open or not.
MONTH_QUERIES = [
    {},
    {"from": "2024-04-15", "to": "2024-07-10"},
    {"from": "2024-04-01", "to": "2024-06-30", "currency": "EUR"},
    {"from": "2024-05-02", "to": "2024-05-20"},
    {"from": "2024-04-02T10:00:00Z", "tz": "Asia/Kolkata"},
    {"to": "2024-05-01", "tz": "America/New_York"},
    {"from": "2024-04-20", "to": "2024-08-25", "currency": "JPY"},
    {"from": "2024-06-01", "to": "2024-06-30"},
    # ends that take most of their months (a month's totals less the rest of it)
    {"from": "2024-05-03", "to": "2024-06-27"},
    {"from": "2024-07-02", "to": "2024-07-30", "tz": "America/New_York"},
    {"from": "2024-04-25", "to": "2024-08-05"},
]


def test_ranges_of_months_match_the_final_tables(tenant, ndjson, load, client_for):
    """Orders over five months, then some moved to other months and currencies: every
    endpoint equals the ground truth over whole months, parts of months, and both."""
    rng = random.Random(7)
    client = client_for(tenant)
    _people_and_products(tenant, load, ndjson)
    orders, items = _orders(rng, 80, days=150), _items(rng, 80)
    load(tenant, ndjson("orders_1.ndjson", orders))
    load(tenant, ndjson("order_items_1.ndjson", items))
    first = _assert_all_match(client, tenant, MONTH_QUERIES)
    moved = [dict(row) for row in orders[:20]]
    for n, row in enumerate(moved):
        row["order_date"] = (FIRST_DAY + timedelta(days=5 * n + 1)).isoformat()
        if n % 3 == 0:
            row["currency"] = "JPY" if row["currency"] != "JPY" else "EUR"
    load(tenant, ndjson("orders_2.ndjson", moved))
    assert _assert_all_match(client, tenant, MONTH_QUERIES) != first


@pytest.mark.parametrize("pages", [100, 1])
def test_top_customers_walked_three_groups_a_page_match_the_final_tables(
    tenant, ndjson, load, client_for, monkeypatch, pages
):
    """Top customers found by walking the customers' totals (`ranking`) three groups a
    page: to where no group left can enter the top, and giving up after one page (the
    range's orders added up instead): both equal the ground truth."""
    monkeypatch.setattr(ranking, "PAGE", 1)
    monkeypatch.setattr(ranking, "PER_LIMIT", 1)  # limit 3: three groups a page
    monkeypatch.setattr(ranking, "PAGES", pages)
    walks = []

    def walk(*args):
        walks.append(ranking.top_customers_walk(*args))
        return walks[-1]

    monkeypatch.setattr(selectors, "top_customers_walk", walk)
    rng = random.Random(11)
    client = client_for(tenant)
    _people_and_products(tenant, load, ndjson)
    load(tenant, ndjson("orders_1.ndjson", _orders(rng, 80, days=150)))
    load(tenant, ndjson("order_items_1.ndjson", _items(rng, 80)))
    _assert_all_match(client, tenant, MONTH_QUERIES)
    answered = [found for found in walks if found is not None]
    if pages == 1:  # 18 groups or so: one page of three is never enough
        assert walks
        assert not answered
    else:
        assert len(answered) == len(walks) > 3
