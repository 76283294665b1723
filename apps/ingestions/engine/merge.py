"""Merge: set-based writes of staged rows into the final tables.

The fast way in is a plain INSERT of a chunk (`insert_new`); the careful way holds the rows
whose parents are missing (see `pending`) and upserts the rest (`merge_rows`); a whole file
is deduplicated first, last occurrence winning (`merge_staged`). The ids a load has merged
are tracked (`track_ids`) once it goes the careful way, to notice an id the file repeats.

All statements run in the caller's transaction. A per-tenant advisory lock (`lock_tenant`)
serialises the merges of one tenant (different tenants merge in parallel), so concurrent
uploads can neither deadlock on each other's rows nor lose an update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.changes import note_changes
from apps.ingestions.engine.keys import Locked, ParentLocks, remember
from apps.ingestions.engine.pending import hold_missing, supersede_held
from apps.ingestions.engine.records import RECORDS, RecordSpec
from apps.ingestions.engine.results import ParentsComing
from apps.ingestions.engine.statements import (
    any_stored,
    columns_sql,
    insert_sql,
    select_sql,
    upsert_sql,
)

# Temp tables are always named with pg_temp: an unqualified DROP could hit a real table.
_DEDUP = sql.Identifier("pg_temp", "_dedup")


@dataclass(frozen=True, slots=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int
    pending: int
    duplicates: int
    superseded: tuple[tuple[str, int], ...]  # (upload id, rows) of older pending rows replaced


_TENANT_KEY = "hashtextextended('ingest:' || %s::text, 0)"  # the tenant's advisory lock


def lock_tenant(cursor: Cursor, tenant_id: str) -> None:
    """Take the tenant's merge lock until the end of the transaction."""
    cursor.execute(f"SELECT pg_advisory_xact_lock({_TENANT_KEY})", (tenant_id,))


def try_lock_tenant(cursor: Cursor, tenant_id: str, *, wait: float = 0) -> bool:
    """Take the tenant's merge lock until the end of the transaction, waiting at most
    `wait` seconds for another transaction to release it; False when it did not (the
    transaction is as it was)."""
    if wait <= 0:
        cursor.execute(f"SELECT pg_try_advisory_xact_lock({_TENANT_KEY})", (tenant_id,))
        return cursor.fetchone()[0]
    cursor.execute("SAVEPOINT ingest_lock_wait")
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{round(wait * 1000)}ms",))
    try:
        lock_tenant(cursor, tenant_id)
    except psycopg.errors.LockNotAvailable:
        cursor.execute("ROLLBACK TO SAVEPOINT ingest_lock_wait")  # the setting goes with it
        cursor.execute("RELEASE SAVEPOINT ingest_lock_wait")
        return False
    cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
    cursor.execute("RELEASE SAVEPOINT ingest_lock_wait")
    return True


def merge_staged(
    cursor: Cursor,
    spec: RecordSpec,
    stage: sql.Composable,
    *,
    tenant_id: str,
    upload_id: str,
    valid: int,
    now: datetime,
    parents: ParentLocks | None = None,
    held: ParentLocks | None = None,
    parents_coming: Callable[[], bool] | None = None,
) -> MergeCounts:
    """Merge all valid staged rows at once: the last occurrence of an id wins, rows whose
    parent is missing are held as pending, the rest are upserted into the final table."""
    key = sql.Identifier(spec.key)
    # Deduplicate only when needed: a hash aggregate is much cheaper than sorting and
    # rewriting every row, and most files repeat no id.
    cursor.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {stage} WHERE r_code IS NULL "
            "GROUP BY {key} HAVING count(*) > 1)"
        ).format(stage=stage, key=key)
    )
    if cursor.fetchone()[0]:
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_DEDUP))
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE {dedup} ON COMMIT DROP AS "
                "SELECT DISTINCT ON ({key}) line, {cols} FROM {stage} "
                "WHERE r_code IS NULL ORDER BY {key}, line DESC"
            ).format(dedup=_DEDUP, key=key, cols=columns_sql(spec.columns), stage=stage)
        )
        distinct = cursor.rowcount
        cursor.execute(sql.SQL("ANALYZE {}").format(_DEDUP))
        source: sql.Composable = _DEDUP
    else:
        distinct = valid
        source = sql.SQL("(SELECT line, {cols} FROM {stage} WHERE r_code IS NULL)").format(
            cols=columns_sql(spec.columns), stage=stage
        )
    counts = merge_rows(
        cursor,
        spec,
        source,
        rows=distinct,
        tenant_id=tenant_id,
        upload_id=upload_id,
        now=now,
        parents=parents,
        held=held,
        parents_coming=parents_coming,
    )
    return replace(counts, duplicates=valid - distinct)


