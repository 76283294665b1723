"""Keeping the analytics copies (`models`) exactly in step with the final tables.

Merges note the ids of the orders and order items they write in the change feed
(`final_changes`, see `apps.ingestions.engine.changes`), in their own transaction, and wake
`analytics_refresh` once they commit. Catching up applies, set-wise, every change the
transaction's snapshot sees and deletes those notes, so a snapshot with no note of a tenant
left sees copies that match its final tables exactly. A read (`consistent_read`) checks
that first; when notes are left (a merge committed since the last refresh), it catches up
itself in its own transaction and answers from there: an answer is always that of the
final tables as of one committed state, never a stale one.

Catching up for a tenant is one at a time (a session advisory lock taken before the
transaction starts, so its snapshot follows the previous one's commit). Merges never wait
for it: they only add notes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import OperationalError, connection, transaction

from apps.ingestions.engine import tenant_looks_empty
from apps.ingestions.models import FinalChangeWake, UploadState
from apps.ingestions.selectors import SESSION_RECEIVING_SQL
from apps.ingestions.services import changes_reader_send

logger = logging.getLogger("apps.analytics.services")

_LOCK_KEY = "hashtextextended('analytics:' || %s::text, 0)"
_RESEND_SECONDS = 1.0  # a merge holding the wake row: the refresh comes back after this

# Each step sees the tenant as `%(tenant)s`; `pg_temp._chg` holds the ids taken from the
# feed. Items: their copies replaced by their current rows (with their order's date and
# currency), and what that adds to or takes from each order's count kept (`_delta`).
# Orders: their items' copies follow their date and currency; the copy of every order
# touched (itself, or one of its items, moved from or to it) is made again, its counts its
# old copy's plus the delta, with the previous order dates worked out along the customers
# concerned (old and new), whose other copies get theirs corrected.
#
# Plans that hold whatever the statistics say (a tenant whose copies this very
# transaction has just filled looks empty to the planner): the copies are looked up by
# array (`= ANY`, one pass whichever index), and every temp table is indexed on the key it
# is joined by, so that a nested loop the planner picks on a wrong estimate probes an index
# instead of scanning a table once per row.
# The oldest `rows` of the tenant's feed (all of it when NULL).
_TAKE = (
    "WITH gone AS (DELETE FROM final_changes WHERE id IN (SELECT id FROM final_changes "
    "WHERE tenant_id = %(tenant)s ORDER BY id LIMIT %(rows)s) RETURNING record_type, keys) "
    "INSERT INTO pg_temp._chg SELECT DISTINCT record_type, unnest(keys) FROM gone"
)
_STEPS = (
    "CREATE INDEX ON pg_temp._chg (id)",
    "ANALYZE pg_temp._chg",
    "CREATE TEMP TABLE pg_temp._new_lines ON COMMIT DROP AS "
    "SELECT i.order_item_id, i.order_id, i.product_id, o.order_date, o.currency, i.quantity, "
    "i.line_total FROM pg_temp._chg c "
    "JOIN order_items i ON i.tenant_id = %(tenant)s AND i.order_item_id = c.id "
    "JOIN orders o ON o.tenant_id = %(tenant)s AND o.order_id = i.order_id "
    "WHERE c.record_type = 'order_items'",
    "CREATE TEMP TABLE pg_temp._gone ON COMMIT DROP AS "
    "WITH gone AS (DELETE FROM analytics_lines l WHERE l.tenant_id = %(tenant)s "
    "AND l.order_item_id = ANY (array(SELECT id FROM pg_temp._chg "
    "WHERE record_type = 'order_items')) RETURNING l.order_id, l.product_id, l.order_date, "
    "l.currency, l.quantity, l.line_total) SELECT * FROM gone",
    "CREATE TEMP TABLE pg_temp._delta ON COMMIT DROP AS "
    "SELECT order_id, -count(*) AS items, -sum(quantity) AS units FROM pg_temp._gone GROUP BY 1 "
    "UNION ALL SELECT order_id, count(*), sum(quantity) FROM pg_temp._new_lines GROUP BY 1",
    "INSERT INTO analytics_lines (tenant_id, order_item_id, order_id, product_id, order_date, "
    "currency, quantity, line_total) SELECT %(tenant)s, * FROM pg_temp._new_lines "
    "ORDER BY order_item_id",  # in the key's order: a bulk of new ids fills pages in turn
    # only orders that had a copy, with another date or currency now, have items to move;
    # found by their old date (the items' copies are indexed by date, not by order) and
    # currency (an item copied again above has its order's new ones already)
    "CREATE TEMP TABLE pg_temp._moved ON COMMIT DROP AS "
    "SELECT o.order_id, f.order_date AS was, f.currency AS was_currency, o.order_date, "
    "o.currency FROM analytics_orders f "
    "JOIN orders o ON o.tenant_id = %(tenant)s AND o.order_id = f.order_id "
    "WHERE f.tenant_id = %(tenant)s AND f.order_id = ANY (array("
    "SELECT id FROM pg_temp._chg WHERE record_type = 'orders')) "
    "AND (f.order_date, f.currency) IS DISTINCT FROM (o.order_date, o.currency)",
    "CREATE INDEX ON pg_temp._moved (order_id)",
    "ANALYZE pg_temp._moved",
    "CREATE TEMP TABLE pg_temp._shifted ON COMMIT DROP AS WITH shifted AS ("
    "UPDATE analytics_lines l SET order_date = m.order_date, currency = m.currency "
    "FROM pg_temp._moved m WHERE l.tenant_id = %(tenant)s AND l.order_date = m.was "
    "AND l.order_id = m.order_id AND l.currency = m.was_currency RETURNING l.product_id, "
    "l.quantity, l.line_total, m.was, m.was_currency, m.order_date, m.currency) "
    "SELECT * FROM shifted",
    # what the items' changes add to each product's months and total
    "CREATE TEMP TABLE pg_temp._products ON COMMIT DROP AS SELECT date_trunc('month', "
    "at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month, currency, product_id, "
    "sum(lines) AS lines, sum(units) AS units, sum(revenue) AS revenue FROM ("
    "SELECT order_date AS at, currency, product_id, -1 AS lines, -quantity AS units, "
    "-line_total AS revenue FROM pg_temp._gone UNION ALL SELECT order_date, currency, "
    "product_id, 1, quantity, line_total FROM pg_temp._new_lines UNION ALL SELECT was, "
    "was_currency, product_id, -1, -quantity, -line_total FROM pg_temp._shifted UNION ALL "
    "SELECT order_date, currency, product_id, 1, quantity, line_total FROM pg_temp._shifted"
    ") d GROUP BY 1, 2, 3",
    # each month's change is its year-to-date row's and every later month's of its year
    "INSERT INTO analytics_product_ytd AS t (tenant_id, month, currency, product_id, lines, "
    "units, revenue) SELECT %(tenant)s, g.at AT TIME ZONE 'UTC', p.currency, p.product_id, "
    "sum(p.lines), sum(p.units), sum(p.revenue) FROM pg_temp._products p, "
    "generate_series(p.month AT TIME ZONE 'UTC', date_trunc('year', p.month AT TIME ZONE 'UTC') "
    "+ interval '11 months', interval '1 month') AS g(at) GROUP BY 2, 3, 4 ORDER BY 2, 3, 4 "
    "ON CONFLICT (tenant_id, month, currency, product_id) DO UPDATE SET "
    "lines = t.lines + excluded.lines, units = t.units + excluded.units, "
    "revenue = t.revenue + excluded.revenue",
    "INSERT INTO analytics_product_totals AS t (tenant_id, currency, product_id, lines, units, "
    "revenue) SELECT %(tenant)s, currency, product_id, sum(lines), sum(units), sum(revenue) "
    "FROM pg_temp._products GROUP BY 2, 3 "
    "ON CONFLICT (tenant_id, currency, product_id) DO UPDATE SET "
    "lines = t.lines + excluded.lines, units = t.units + excluded.units, "
    "revenue = t.revenue + excluded.revenue",
    "CREATE TEMP TABLE pg_temp._touched ON COMMIT DROP AS "
    "SELECT id AS order_id FROM pg_temp._chg WHERE record_type = 'orders' "
    "UNION SELECT order_id FROM pg_temp._delta",
    "CREATE TEMP TABLE pg_temp._old ON COMMIT DROP AS "
    "WITH gone AS (DELETE FROM analytics_orders f WHERE f.tenant_id = %(tenant)s "
    "AND f.order_id = ANY (array(SELECT order_id FROM pg_temp._touched)) "
    "RETURNING f.order_id, f.customer_id, f.currency, f.total, f.items, f.units) "
    "SELECT * FROM gone",
    "CREATE INDEX ON pg_temp._touched (order_id)",
    "CREATE INDEX ON pg_temp._old (order_id)",
    "ANALYZE pg_temp._delta, pg_temp._touched, pg_temp._old",
    "CREATE TEMP TABLE pg_temp._made ON COMMIT DROP AS "
    "SELECT o.order_id, o.order_date, o.customer_id, o.currency, o.total_amount AS total, "
    "coalesce(f.items, 0) + coalesce(d.items, 0) AS items, "
    "coalesce(f.units, 0) + coalesce(d.units, 0) AS units FROM pg_temp._touched t "
    "JOIN orders o ON o.tenant_id = %(tenant)s AND o.order_id = t.order_id "
    "LEFT JOIN pg_temp._old f ON f.order_id = t.order_id "
    "LEFT JOIN (SELECT order_id, sum(items) AS items, sum(units) AS units "
    "FROM pg_temp._delta GROUP BY 1) d ON d.order_id = t.order_id",
    "CREATE TEMP TABLE pg_temp._customers ON COMMIT DROP AS "
    "SELECT customer_id FROM pg_temp._made UNION SELECT customer_id FROM pg_temp._old",
    "CREATE INDEX ON pg_temp._customers (customer_id)",
    "ANALYZE pg_temp._made, pg_temp._customers",
    # the previous dates along those customers' orders: the copies kept and the ones made
    "CREATE TEMP TABLE pg_temp._prev ON COMMIT DROP AS SELECT order_id, made, "
    "lag(order_date) OVER (PARTITION BY customer_id ORDER BY order_date, order_id) AS prev, "
    "lag(order_date) OVER (PARTITION BY customer_id, currency ORDER BY order_date, order_id) "
    "AS prev_in FROM (SELECT f.order_id, f.order_date, f.customer_id, f.currency, false AS made "
    "FROM analytics_orders f WHERE f.tenant_id = %(tenant)s AND f.customer_id = ANY (array("
    "SELECT customer_id FROM pg_temp._customers)) UNION ALL SELECT order_id, order_date, "
    "customer_id, currency, true FROM pg_temp._made) a",
    "CREATE INDEX ON pg_temp._prev (order_id)",
    "ANALYZE pg_temp._prev",
    "INSERT INTO analytics_orders (tenant_id, order_id, order_date, customer_id, currency, "
    "total, items, units, prev_order_date, prev_in_currency) SELECT %(tenant)s, m.order_id, "
    "m.order_date, m.customer_id, m.currency, m.total, m.items, m.units, p.prev, p.prev_in "
    "FROM pg_temp._made m JOIN pg_temp._prev p ON p.order_id = m.order_id AND p.made",
    "UPDATE analytics_orders f SET prev_order_date = p.prev, prev_in_currency = p.prev_in "
    "FROM pg_temp._prev p WHERE NOT p.made AND f.tenant_id = %(tenant)s "
    "AND f.order_id = p.order_id "
    "AND (f.prev_order_date, f.prev_in_currency) IS DISTINCT FROM (p.prev, p.prev_in)",
    # what the orders' changes add to each customer's total in a currency
    "INSERT INTO analytics_customer_totals AS t (tenant_id, customer_id, currency, orders, "
    "revenue) SELECT %(tenant)s, customer_id, currency, sum(orders), sum(revenue) FROM ("
    "SELECT customer_id, currency, -1 AS orders, -total AS revenue FROM pg_temp._old "
    "UNION ALL SELECT customer_id, currency, 1, total FROM pg_temp._made) d GROUP BY 2, 3 "
    "ON CONFLICT (tenant_id, customer_id, currency) DO UPDATE SET "
    "orders = t.orders + excluded.orders, revenue = t.revenue + excluded.revenue",
)
_TEMP = ", ".join(
    f"pg_temp.{name}"
    for name in ("_chg", "_new_lines", "_gone", "_delta", "_moved", "_shifted", "_products")
    + ("_touched", "_old", "_made", "_customers", "_prev")
)


def _apply(tenant_id, rows: int | None = None) -> int:
    """Apply the tenant's changes that this transaction sees (the oldest `rows` entries of
    the feed only, when given); how many ids it took."""
    params = {"tenant": tenant_id}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {_TEMP}")
        cursor.execute("CREATE TEMP TABLE pg_temp._chg (record_type text, id uuid) ON COMMIT DROP")
        cursor.execute(_TAKE, {**params, "rows": rows})
        taken = cursor.rowcount
        if taken:
            for step in _STEPS:
                cursor.execute(step, params)
        cursor.execute(f"DROP TABLE IF EXISTS {_TEMP}")
    return taken


@contextmanager
def _tenant_lock(tenant_id) -> Iterator[None]:
    """The tenant's catching-up lock, for the session, outside any transaction."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", [tenant_id])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", [tenant_id])


