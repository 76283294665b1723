"""Where the top products and top customers of a range are added up from: the least the
copies offer for it (`models`).

A range's products are its whole months (UTC) and the days at its ends. The whole months
from a to b are Cum(b) - Cum(a), the figures of every month before b less those before
a, each read as two rows per group at most from the year-to-date rows
(`analytics_product_ytd`) for a range inside one year, however long. The days at an end
come from the items' copies; an end that takes more than half its month is that month
less the items of the rest of it, so that no more than half a month of items is read
at either end. Customers have no months (a customer orders a few times a year, so a
month of customers is about as many rows as its orders): a range that covers most of the
time from the tenant's first order to its last is worked out as the all-time totals
less the orders outside it, a shorter one from its own orders.

Either way the figures are exact. Each builder returns SQL for a subquery with the
group's key (product_id or customer_id), currency, `n` (its items, or orders, in the
range: a group with none may come with 0, which the callers leave out) and the figures,
and its parameters.
"""

from __future__ import annotations

import itertools
from datetime import MAXYEAR, UTC, datetime

from apps.analytics.params import Range

_END = (MAXYEAR + 1) * 12  # the month number past December 9999: the end of time


def _number(moment: datetime) -> int:
    """The month number (year * 12 + month - 1) of the calendar month (UTC) `moment` is in."""
    moment = moment.astimezone(UTC)
    return moment.year * 12 + moment.month - 1