def chunk_source(
    spec: RecordSpec, stage: sql.Composable, first_line: int, last_line: int
) -> sql.Composable:
    """The valid staged rows of one chunk (lines `first_line..last_line`) of `stage`."""
    return sql.SQL(
        "(SELECT line, {cols} FROM {stage} WHERE line BETWEEN {first} AND {last} "
        "AND r_code IS NULL)"
    ).format(
        cols=columns_sql(spec.columns),
        stage=stage,
        first=sql.Literal(first_line),
        last=sql.Literal(last_line),
    )


def ids_reset(cursor: Cursor) -> None:
    """Start an empty record of the ids seen in this upload (see `track_ids`)."""
    cursor.execute("DROP TABLE IF EXISTS pg_temp._seen_ids")
    cursor.execute("CREATE TEMP TABLE pg_temp._seen_ids (id uuid PRIMARY KEY) ON COMMIT DROP")


def track_ids(
    cursor: Cursor, spec: RecordSpec, source: sql.Composable, *, rows: int | None = None
) -> bool:
    """Record the ids of `source` (`rows` of them, when known) as seen in this upload;
    False when one of them was seen before."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO pg_temp._seen_ids SELECT d.{key} FROM {source} d ON CONFLICT DO NOTHING"
        ).format(key=sql.Identifier(spec.key), source=source)
    )
    return rows is None or cursor.rowcount == rows


def insert_new(
    cursor: Cursor,
    spec: RecordSpec,
    source: sql.Composable,
    *,
    rows: int,
    tenant_id: str,
    parents: ParentLocks | None = None,
    named: Locked | None = None,
    locked: Locked | None = None,
) -> int | None:
    """The fast way in: a plain INSERT of rows with new ids whose parents all exist.

    This relies on the composite foreign keys being checked at the end of each statement
    (they are not DEFERRABLE, migration 0002): a deferred check would fail at commit
    instead, after the chance to take the careful way had passed. With `parents`, the
    engine checks them itself for the whole chunk first (see `keys`): with `named`, the
    ids of the parents the parse collected, those not `locked` already in this
    transaction; `locked` then grows by those it locked, once the rows are in.

    Nothing else is checked beforehand: the primary key checks every row anyway. When a
    key fails (an id that exists, a parent that does not), the INSERT is rolled back to a
    savepoint and None returned, and the caller takes the careful way (`merge_rows`).
    """
    insert = insert_sql(spec, select_sql(spec, source))
    params = {"tenant": tenant_id}
    cursor.execute("SAVEPOINT ingest_chunk")
    fresh: Locked = {}
    try:
        if parents is None:
            cursor.execute(insert, params)
            inserted = cursor.rowcount
        elif named and locked is not None:
            found = parents.lock_ids(cursor, source, params, rows=rows, named=named, locked=locked)
            inserted = None if found is None else parents.insert(cursor, insert, params)
            fresh = found or {}
        elif parents.lock(cursor, source, params, rows=rows):
            inserted = parents.insert(cursor, insert, params)
        else:
            inserted = None
    except psycopg.errors.IntegrityError:
        inserted = None
    if inserted is None:
        cursor.execute("ROLLBACK TO SAVEPOINT ingest_chunk")
    else:
        note_changes(cursor, spec, source, tenant_id)
    cursor.execute("RELEASE SAVEPOINT ingest_chunk")
    if inserted is not None and locked is not None:
        remember(locked, fresh)
    return inserted


def merge_rows(
    cursor: Cursor,
    spec: RecordSpec,
    source: sql.Composable,
    *,
    rows: int,
    tenant_id: str,
    upload_id: str,
    now: datetime,
    parents: ParentLocks | None = None,
    held: ParentLocks | None = None,
    parents_coming: Callable[[], bool] | None = None,
    older_held: bool = True,
) -> MergeCounts:
    """Merge `rows` rows with distinct ids from `source` (a table or subquery with `line`
    and the spec's columns): hold the ones whose parent is missing, write the others.
    With `parents` (and `held`, for the pending table), new rows' parents are checked per
    chunk by the engine (see `keys`). Without `older_held` (the tenant held no rows of this
    type when the upload began), there is no older held row to replace.
    When rows were held and `parents_coming()` says their parents are on the way, raises
    `ParentsComing` (the caller rolls back)."""
    params = {"tenant": tenant_id, "upload": upload_id, "now": now}
    superseded: tuple[tuple[str, int], ...] = ()
    pending = 0
    # With `parents`, the parents that exist are locked first, so none of them can go away
    # between the hold below and the write; when all are there, nothing can be held.
    all_there = parents is not None and parents.lock(cursor, source, params, rows=rows)
    if spec.holds_pending and older_held:
        # An older upload's held row for the same id is replaced by this one.
        superseded = supersede_held(cursor, spec, source, params)
    if spec.holds_pending and not all_there:
        pending = hold_missing(cursor, spec, source, params, rows=rows, held=held)
        if pending and parents_coming is not None and parents_coming():
            raise ParentsComing
    if pending == rows:
        return MergeCounts(0, 0, 0, pending, 0, superseded)
    inserted, updated = _write(
        cursor,
        spec,
        source,
        params,
        rows=rows - pending,
        held=pending,
        parents=parents,
        all_there=all_there,
    )
    return MergeCounts(
        inserted=inserted,
        updated=updated,
        unchanged=rows - pending - inserted - updated,
        pending=pending,
        duplicates=0,
        superseded=superseded,
    )


def _write(
    cursor: Cursor,
    spec: RecordSpec,
    source: sql.Composable,
    params: dict,
    *,
    rows: int,
    held: int,
    parents: ParentLocks | None,
    all_there: bool,
) -> tuple[int, int]:
    """Write the `rows` rows of `source` that `merge_rows` did not hold (`held` of them)
    into the final table; (inserted, updated). `all_there`: `parents` locked every parent
    of `source` already."""
    # When every parent is there (the usual case) the row filter is left out: the foreign
    # keys check each row anyway, and the filter would cost a second lookup per row. Else
    # it keeps out exactly the rows just held, whatever arrived since.
    written = _written(spec, source, held)
    note_changes(cursor, spec, written, params["tenant"])
    select = select_sql(spec, written)
    # A plain INSERT when none of the ids exists yet (first loads, append-only feeds):
    # ON CONFLICT's speculative insertion costs ~20% more per row. Safe: the tenant's merge
    # lock keeps every other writer of these ids out until we commit.
    if any_stored(cursor, spec, source, params["tenant"]):
        cursor.execute(
            sql.SQL(
                "WITH ins AS ({upsert}) SELECT count(*) FILTER (WHERE inserted), "
                "count(*) FILTER (WHERE NOT inserted) FROM ins"
            ).format(upsert=upsert_sql(spec, select)),
            params,
        )
        inserted, updated = cursor.fetchone()
        return inserted, updated
    if parents is not None and (all_there or parents.lock(cursor, written, params, rows=rows)):
        return parents.insert(cursor, insert_sql(spec, select), params), 0
    cursor.execute(insert_sql(spec, select), params)  # PostgreSQL checks each row
    return cursor.rowcount, 0


def _written(spec: RecordSpec, source: sql.Composable, pending: int) -> sql.Composable:
    """The rows of `source` that `merge_rows` writes: all, or with `pending`, those it did
    not just hold. Not "those whose parents exist": a parent committed since the hold
    would then let a held row in as well, unlocked, and counted twice."""
    if not pending:
        return source
    return sql.SQL(
        "(SELECT * FROM {source} d WHERE NOT EXISTS (SELECT 1 FROM {pending} h "
        "WHERE h.tenant_id = %(tenant)s AND h.{key} = d.{key}))"
    ).format(
        source=source, pending=sql.Identifier(spec.pending_table), key=sql.Identifier(spec.key)
    )


def refresh_statistics(cursor: Cursor, *, record_type: str, inserted: int, tenant_id=None) -> bool:
    """ANALYZE a final table that has just grown by a good share, or (with `tenant_id`)
    whose planner takes the tenant for nearly empty (under a tenth of the rows it just
    got), so the next merge plans with true sizes (autovacuum may not get there before the
    next upload arrives, and never for a tenant that is new to a table already large: its
    first loads add less than a tenth, and until then the planner takes the tenant for
    empty).

    Only nearly empty: a tenant sending live records grows by a merge's few thousand rows
    at a time, and the estimate for a tenant small next to the others can stay below
    that. Compared with the rows just inserted, a tenant streaming into 14 million
    customers had the table analyzed three times in 20 s, 0.6 s of CPU each (live merges
    now leave the tenant out: `services/record_merge.py`).

    Run it after the upload's transaction commits: ANALYZE holds a lock that would
    otherwise serialise other tenants' merges on the same table.

    Only the columns the engine's statements look rows up by (`statistics_columns`): the
    table's size and the tenant's share are what the plans need, and the other columns'
    statistics (a text column's sort under the collation) were most of the cost: 90 ms
    instead of 300 for 250,000 orders. A column list leaves the table's count of changes
    as it was, so autovacuum still analyzes the whole table in its own time.
    """
    spec = RECORDS[record_type]
    if inserted < 1000:
        return False
    cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (spec.table,))
    row = cursor.fetchone()
    known = max(row[0], 0) if row else 0
    if inserted < 0.1 * known and (
        tenant_id is None or not tenant_looks_empty(cursor, spec.table, tenant_id, rows=inserted)
    ):
        return False
    columns = sql.SQL(", ").join(map(sql.Identifier, statistics_columns(spec)))
    cursor.execute(sql.SQL("ANALYZE {} ({})").format(sql.Identifier(spec.table), columns))
    return True


def statistics_columns(spec: RecordSpec) -> tuple[str, ...]:
    """The columns of a final table that its rows are looked up by: the tenant, the key,
    the parents' keys."""
    return ("tenant_id", spec.key, *(parent.column for parent in spec.parents))


def tenant_looks_empty(cursor: Cursor, table: str, tenant_id, *, rows: int) -> bool:
    """Does the planner take the tenant for nearly empty in `table`: an estimate under a
    tenth of the `rows` it just got? Then its statistics are worth an ANALYZE."""
    return 10 * tenant_rows_estimate(cursor, table, tenant_id) < rows


def tenant_rows_estimate(cursor: Cursor, table: str, tenant_id) -> float:
    """How many rows the planner believes `table` holds for the tenant (EXPLAIN: no scan)."""
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE tenant_id = %s").format(
        sql.Identifier(table)
    )
    cursor.execute(query, (tenant_id,))
    plan = cursor.fetchone()[0]
    return float(plan[0]["Plan"]["Plan Rows"])
