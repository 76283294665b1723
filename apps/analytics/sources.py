"""Where the top products and top customers of a range are added up from: the least the
copies offer for it (`models`).

A range's products are its whole months (UTC) from `analytics_product_months` and the
days at its ends from the items' copies. A range that covers most of the time from the
tenant's first order to its last is worked out the other way round: the all-time totals
less what lies outside it, so that the longest ranges, a year of a million items, cost
the least. Customers have no months (a customer orders a few times a year, so a month of
customers is about as many rows as its orders): the same choice is made between the
range's orders and the all-time totals less the orders outside it.

Either way the figures are exact. Each builder returns SQL for a subquery with the
group's key (product_id or customer_id), currency, `n` (its items, or orders, in the
range: groups with none are left out) and the figures, and its parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apps.analytics.params import Range

# Past this share of the tenant's time with orders, a range is the totals less the rest.
_MOST = 0.5


def _month_floor(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _month_ceil(moment: datetime) -> datetime:
    floor = _month_floor(moment)
    if floor == moment:
        return floor
    return floor.replace(year=floor.year + floor.month // 12, month=floor.month % 12 + 1)


def covers_most(span: Range, first: datetime | None, last: datetime | None) -> bool:
    """Does `span` cover more than half the time from the tenant's first order to its
    last (`first`, `last`: None without orders)?"""
    if first is None or last is None or last <= first:
        return span.start is None and span.end is None
    start = first if span.start is None else max(span.start, first)
    end = last if span.end is None else min(span.end, last)
    return (end - start) / (last - first) > _MOST


def _from(column: str, low: str | None, high: str | None) -> str:
    """`column` in [low, high), None unbounded (SQL parameters' names)."""
    parts = [f"{column} >= %({low})s" if low else "", f"{column} < %({high})s" if high else ""]
    return " AND ".join(p for p in parts if p) or "TRUE"


def product_source(tenant_id, span: Range, currency: str | None, *, most: bool) -> tuple[str, dict]:
    """Items (`n`), units and revenue per product and currency of the orders in `span`;
    with `most`, as the totals less the rest."""
    values = {
        "tenant": tenant_id,
        "currency": currency,
        "start": span.start,
        "end": span.end,
        "start_floor": span.start and _month_floor(span.start),
        "start_ceil": span.start and _month_ceil(span.start),
        "end_floor": span.end and _month_floor(span.end),
        "end_ceil": span.end and _month_ceil(span.end),
    }
    only = "" if currency is None else " AND currency = %(currency)s"
    lines = (
        "SELECT product_id, currency, 1 AS n, quantity AS units, line_total AS revenue "
        f"FROM analytics_lines WHERE tenant_id = %(tenant)s{only} AND "
    )
    months = (
        "SELECT product_id, currency, lines AS n, units, revenue FROM analytics_product_months "
        f"WHERE tenant_id = %(tenant)s{only} AND "
    )
    if most:  # outside: (-inf, start) and [end, inf)
        parts = []
        if span.start is not None:
            parts += [months + _from("month", None, "start_floor")]
            parts += [lines + _from("order_date", "start_floor", "start")]
        if span.end is not None:
            parts += [lines + _from("order_date", "end", "end_ceil")]
            parts += [months + _from("month", "end_ceil", None)]
        rest = " UNION ALL ".join(parts) or months + "FALSE"
        total_only = "" if currency is None else " AND t.currency = %(currency)s"
        query = (
            "SELECT t.product_id, t.currency, t.lines - coalesce(r.n, 0) AS n, "
            "(t.units - coalesce(r.units, 0))::bigint AS units, "
            "t.revenue - coalesce(r.revenue, 0) AS revenue FROM analytics_product_totals t "
            "LEFT JOIN (SELECT product_id, currency, sum(n) AS n, sum(units) AS units, "
            f"sum(revenue) AS revenue FROM ({rest}) o GROUP BY 1, 2) r "
            f"USING (product_id, currency) WHERE t.tenant_id = %(tenant)s{total_only}"
        )
        return query, values
    whole = span.start is None or span.end is None or values["start_ceil"] < values["end_floor"]
    if whole:  # the whole months, and the days before and after them
        low = None if span.start is None else "start_ceil"
        high = None if span.end is None else "end_floor"
        parts = [months + _from("month", low, high)]
        if span.start is not None:
            parts += [lines + _from("order_date", "start", "start_ceil")]
        if span.end is not None:
            parts += [lines + _from("order_date", "end_floor", "end")]
    else:
        parts = [lines + _from("order_date", "start", "end")]
    query = (
        "SELECT product_id, currency, sum(n) AS n, sum(units)::bigint AS units, "
        f"sum(revenue) AS revenue FROM ({' UNION ALL '.join(parts)}) o GROUP BY 1, 2"
    )
    return query, values


def customer_source(
    tenant_id, span: Range, currency: str | None, *, most: bool
) -> tuple[str, dict]:
    """Orders (`n`) and revenue per customer and currency of the orders in `span`; with
    `most`, as the totals less the rest."""
    values = {"tenant": tenant_id, "currency": currency, "start": span.start, "end": span.end}
    only = "" if currency is None else " AND currency = %(currency)s"
    orders = (
        "SELECT customer_id, currency, count(*) AS n, sum(total) AS revenue "
        f"FROM analytics_orders WHERE tenant_id = %(tenant)s{only} AND "
    )
    if not most:
        low = None if span.start is None else "start"
        high = None if span.end is None else "end"
        return orders + _from("order_date", low, high) + " GROUP BY 1, 2", values
    outside = [
        f"order_date < %({name})s" if name == "start" else f"order_date >= %({name})s"
        for name in ("start", "end")
        if values[name] is not None
    ]
    rest = orders + (f"({' OR '.join(outside)})" if outside else "FALSE") + " GROUP BY 1, 2"
    total_only = "" if currency is None else " AND t.currency = %(currency)s"
    query = (
        "SELECT t.customer_id, t.currency, t.orders - coalesce(r.n, 0) AS n, "
        "t.revenue - coalesce(r.revenue, 0) AS revenue FROM analytics_customer_totals t "
        f"LEFT JOIN ({rest}) r USING (customer_id, currency) "
        f"WHERE t.tenant_id = %(tenant)s{total_only}"
    )
    return query, values
