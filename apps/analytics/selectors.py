"""What a tenant's loaded data says (tenant first, always), read from the copies of its
orders and order items (`models`), which `services.consistent_read` makes sure match the
final tables in the snapshot each selector runs in.

Every figure is taken over the orders whose `order_date` is in the range; an order item
counts with its order (its order's date and currency), so items, units and top products
follow the same orders as revenue. Rows held as pending are not in the final tables, so
they count only once loaded. Money is summed per currency, never across currencies, and
stays `Decimal`. Distinct customers are counted as the orders in the range whose same
customer's previous order is before it (see `models`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

from django.db import connection

from apps.analytics.days import DAY_ORDINAL, OutsideDay, day_of, day_starts
from apps.analytics.params import Range
from apps.analytics.ranking import top_customers_walk
from apps.analytics.services import consistent_read
from apps.analytics.sources import customer_source, product_source, time_share
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


def _first_in(currency: str | None, since: str | None) -> str:
    """The test that an order (alias `o`) is its customer's first in a range starting at
    the SQL expression `since` (None: unbounded); among its currency's with `currency`."""
    prev = "o.prev_in_currency" if currency is not None else "o.prev_order_date"
    return f"{prev} IS NULL" if since is None else f"({prev} IS NULL OR {prev} < {since})"


def _add(totals: Totals, code: str, orders, revenue, items, units, customers) -> None:
    totals.orders += orders
    totals.orders_by_currency[code] = orders
    totals.revenue[code] = revenue
    totals.items += int(items)  # sum() of a bigint is a numeric: a Decimal here
    totals.units += int(units)
    totals.customers += customers  # each customer's first order is in one currency


@consistent_read
def analytics_summary(*, tenant: Tenant, span: Range, currency: str | None = None) -> Totals:
    """Orders, items, units, distinct customers and revenue per currency in `span`."""
    where, values = _where(tenant, span, currency)
    first = _first_in(currency, None if span.start is None else "%(start)s")
    totals = Totals()
    query = (
        "SELECT o.currency, count(*), sum(o.total), sum(o.items), sum(o.units), "
        f"count(*) FILTER (WHERE {first}) FROM analytics_orders o WHERE {where} GROUP BY 1"
    )
    for row in _rows(query, values):
        _add(totals, *row)
    return totals


@consistent_read
def analytics_daily(
    *, tenant: Tenant, span: Range, currency: str | None = None
) -> list[tuple[date | OutsideDay, Totals]]:
    """`analytics_summary` per day in `span.tz`, oldest first; days without orders left out.
    A day is a `date`, or an `OutsideDay` for an order that falls before year 1 or after
    9999 there (its UTC date never does)."""
    where, values = _where(tenant, span, currency)
    starts = day_starts(where, values)
    days: dict[int, Totals] = defaultdict(Totals)  # by ordinal
    if starts is None:  # no orders, or days that cannot be told apart by their bounds
        day = DAY_ORDINAL.format(d="(o.order_date AT TIME ZONE %(tz)s)::date")
        query = (
            f"SELECT {day}, o.currency, count(*), sum(o.total), sum(o.items), sum(o.units), 0 "
            f"FROM analytics_orders o WHERE {where} GROUP BY 1, 2"
        )
        for key, *row in _rows(query, values):
            _add(days[key], *row)
        query = (
            f"SELECT {day}, count(DISTINCT o.customer_id) FROM analytics_orders o "
            f"WHERE {where} GROUP BY 1"
        )
        for key, customers in _rows(query, values):
            days[key].customers = customers
        return [(day_of(key), totals) for key, totals in sorted(days.items())]
    # each order's day number, 1 for the first (see `days`), worked out once in a subquery
    # (`OFFSET 0` keeps it there: about half the time of using it twice per row); then
    # the order's customer counts on that day when their previous order was before the
    # day's first instant, or the range's start if later
    starts_array = "%(starts)s::timestamptz[]"
    since = f"({starts_array})[o.day]"
    if span.start is not None:
        since = f"greatest({since}, %(start)s)"
    values["starts"] = starts.starts
    first = _first_in(currency, since)
    query = (
        "SELECT o.day, o.currency, count(*), sum(o.total), sum(o.items), sum(o.units), "
        f"count(*) FILTER (WHERE {first}) FROM (SELECT width_bucket(o.order_date, {starts_array}) "
        "AS day, o.currency, o.total, o.items, o.units, o.prev_order_date, o.prev_in_currency "
        f"FROM analytics_orders o WHERE {where} OFFSET 0) o GROUP BY 1, 2"
    )
    for key, *row in _rows(query, values):
        _add(days[starts.days[key - 1]], *row)
    return [(day_of(key), totals) for key, totals in sorted(days.items())]


