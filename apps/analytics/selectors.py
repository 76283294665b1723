"""What a tenant's loaded data says, read from the final tables (tenant first, always).

Every figure is taken over the orders whose `order_date` is in the range; an order item
counts with its order (its order's date and currency), so items, units and top products
follow the same orders as revenue. Rows held as pending are not in the final tables, so
they count only once loaded. Money is summed per currency, never across currencies, and
stays `Decimal`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from django.db import connection, transaction

from apps.analytics.days import day_starts
from apps.analytics.params import Range
from apps.tenants.models import Tenant

CENT = Decimal("0.01")


@dataclass(slots=True)
class Totals:
    orders: int = 0
    items: int = 0
    units: int = 0
    customers: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)
    orders_by_currency: dict[str, int] = field(default_factory=dict)

    @property
    def average_order_value(self) -> dict[str, Decimal]:
        """Revenue over orders per currency, rounded half up to the cent."""
        return {
            currency: (amount / self.orders_by_currency[currency]).quantize(CENT, ROUND_HALF_UP)
            for currency, amount in self.revenue.items()
        }


@dataclass(frozen=True, slots=True)
class ProductRank:
    product_id: UUID
    sku: str
    name: str
    currency: str
    units: int
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class CustomerRank:
    customer_id: UUID
    name: str
    email: str
    currency: str
    orders: int
    revenue: Decimal


def _where(tenant: Tenant, span: Range, currency: str | None) -> tuple[str, dict]:
    """The orders' filter (alias `o`) and its parameters."""
    clauses = ["o.tenant_id = %(tenant)s"]
    values: dict = {"tenant": tenant.id, "tz": span.tz}
    if span.start is not None:
        clauses.append("o.order_date >= %(start)s")
        values["start"] = span.start
    if span.end is not None:
        clauses.append("o.order_date < %(end)s")
        values["end"] = span.end
    if currency is not None:
        clauses.append("o.currency = %(currency)s")
        values["currency"] = currency
    return " AND ".join(clauses), values


def _rows(query: str, values: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, values)
        return cursor.fetchall()


def _one_snapshot(selector):
    """Run `selector`'s queries in one read-only REPEATABLE READ transaction, so that its
    figures are all taken from the same committed state (a merge committing between two of
    them cannot make the items disagree with the orders), without JIT (compiling costs more
    than these plans save) and with room to hash a year of orders in memory."""

    @functools.wraps(selector)
    def read(**kwargs):
        outermost = not connection.in_atomic_block
        with transaction.atomic(), connection.cursor() as cursor:
            if outermost:  # inside a caller's transaction, its snapshot is the one there is
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL work_mem = '32MB'")
            return selector(**kwargs)

    return read


# The items of the chosen orders: joined on the order, both sides filtered by tenant so
# each side's index is used.
_ITEMS = "FROM orders o JOIN order_items i ON i.tenant_id = %(tenant)s AND i.order_id = o.order_id "


@_one_snapshot
def analytics_summary(*, tenant: Tenant, span: Range, currency: str | None = None) -> Totals:
    """Orders, items, units, distinct customers and revenue per currency in `span`."""
    where, values = _where(tenant, span, currency)
    totals = Totals()
    query = (
        f"SELECT o.currency, count(*), sum(o.total_amount) FROM orders o WHERE {where} GROUP BY 1"
    )
    for code, orders, revenue in _rows(query, values):
        totals.orders += orders
        totals.orders_by_currency[code] = orders
        totals.revenue[code] = revenue
    if not totals.orders:
        return totals
    # grouped, then counted: hashing the ids is about a fifth faster than DISTINCT's sort
    # over a year of orders (per day, in `analytics_daily`, DISTINCT is the faster)
    query = f"SELECT count(*) FROM (SELECT o.customer_id FROM orders o WHERE {where} GROUP BY 1) c"
    totals.customers = _rows(query, values)[0][0]
    query = f"SELECT count(*), coalesce(sum(i.quantity), 0) {_ITEMS} WHERE {where}"
    totals.items, totals.units = _rows(query, values)[0]
    return totals


