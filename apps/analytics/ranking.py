"""The top customers of a long range without adding up every order in it: the customers'
all-time totals walked from the highest revenue down (`analytics_customer_totals_top`),
each group's figures in the range added up from its own orders, until no group left can
enter the top.

A group (customer and currency) has no more revenue in a range than over all time, since
no order's total is negative (the contract's `total_amount >= 0`, a CHECK constraint on
`orders`). So once the top `limit` found so far all have more revenue in the range than
the next group has in all, no group left can reach them, and the answer is exact. A range
with most of a year in it stops after the first page; a short one, where the top
customers in the range are far down the all-time ranking, gives up after a few pages
(None), and the caller adds up the range's orders instead.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from django.db import connection

from apps.analytics.params import Range
from apps.analytics.sources import in_span

PAGE = 500  # groups walked at a time, or PER_LIMIT times the limit
PER_LIMIT = 4
PAGES = 6  # walked before giving up

_TOTALS = (
    "SELECT customer_id, revenue FROM analytics_customer_totals "
    "WHERE tenant_id = %(tenant)s{only} "
    "ORDER BY revenue DESC, customer_id, currency LIMIT %(page)s OFFSET %(offset)s"
)
_IN_RANGE = (
    "SELECT customer_id, currency, count(*), sum(total) FROM analytics_orders "
    "WHERE tenant_id = %(tenant)s AND customer_id = ANY(%(ids)s){only}{dates} GROUP BY 1, 2"
)

Group = tuple[UUID, str, int, Decimal]  # customer_id, currency, orders, revenue


def _rank(group: Group) -> tuple:
    """Revenue, then orders, highest first; ties to the lower customer id, then currency
    (as PostgreSQL orders uuids, and three-letter codes in any collation)."""
    customer_id, currency, orders, revenue = group
    return (-revenue, -orders, customer_id, currency)


def top_customers_walk(
    tenant_id, span: Range, currency: str | None, limit: int
) -> list[Group] | None:
    """The top `limit` groups by revenue in `span` (orders, revenue), best first; None
    when PAGES pages were not enough to be sure."""
    values = {"tenant": tenant_id, "currency": currency, "start": span.start, "end": span.end}
    only = "" if currency is None else " AND currency = %(currency)s"
    dates = " AND " + in_span("order_date", span)
    totals = _TOTALS.format(only=only)
    in_range = _IN_RANGE.format(only=only, dates=dates)
    page = max(PAGE, PER_LIMIT * limit)
    # every group of a walked customer, in the currency asked for: exact figures, whether
    # or not the walk has reached the group itself
    found: dict[tuple[UUID, str], Group] = {}
    with connection.cursor() as cursor:
        for number in range(PAGES):
            cursor.execute(totals, {**values, "page": page, "offset": number * page})
            walked = cursor.fetchall()
            if walked:
                cursor.execute(in_range, {**values, "ids": list({row[0] for row in walked})})
                for group in cursor.fetchall():
                    found[group[:2]] = group
            best = sorted(found.values(), key=_rank)[:limit]
            if len(walked) < page:
                return best  # every group walked
            bound = walked[-1][1]  # no group left has more revenue than this in all
            if len(best) == limit and best[-1][3] > bound:
                return best
    return None