def _begin(cursor, *, read_only: bool) -> None:
    mode = "READ ONLY" if read_only else "READ WRITE"
    cursor.execute(f"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, {mode}")
    # analytics plans are short: compiling costs more than they save
    cursor.execute("SET LOCAL jit = off")
    cursor.execute("SET LOCAL work_mem = '64MB'")  # a year's customers hashed in memory


def _pending(cursor, tenant_id) -> bool:
    cursor.execute("SELECT EXISTS (SELECT 1 FROM final_changes WHERE tenant_id = %s)", [tenant_id])
    return cursor.fetchone()[0]


# The copies whose statistics are refreshed after a catching up that changed more than a
# tenth of them, or in which the planner takes the tenant for (nearly) empty: the next one
# plans with the tenant's true size (autovacuum's analyze may come a minute later, and
# never for a tenant new to copies that are large already: the planner then takes the
# tenant for empty, and a lookup of a slice's ids `= ANY (array(...))` reads all of its
# copies and compares each with every id). After the commit: ANALYZE would hold other
# tenants' refreshes.
_COPIES = ("analytics_orders", "analytics_lines")
_STALE = """
SELECT relname FROM pg_stat_user_tables
WHERE relname = ANY (%s) AND n_mod_since_analyze > 1000 + 0.1 * greatest(n_live_tup, 0)
"""