@_one_snapshot
def analytics_daily(
    *, tenant: Tenant, span: Range, currency: str | None = None
) -> list[tuple[date, Totals]]:
    """`analytics_summary` per day in `span.tz`, oldest first; days without orders left out."""
    where, values = _where(tenant, span, currency)
    starts = day_starts(where, values)
    if starts is None:  # no orders, or days that cannot be told apart by their bounds
        day, name = "(o.order_date AT TIME ZONE %(tz)s)::date", lambda key: key
    else:  # the day's number, 1 for the first (see `days`)
        day, name = "width_bucket(o.order_date, %(starts)s)", lambda key: starts.days[key - 1]
        values["starts"] = starts.starts
    days: dict[date, Totals] = defaultdict(Totals)
    query = (
        f"SELECT {day}, o.currency, count(*), sum(o.total_amount) FROM orders o "
        f"WHERE {where} GROUP BY 1, 2"
    )
    for key, code, orders, revenue in _rows(query, values):
        totals = days[name(key)]
        totals.orders += orders
        totals.orders_by_currency[code] = orders
        totals.revenue[code] = revenue
    query = f"SELECT {day}, count(DISTINCT o.customer_id) FROM orders o WHERE {where} GROUP BY 1"
    for key, customers in _rows(query, values):
        days[name(key)].customers = customers
    # each order's day worked out once, before the join (OFFSET 0 keeps it there), not once
    # for each of its items
    query = (
        f"SELECT o.day, count(*), sum(i.quantity) FROM (SELECT o.order_id, {day} AS day "
        f"FROM orders o WHERE {where} OFFSET 0) o JOIN order_items i "
        "ON i.tenant_id = %(tenant)s AND i.order_id = o.order_id GROUP BY 1"
    )
    for key, items, units in _rows(query, values):
        totals = days[name(key)]
        totals.items, totals.units = items, units
    return sorted(days.items())


@_one_snapshot
def analytics_top_products(
    *, tenant: Tenant, span: Range, limit: int, by: str = "revenue", currency: str | None = None
) -> list[ProductRank]:
    """Units sold and revenue (line totals) per product and currency, the top `limit`
    by revenue or units; ties go to the lower product id, then currency."""
    where, values = _where(tenant, span, currency)
    order = "revenue DESC, units DESC" if by == "revenue" else "units DESC, revenue DESC"
    query = (
        "SELECT t.product_id, p.sku, p.name, t.currency, t.units, t.revenue FROM ("
        "SELECT i.product_id, o.currency, sum(i.quantity) AS units, "
        f"sum(i.line_total) AS revenue {_ITEMS} WHERE {where} GROUP BY 1, 2 "
        f"ORDER BY {order}, 1, 2 LIMIT %(limit)s) t "
        "JOIN products p ON p.tenant_id = %(tenant)s AND p.product_id = t.product_id "
        f"ORDER BY {order}, 1, 4"
    )
    return [ProductRank(*row) for row in _rows(query, {**values, "limit": limit})]


@_one_snapshot
def analytics_top_customers(
    *, tenant: Tenant, span: Range, limit: int, currency: str | None = None
) -> list[CustomerRank]:
    """Orders and revenue per customer and currency, the top `limit` by revenue (then
    orders); ties go to the lower customer id, then currency."""
    where, values = _where(tenant, span, currency)
    query = (
        "SELECT t.customer_id, c.name, c.email, t.currency, t.orders, t.revenue FROM ("
        "SELECT o.customer_id, o.currency, count(*) AS orders, sum(o.total_amount) AS revenue "
        f"FROM orders o WHERE {where} GROUP BY 1, 2 "
        "ORDER BY revenue DESC, orders DESC, 1, 2 LIMIT %(limit)s) t "
        "JOIN customers c ON c.tenant_id = %(tenant)s AND c.customer_id = t.customer_id "
        "ORDER BY t.revenue DESC, t.orders DESC, 1, 4"
    )
    return [CustomerRank(*row) for row in _rows(query, {**values, "limit": limit})]


@_one_snapshot
def analytics_top_products_each_currency(
    *, tenant: Tenant, span: Range, limit: int
) -> list[ProductRank]:
    """`analytics_top_products` by revenue, the top `limit` of each currency (the
    dashboard's chart shows one currency at a time)."""
    where, values = _where(tenant, span, None)
    query = (
        "SELECT t.product_id, p.sku, p.name, t.currency, t.units, t.revenue FROM ("
        "SELECT i.product_id, o.currency, sum(i.quantity) AS units, "
        "sum(i.line_total) AS revenue, row_number() OVER (PARTITION BY o.currency "
        "ORDER BY sum(i.line_total) DESC, sum(i.quantity) DESC, i.product_id) AS place "
        f"{_ITEMS} WHERE {where} GROUP BY 1, 2) t "
        "JOIN products p ON p.tenant_id = %(tenant)s AND p.product_id = t.product_id "
        "WHERE t.place <= %(limit)s ORDER BY t.currency, t.place"
    )
    return [ProductRank(*row) for row in _rows(query, {**values, "limit": limit})]


def analytics_last_order_date(*, tenant: Tenant) -> datetime | None:
    """The order_date of the tenant's latest order (None without orders)."""
    query = "SELECT max(o.order_date) FROM orders o WHERE o.tenant_id = %(tenant)s"
    return _rows(query, {"tenant": tenant.id})[0][0]