# Past these shares of the tenant's time with orders, a range's customers are worked out
# as the totals less the rest (`sources`), and first looked for by walking the totals
# (`ranking`).
MOST = 0.5
WALK = 0.2


def _first_last(tenant: Tenant) -> tuple[datetime | None, datetime | None]:
    """The dates of the tenant's first and last orders (None without orders)."""
    query = "SELECT min(order_date), max(order_date) FROM analytics_orders WHERE tenant_id = %s"
    return _rows(query, [tenant.id])[0]


@consistent_read
def analytics_top_products(
    *, tenant: Tenant, span: Range, limit: int, by: str = "revenue", currency: str | None = None
) -> list[ProductRank]:
    """Units sold and revenue (line totals) per product and currency, the top `limit`
    by revenue or units; ties go to the lower product id, then currency."""
    source, values = product_source(tenant.id, span, currency, *_first_last(tenant))
    order = "revenue DESC, units DESC" if by == "revenue" else "units DESC, revenue DESC"
    query = (
        "SELECT t.product_id, p.sku, p.name, t.currency, t.units, t.revenue FROM ("
        f"SELECT product_id, currency, units, revenue FROM ({source}) s WHERE n > 0 "
        f"ORDER BY {order}, 1, 2 LIMIT %(limit)s) t "
        "JOIN products p ON p.tenant_id = %(tenant)s AND p.product_id = t.product_id "
        f"ORDER BY {order}, 1, 4"
    )
    return [ProductRank(*row) for row in _rows(query, {**values, "limit": limit})]


@consistent_read
def analytics_top_customers(
    *, tenant: Tenant, span: Range, limit: int, currency: str | None = None
) -> list[CustomerRank]:
    """Orders and revenue per customer and currency, the top `limit` by revenue (then
    orders); ties go to the lower customer id, then currency."""
    share = time_share(span, *_first_last(tenant))
    found = top_customers_walk(tenant.id, span, currency, limit) if share > WALK else None
    if found is not None:  # ranked already: only the customers' names to add
        query = (
            "SELECT customer_id, name, email FROM customers "
            "WHERE tenant_id = %(tenant)s AND customer_id = ANY(%(ids)s)"
        )
        ids = list({customer_id for customer_id, *_ in found})
        named = {row[0]: row[1:] for row in _rows(query, {"tenant": tenant.id, "ids": ids})}
        return [CustomerRank(c, *named[c], code, n, revenue) for c, code, n, revenue in found]
    source, values = customer_source(tenant.id, span, currency, most=share > MOST)
    query = (
        "SELECT t.customer_id, c.name, c.email, t.currency, t.n, t.revenue FROM ("
        f"SELECT customer_id, currency, n, revenue FROM ({source}) s WHERE n > 0 "
        "ORDER BY revenue DESC, n DESC, 1, 2 LIMIT %(limit)s) t "
        "JOIN customers c ON c.tenant_id = %(tenant)s AND c.customer_id = t.customer_id "
        "ORDER BY t.revenue DESC, t.n DESC, 1, 4"
    )
    return [CustomerRank(*row) for row in _rows(query, {**values, "limit": limit})]


@consistent_read
def analytics_top_products_each_currency(
    *, tenant: Tenant, span: Range, limit: int
) -> list[ProductRank]:
    """`analytics_top_products` by revenue, the top `limit` of each currency (the
    dashboard's chart shows one currency at a time)."""
    source, values = product_source(tenant.id, span, None, *_first_last(tenant))
    query = (
        "SELECT t.product_id, p.sku, p.name, t.currency, t.units, t.revenue FROM ("
        "SELECT product_id, currency, units, revenue, row_number() OVER (PARTITION BY "
        "currency ORDER BY revenue DESC, units DESC, product_id) AS place "
        f"FROM ({source}) s WHERE n > 0) t "
        "JOIN products p ON p.tenant_id = %(tenant)s AND p.product_id = t.product_id "
        "WHERE t.place <= %(limit)s ORDER BY t.currency, t.place"
    )
    return [ProductRank(*row) for row in _rows(query, {**values, "limit": limit})]


@consistent_read
def analytics_last_order_date(*, tenant: Tenant) -> datetime | None:
    """The order_date of the tenant's latest order (None without orders)."""
    query = "SELECT max(o.order_date) FROM analytics_orders o WHERE o.tenant_id = %(tenant)s"
    return _rows(query, {"tenant": tenant.id})[0][0]