def _month_start(k: int) -> datetime:
    """The first instant of month number `k`; for `_END`, the last one there is, which
    stands for the end of time (a read up to it has no upper bound)."""
    if k >= _END:
        return datetime.max.replace(tzinfo=UTC)
    return datetime(k // 12, k % 12 + 1, 1, tzinfo=UTC)


def time_share(span: Range, first: datetime | None, last: datetime | None) -> float:
    """The share of the time from the tenant's first order to its last (`first`, `last`:
    None without orders) that `span` covers."""
    if first is None or last is None or last <= first:
        return 1.0 if span.start is None and span.end is None else 0.0
    start = first if span.start is None else max(span.start, first)
    end = last if span.end is None else min(span.end, last)
    return max(0.0, (end - start) / (last - first))


def in_span(column: str, span: Range) -> str:
    """`column` in [start, end) of `span`, as the parameters `start` and `end`; an end
    that is None is unbounded."""
    parts = [
        f"{column} >= %(start)s" if span.start is not None else "",
        f"{column} < %(end)s" if span.end is not None else "",
    ]
    return " AND ".join(p for p in parts if p) or "TRUE"


class _ProductParts:
    """The members of a product source's UNION ALL, each rows of (product_id, currency,
    n, units, revenue) times a coefficient, and their parameters.

    `Cum(k)` is the figures of every month before month number k (year * 12 + month - 1):
    a year-to-date row (`analytics_product_ytd`) for the month before it plus the
    December rows of the years before, or the all-time totals less the December rows of
    its year and after plus that row: of the ways to read a range's terms, the one with
    the fewest reads once those that cancel out are left out. Months before the tenant's
    first order hold nothing and past its last hold everything, so no more years than it
    has orders in are read.
    """

    def __init__(self, tenant_id, currency: str | None, first: datetime, last: datetime):
        self.values: dict = {"tenant": tenant_id, "currency": currency}
        self.sql: list[str] = []
        self._only = "" if currency is None else " AND currency = %(currency)s"
        self._first, self._last = _number(first), _number(last)
        self._cums: dict[int, int] = {}  # k: coefficient of Cum(k)

    def _name(self, value) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return name

    def lines(self, low: datetime, high: datetime, sign: int) -> None:
        """The items of the orders in [low, high) times `sign` (a high bound of the end
        of time is none: an order may be at its very last instant)."""
        minus = "" if sign > 0 else "-"
        before = "" if high == _month_start(_END) else f" AND order_date < %({self._name(high)})s"
        self.sql.append(
            f"SELECT product_id, currency, {minus}1 AS n, {minus}quantity AS units, "
            f"{minus}line_total AS revenue FROM analytics_lines WHERE tenant_id = %(tenant)s"
            f"{self._only} AND order_date >= %({self._name(low)})s{before}"
        )

    def _cum(self, k: int, sign: int) -> None:
        """Cum(k) times `sign`."""
        self._cums[k] = self._cums.get(k, 0) + sign

    def segment(self, low: datetime, high: datetime) -> None:
        """[low, high) inside one month: its items, or, when that is more than half the
        month, the month (Cum(k + 1) - Cum(k)) less the items of the rest of it."""
        k = _number(low)
        floor, following = _month_start(k), _month_start(k + 1)
        if high - low <= (following - floor) / 2:
            self.lines(low, high, 1)
            return
        self._cum(k + 1, 1)
        self._cum(k, -1)
        if floor < low:
            self.lines(floor, low, -1)
        if high < following:
            self.lines(high, following, -1)

    def span(self, low: datetime | None, high: datetime | None) -> None:
        """[low, high), None unbounded: its whole months as Cum(end) - Cum(start), the
        rest of it by `segment`."""
        low_k = None if low is None else _number(low) + (low != _month_start(_number(low)))
        high_k = _END if high is None else _number(high)
        if low_k is not None and low_k > high_k:  # inside one month
            if low < high:
                self.segment(low, high)
            return
        self._cum(high_k, 1)
        if low_k is not None:
            self._cum(low_k, -1)
            # the end of time's stand-in is an instant an order can have: it is covered too
            if low < _month_start(low_k) or low_k == _END:
                self.segment(low, _month_start(low_k))
        if high is not None and _month_start(high_k) < high:
            self.segment(_month_start(high_k), high)

    def _ways(self, k: int, sign: int) -> list[dict]:
        """The ways to read Cum(k) times `sign`, as coefficients of year-to-date rows (by
        month number) and of the totals (key `_END`)."""
        if k <= self._first:
            return [{}]  # nothing before the first order's month
        if k > self._last:
            return [{_END: sign}]  # everything
        year = k // 12
        forward = {y * 12 + 11: sign for y in range(self._first // 12, year)}
        backward = {y * 12 + 11: -sign for y in range(year, self._last // 12 + 1)}
        backward[_END] = sign
        if k % 12:
            forward[k - 1] = backward[k - 1] = sign
        return [forward, backward]

    def _reads(self) -> dict[int, int]:
        """The Cum(k) terms read the way that takes the fewest reads once the rows that
        cancel out are left out (December rows of the years two terms share, say)."""
        terms = [self._ways(k, sign) for k, sign in sorted(self._cums.items()) if sign]
        best: dict[int, int] | None = None
        for choice in itertools.product(*terms):
            reads: dict[int, int] = {}
            for way in choice:
                for key, sign in way.items():
                    reads[key] = reads.get(key, 0) + sign
            reads = {key: sign for key, sign in reads.items() if sign}
            if best is None or len(reads) < len(best):
                best = reads
        return best or {}

    def members(self) -> list[str]:
        """Every member of the UNION ALL: the lines, then the rows of each coefficient."""
        reads = self._reads()
        totals = reads.pop(_END, 0)
        out = list(self.sql)
        by_sign: dict[int, list[datetime]] = {}
        for k, sign in sorted(reads.items()):
            by_sign.setdefault(sign, []).append(_month_start(k))
        for sign, months in sorted(by_sign.items()):
            out.append(
                f"SELECT product_id, currency, {_times(sign, 'lines')} AS n, "
                f"{_times(sign, 'units')} AS units, {_times(sign, 'revenue')} AS revenue "
                "FROM analytics_product_ytd WHERE tenant_id = %(tenant)s"
                f"{self._only} AND month = ANY(%({self._name(months)})s)"
            )
        if totals:
            out.append(
                f"SELECT product_id, currency, {_times(totals, 'lines')} AS n, "
                f"{_times(totals, 'units')} AS units, {_times(totals, 'revenue')} AS revenue "
                f"FROM analytics_product_totals WHERE tenant_id = %(tenant)s{self._only}"
            )
        return out


def _times(sign: int, column: str) -> str:
    return column if sign == 1 else f"-{column}" if sign == -1 else f"{sign} * {column}"


def product_source(
    tenant_id, span: Range, currency: str | None, first: datetime | None, last: datetime | None
) -> tuple[str, dict]:
    """Items (`n`), units and revenue per product and currency of the orders in `span`,
    for a tenant whose orders run from `first` to `last` (None: it has none)."""
    empty = (
        "SELECT product_id, currency, lines AS n, units, revenue FROM analytics_product_totals "
        "WHERE FALSE"
    )
    if first is None or last is None:
        return empty, {"tenant": tenant_id}
    parts = _ProductParts(tenant_id, currency, first, last)
    parts.span(span.start, span.end)
    members = parts.members() or [empty]
    query = (
        "SELECT product_id, currency, sum(n) AS n, sum(units)::bigint AS units, "
        f"sum(revenue) AS revenue FROM ({' UNION ALL '.join(members)}) o GROUP BY 1, 2"
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
        return orders + in_span("order_date", span) + " GROUP BY 1, 2", values
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
