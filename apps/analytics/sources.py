"""Where the top products and top customers of a range are added up from: the least the
copies offer for it (`models`).

A range's products are its whole months (UTC) from `analytics_product_months` and the
days at its ends from the items' copies; an end that takes more than half its month is
that month's totals less the items of the rest of it, so that no more than half a month
of items is read at either end. A range that covers most of the time from the
tenant's first order to its last is worked out the other way round: the all-time totals
less what lies outside it, so that the longest ranges, a year of a million items, cost
the least. Customers have no months (a customer orders a few times a year, so a month of
customers is about as many rows as its orders): the same choice is made between the
range's orders and the all-time totals less the orders outside it.

Either way the figures are exact. Each builder returns SQL for a subquery with the
group's key (product_id or customer_id), currency, `n` (its items, or orders, in the
range: a group with none may come with 0, which the callers leave out) and the figures,
and its parameters.
"""

from __future__ import annotations

from datetime import MAXYEAR, UTC, datetime

from apps.analytics.params import Range


def _month_floor(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(floor: datetime) -> datetime:
    if floor.year == MAXYEAR and floor.month == 12:
        return datetime.max.replace(tzinfo=UTC)  # no month after it: the end of time
    return floor.replace(year=floor.year + floor.month // 12, month=floor.month % 12 + 1)


def _month_ceil(moment: datetime) -> datetime:
    floor = _month_floor(moment)
    return floor if floor == moment else _next_month(floor)


def time_share(span: Range, first: datetime | None, last: datetime | None) -> float:
    """The share of the time from the tenant's first order to its last (`first`, `last`:
    None without orders) that `span` covers."""
    if first is None or last is None or last <= first:
        return 1.0 if span.start is None and span.end is None else 0.0
    start = first if span.start is None else max(span.start, first)
    end = last if span.end is None else min(span.end, last)
    return max(0.0, (end - start) / (last - first))


def _from(column: str, low: str | None, high: str | None) -> str:
    """`column` in [low, high), None unbounded (SQL parameters' names)."""
    parts = [f"{column} >= %({low})s" if low else "", f"{column} < %({high})s" if high else ""]
    return " AND ".join(p for p in parts if p) or "TRUE"


class _ProductParts:
    """The members of a product source's UNION ALL, each rows of (product_id, currency,
    n, units, revenue), some negated, and their parameters."""

    def __init__(self, tenant_id, currency: str | None):
        self.values: dict = {"tenant": tenant_id, "currency": currency}
        self.sql: list[str] = []
        self._only = "" if currency is None else " AND currency = %(currency)s"

    def _names(self, low: datetime | None, high: datetime | None) -> tuple:
        names = []
        for value in (low, high):
            names.append(None if value is None else f"p{len(self.values)}")
            if value is not None:
                self.values[names[-1]] = value
        return tuple(names)

    def lines(self, low: datetime | None, high: datetime | None, sign: str) -> None:
        self.sql.append(
            f"SELECT product_id, currency, {sign}1 AS n, {sign}quantity AS units, "
            f"{sign}line_total AS revenue FROM analytics_lines WHERE tenant_id = %(tenant)s"
            f"{self._only} AND {_from('order_date', *self._names(low, high))}"
        )

    def months(self, low: datetime | None, high: datetime | None, sign: str) -> None:
        self.sql.append(
            f"SELECT product_id, currency, {sign}lines AS n, {sign}units AS units, "
            f"{sign}revenue AS revenue FROM analytics_product_months WHERE tenant_id = "
            f"%(tenant)s{self._only} AND {_from('month', *self._names(low, high))}"
        )

    def segment(self, low: datetime, high: datetime, sign: str) -> None:
        """[low, high) inside one month: its items, or, when that is more than half the
        month, the month's totals less the items of the rest of it."""
        floor = _month_floor(low)
        following = _next_month(floor)
        if high - low <= (following - floor) / 2:
            self.lines(low, high, sign)
            return
        other = "" if sign else "-"
        self.months(floor, following, sign)
        if floor < low:
            self.lines(floor, low, other)
        if high < following:
            self.lines(high, following, other)

    def span(self, low: datetime | None, high: datetime | None, sign: str = "") -> None:
        """[low, high), None unbounded: its whole months from the month totals, the rest
        of it by `segment`."""
        low_ceil = None if low is None else _month_ceil(low)
        high_floor = None if high is None else _month_floor(high)
        if low_ceil is not None and high_floor is not None and low_ceil > high_floor:
            if low < high:  # inside one month
                self.segment(low, high, sign)
            return
        if low_ceil is None or high_floor is None or low_ceil < high_floor:
            self.months(low_ceil, high_floor, sign)
        if low is not None and low < low_ceil:
            self.segment(low, low_ceil, sign)
        if high is not None and high_floor < high:
            self.segment(high_floor, high, sign)


def product_source(tenant_id, span: Range, currency: str | None, *, most: bool) -> tuple[str, dict]:
    """Items (`n`), units and revenue per product and currency of the orders in `span`;
    with `most`, as the totals less the rest."""
    parts = _ProductParts(tenant_id, currency)
    if not most:
        parts.span(span.start, span.end)
        query = (
            "SELECT product_id, currency, sum(n) AS n, sum(units)::bigint AS units, "
            f"sum(revenue) AS revenue FROM ({' UNION ALL '.join(parts.sql)}) o GROUP BY 1, 2"
        )
        return query, parts.values
    if span.start is not None:  # outside: (-inf, start) and [end, inf)
        parts.span(None, span.start)
    if span.end is not None:
        parts.span(span.end, None)
    rest = " UNION ALL ".join(parts.sql) or (
        "SELECT product_id, currency, lines AS n, units, revenue FROM analytics_product_months "
        "WHERE FALSE"
    )
    total_only = "" if currency is None else " AND t.currency = %(currency)s"
    query = (
        "SELECT t.product_id, t.currency, t.lines - coalesce(r.n, 0) AS n, "
        "(t.units - coalesce(r.units, 0))::bigint AS units, "
        "t.revenue - coalesce(r.revenue, 0) AS revenue FROM analytics_product_totals t "
        "LEFT JOIN (SELECT product_id, currency, sum(n) AS n, sum(units) AS units, "
        f"sum(revenue) AS revenue FROM ({rest}) o GROUP BY 1, 2) r "
        f"USING (product_id, currency) WHERE t.tenant_id = %(tenant)s{total_only}"
    )
    return query, parts.values


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