def _analyze_stale(tenant_id, taken: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_STALE, [list(_COPIES)])
        stale = {table for (table,) in cursor.fetchall()}
        for table in _COPIES:
            if table in stale or tenant_looks_empty(cursor.cursor, table, tenant_id, rows=taken):
                cursor.execute(f"ANALYZE {table}")


def analytics_catch_up(*, tenant_id, rows: int | None = None) -> int:
    """Apply every change of the tenant committed so far to its copies (with `rows`, the
    oldest that many entries of the feed), in one transaction; how many ids it took (0:
    none was left)."""
    if connection.in_atomic_block:  # a caller's transaction: its snapshot is the one there is
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})", [tenant_id])
        return _apply(tenant_id, rows)
    with _tenant_lock(tenant_id):
        with transaction.atomic(), connection.cursor() as cursor:
            _begin(cursor, read_only=False)
            taken = _apply(tenant_id, rows)
        if taken > 1000:
            _analyze_stale(tenant_id, taken)
    return taken


# Files still to load, of any tenant: a refresh now would share the workers with them
# (index `uploads_loading`). Applying the tenant's feed in slices costs about three times
# what one catching up after the loads does, and each slice holds a worker slot.
_LOADING = f"""
SELECT EXISTS (SELECT 1 FROM uploads u WHERE source = 'file' AND state = ANY (%(states)s)
               AND NOT {SESSION_RECEIVING_SQL})
  AND (SELECT min(created_at) FROM final_changes WHERE tenant_id = %(tenant)s)
      > now() - %(patience)s * interval '1 second'
"""
_LOADING_STATES = [UploadState.QUEUED, UploadState.WAITING, UploadState.PROCESSING]
_PATIENCE_SECONDS = 60  # the longest a refresh puts itself off for the tenant's loads
# Feed entries (one per merged chunk, at most 20,000 ids each) one refresh task applies; it
# sends itself again for the rest, so an upload that arrives meanwhile waits for one entry
# at most: 950,000 ids at once held a slot for 17-20 s, and two tenants' refreshes both
# slots, while other tenants' uploads waited; three entries a task held a small upload
# queued for 0.5-1.65 s on a slow machine. Smaller slices cost more in all
# (docs/analytics.md): catching up is the workers' spare time, loads come first.
REFRESH_ENTRIES = 1


def analytics_refresh(*, tenant_id) -> int:
    """The change feed's reader, sent after merges: catch up, then let merges send it again
    (delete the tenant's wake row), and catch up once more if a merge noted changes before
    it could. How many ids it took.

    While files are still to load (the tenant's bulk load of its four types, or another
    tenant's), it comes back later instead, for up to a minute from the oldest change:
    one refresh after the last file rather than one per file, and the workers left to
    the loads. Answers meanwhile catch up themselves. It applies `REFRESH_ENTRIES` of the
    feed at a time, and sends itself again while more is left."""
    with connection.cursor() as cursor:
        params = {"tenant": tenant_id, "states": _LOADING_STATES, "patience": _PATIENCE_SECONDS}
        cursor.execute(_LOADING, params)
        if cursor.fetchone()[0]:
            changes_reader_send(tenant_id=tenant_id, countdown=_RESEND_SECONDS * 5)
            return 0
    taken = 0
    while True:
        taken += analytics_catch_up(tenant_id=tenant_id, rows=REFRESH_ENTRIES)
        with connection.cursor() as cursor:
            if _pending(cursor, tenant_id):
                # the rest after the tasks queued meanwhile (its wake row kept: this is on
                # its way, so merges need not send another)
                changes_reader_send(tenant_id=tenant_id)
                return taken
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # A merge that marked the row holds it until it commits: come back then
                # rather than hold a worker while a file loads.
                cursor.execute("SET LOCAL lock_timeout = '100ms'")
                FinalChangeWake.objects.filter(tenant_id=tenant_id).delete()
        except OperationalError:
            changes_reader_send(tenant_id=tenant_id, countdown=_RESEND_SECONDS)
            return taken
        with connection.cursor() as cursor:
            if not _pending(cursor, tenant_id):
                return taken


def consistent_read(selector):
    """Run `selector` (keyword `tenant` first) in one REPEATABLE READ snapshot whose copies
    match its final tables: read-only when no change is left to apply, else after applying
    them in the same transaction."""

    @functools.wraps(selector)
    def read(**kwargs):
        tenant_id = kwargs["tenant"].id
        if connection.in_atomic_block:
            analytics_catch_up(tenant_id=tenant_id)
            return selector(**kwargs)
        with transaction.atomic(), connection.cursor() as cursor:
            _begin(cursor, read_only=True)
            if not _pending(cursor, tenant_id):
                return selector(**kwargs)
        with _tenant_lock(tenant_id), transaction.atomic(), connection.cursor() as cursor:
            _begin(cursor, read_only=False)
            _apply(tenant_id)
            return selector(**kwargs)

    return read
