"""Merge: set-based upsert of staged rows into the final tables, and the pending hold.

All statements run in the caller's transaction. A per-tenant advisory lock serialises the
merges of one tenant (different tenants merge in parallel), so concurrent uploads can
neither deadlock on each other's rows nor lose an update.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import BinaryIO

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.checks import copy_text
from apps.ingestions.engine.keys import ParentLocks
from apps.ingestions.engine.reader import ByteStream, read_lines
from apps.ingestions.engine.records import PENDING_TYPES, RECORDS, RecordSpec, descendants
from apps.ingestions.engine.results import ParentsComing, ResolvedCounts
from apps.ingestions.engine.stage import raw_text

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


def lock_tenant(cursor: Cursor, tenant_id: str) -> None:
    """Take the tenant's merge lock until the end of the transaction."""
    cursor.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('ingest:' || %s::text, 0))", (tenant_id,)
    )


def _ids(names) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _prefixed(alias: str, names) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def _parents_exist(spec: RecordSpec, alias: str) -> sql.Composable:
    """`EXISTS (parent) AND ...` for a row aliased `alias`; TRUE for a type without parents.

    `OFFSET 0` keeps each EXISTS a per-row primary-key probe: turned into a join, the
    planner may hash the tenant's whole parent table for every chunk, and a wrong row
    estimate then makes a load quadratic.
    """
    if not spec.parents:
        return sql.SQL("TRUE")
    return sql.SQL(" AND ").join(
        sql.SQL(
            "EXISTS (SELECT 1 FROM {table} p WHERE p.tenant_id = %(tenant)s AND p.{col} = {ref} "
            "OFFSET 0)"
        ).format(
            table=sql.Identifier(parent.table),
            col=sql.Identifier(parent.column),
            ref=sql.Identifier(alias, parent.column),
        )
        for parent in spec.parents
    )


def _select(
    spec: RecordSpec, source: sql.Composable, where: sql.Composable | None = None
) -> sql.Composable:
    """The tenant's rows of `source` (aliased `d`) in the final table's column order."""
    query = sql.SQL("SELECT %(tenant)s, {dcols} FROM {source} d").format(
        dcols=_prefixed("d", spec.columns), source=source
    )
    return query if where is None else sql.SQL("{} WHERE {}").format(query, where)


def _insert(spec: RecordSpec, select: sql.Composable) -> sql.Composable:
    return sql.SQL("INSERT INTO {final} (tenant_id, {cols}) {select}").format(
        final=sql.Identifier(spec.table), cols=_ids(spec.columns), select=select
    )


def _upsert(spec: RecordSpec, select: sql.Composable) -> sql.Composable:
    """INSERT ... ON CONFLICT DO UPDATE only when something differs; returns `inserted`."""
    data = [c for c in spec.columns if c != spec.key]
    return sql.SQL(
        "INSERT INTO {table} (tenant_id, {cols}) {select} "
        "ON CONFLICT (tenant_id, {key}) DO UPDATE SET ({data}) = ROW({excluded}) "
        "WHERE ({current}) IS DISTINCT FROM ({excluded}) "
        "RETURNING {key}, (xmax = 0) AS inserted"
    ).format(
        table=sql.Identifier(spec.table),
        cols=_ids(spec.columns),
        select=select,
        key=sql.Identifier(spec.key),
        data=_ids(data),
        excluded=_prefixed("excluded", data),
        current=_prefixed(spec.table, data),
    )


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
            ).format(dedup=_DEDUP, key=key, cols=_ids(spec.columns), stage=stage)
        )
        distinct = cursor.rowcount
        cursor.execute(sql.SQL("ANALYZE {}").format(_DEDUP))
        source: sql.Composable = _DEDUP
    else:
        distinct = valid
        source = sql.SQL("(SELECT line, {cols} FROM {stage} WHERE r_code IS NULL)").format(
            cols=_ids(spec.columns), stage=stage
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
        cols=_ids(spec.columns),
        stage=stage,
        first=sql.Literal(first_line),
        last=sql.Literal(last_line),
    )


def has_pending(cursor: Cursor, spec: RecordSpec, *, tenant_id: str) -> bool:
    """Does the tenant hold rows of this type that an incoming row could replace?"""
    if not spec.parents:
        return False
    cursor.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE tenant_id = %s)").format(
            sql.Identifier(spec.pending_table)
        ),
        (tenant_id,),
    )
    return cursor.fetchone()[0]


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
) -> int | None:
    """The fast way in: a plain INSERT of rows with new ids whose parents all exist.

    This relies on the composite foreign keys being checked at the end of each statement
    (they are not DEFERRABLE, migration 0002): a deferred check would fail at commit
    instead, after the chance to take the careful way had passed. With `parents`, the
    engine checks them itself for the whole chunk first (see `keys`).

    Nothing else is checked beforehand: the primary key checks every row anyway. When a
    key fails (an id that exists, a parent that does not), the INSERT is rolled back to a
    savepoint and None returned, and the caller takes the careful way (`merge_rows`).
    """
    insert = _insert(spec, _select(spec, source))
    params = {"tenant": tenant_id}
    cursor.execute("SAVEPOINT ingest_chunk")
    try:
        if parents is None:
            cursor.execute(insert, params)
            inserted = cursor.rowcount
        elif parents.lock(cursor, source, params, rows=rows):
            inserted = parents.insert(cursor, insert, params)
        else:
            inserted = None
    except psycopg.errors.IntegrityError:
        inserted = None
    if inserted is None:
        cursor.execute("ROLLBACK TO SAVEPOINT ingest_chunk")
    cursor.execute("RELEASE SAVEPOINT ingest_chunk")
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
    key = sql.Identifier(spec.key)
    superseded: tuple[tuple[str, int], ...] = ()
    pending = 0
    # With `parents`, the parents that exist are locked first, so none of them can go away
    # between the hold below and the write; when all are there, nothing can be held.
    all_there = parents is not None and parents.lock(cursor, source, params, rows=rows)
    if spec.parents and older_held:
        # An older upload's held row for the same id is replaced by this one.
        cursor.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {pending} p USING {source} d "
                "WHERE p.tenant_id = %(tenant)s AND p.{key} = d.{key} RETURNING p.upload_id) "
                "SELECT upload_id::text, count(*) FROM gone GROUP BY upload_id"
            ).format(pending=sql.Identifier(spec.pending_table), source=source, key=key),
            params,
        )
        superseded = tuple((u, n) for u, n in cursor.fetchall())
    if spec.parents and not all_there:
        hold = sql.SQL(
            "INSERT INTO {pending} (tenant_id, {cols}, upload_id, line, raw, held_at) "
            "SELECT %(tenant)s, {dcols}, %(upload)s, d.line, '', %(now)s "
            "FROM {source} d WHERE NOT ({exists})"
        ).format(
            pending=sql.Identifier(spec.pending_table),
            cols=_ids(spec.columns),
            dcols=_prefixed("d", spec.columns),
            source=source,
            exists=_parents_exist(spec, "d"),
        )
        # the hold's own keys (its tenant, this upload) are one parent row each
        if held is not None and held.lock(cursor, source, params, rows=rows):
            pending = held.insert(cursor, hold, params)
        else:
            cursor.execute(hold, params)
            pending = cursor.rowcount
        if pending and parents_coming is not None and parents_coming():
            raise ParentsComing
    if pending == rows:
        return MergeCounts(0, 0, 0, pending, 0, superseded)

    # When every parent is there (the usual case) the row filter is left out: the foreign
    # keys check each row anyway, and the filter would cost a second lookup per row. Else
    # it keeps out exactly the rows just held, whatever arrived since.
    written = _written(spec, source, pending)
    select = _select(spec, written)
    # A plain INSERT when none of the ids exists yet (first loads, append-only feeds):
    # ON CONFLICT's speculative insertion costs ~20% more per row. Safe: the tenant's merge
    # lock keeps every other writer of these ids out until we commit.
    if _any_stored(cursor, spec, source, tenant_id):
        cursor.execute(
            sql.SQL(
                "WITH ins AS ({upsert}) SELECT count(*) FILTER (WHERE inserted), "
                "count(*) FILTER (WHERE NOT inserted) FROM ins"
            ).format(upsert=_upsert(spec, select)),
            params,
        )
        inserted, updated = cursor.fetchone()
    elif parents is not None and (
        all_there or parents.lock(cursor, written, params, rows=rows - pending)
    ):
        inserted, updated = parents.insert(cursor, _insert(spec, select), params), 0
    else:  # PostgreSQL checks each row
        cursor.execute(_insert(spec, select), params)
        inserted, updated = cursor.rowcount, 0
    return MergeCounts(
        inserted=inserted,
        updated=updated,
        unchanged=rows - pending - inserted - updated,
        pending=pending,
        duplicates=0,
        superseded=superseded,
    )


def _any_stored(cursor: Cursor, spec: RecordSpec, source: sql.Composable, tenant_id: str) -> bool:
    """Is the id of any row of `source` in the tenant's final table already?"""
    cursor.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {source} d WHERE EXISTS (SELECT 1 FROM {final} f "
            "WHERE f.tenant_id = %(tenant)s AND f.{key} = d.{key} OFFSET 0))"
        ).format(source=source, final=sql.Identifier(spec.table), key=sql.Identifier(spec.key)),
        {"tenant": tenant_id},
    )
    return cursor.fetchone()[0]


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


def resolve_pending(
    cursor: Cursor,
    *,
    tenant_id: str,
    arrived: str | None = None,
    setwise_key_checks: bool = False,
) -> list[ResolvedCounts]:
    """Load every held row of the tenant whose parents have all arrived, in dependency order
    (`PENDING_TYPES`: orders before order_items, so items of a just-resolved order follow it
    at once).

    With `arrived` (the record type just loaded), only that type and the held types below
    it (its `descendants`, directly or through resolved rows) are looked at (its own held rows
    may have seen their parents arrive from another writer meanwhile). With
    `setwise_key_checks`, rows whose ids are all new go in with a plain INSERT, their
    parents checked per statement by the engine where allowed (see `keys`).
    """
    resolved: list[ResolvedCounts] = []
    wanted = set(PENDING_TYPES) if arrived is None else {arrived, *descendants(arrived)}
    for spec in (RECORDS[name] for name in PENDING_TYPES if name in wanted):
        pending = sql.Identifier(spec.pending_table)
        key = sql.Identifier(spec.key)
        # Move the resolvable rows out of the hold into temp tables first: joining two CTEs
        # would give the planner no statistics (and a nested loop over both).
        cursor.execute("DROP TABLE IF EXISTS pg_temp._moved, pg_temp._outcome")
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE pg_temp._moved ON COMMIT DROP AS SELECT * FROM {} LIMIT 0"
            ).format(pending)
        )
        cursor.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {pending} m WHERE m.tenant_id = %(tenant)s "
                "AND {exists} RETURNING m.*) INSERT INTO pg_temp._moved SELECT * FROM moved"
            ).format(pending=pending, exists=_parents_exist(spec, "m")),
            {"tenant": tenant_id},
        )
        moved = cursor.rowcount
        if moved == 0:
            continue
        cursor.execute("ANALYZE pg_temp._moved")
        source = sql.Identifier("pg_temp", "_moved")
        if _insert_all_new(cursor, spec, source, moved, tenant_id, setwise_key_checks):
            cursor.execute(
                "SELECT upload_id::text, count(*) FROM pg_temp._moved GROUP BY upload_id"
            )
            resolved += [ResolvedCounts(u, spec.name, n, 0, 0) for u, n in cursor.fetchall()]
            continue
        select = sql.SQL("SELECT tenant_id, {cols} FROM pg_temp._moved").format(
            cols=_ids(spec.columns)
        )
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE pg_temp._outcome ON COMMIT DROP AS "
                "SELECT NULL::uuid AS {key}, NULL::boolean AS inserted LIMIT 0"
            ).format(key=key)
        )
        cursor.execute(
            sql.SQL("WITH ins AS ({upsert}) INSERT INTO pg_temp._outcome SELECT * FROM ins").format(
                upsert=_upsert(spec, select)
            ),
            {"tenant": tenant_id},
        )
        cursor.execute("ANALYZE pg_temp._outcome")
        cursor.execute(
            sql.SQL(
                "SELECT m.upload_id::text, count(*) FILTER (WHERE o.inserted), "
                "count(*) FILTER (WHERE NOT o.inserted), count(*) FILTER (WHERE o.{key} IS NULL) "
                "FROM pg_temp._moved m LEFT JOIN pg_temp._outcome o ON o.{key} = m.{key} "
                "GROUP BY m.upload_id"
            ).format(key=key)
        )
        resolved += [ResolvedCounts(u, spec.name, i, up, un) for u, i, up, un in cursor.fetchall()]
    return resolved


def _insert_all_new(
    cursor: Cursor,
    spec: RecordSpec,
    source: sql.Composable,
    rows: int,
    tenant_id: str,
    setwise_key_checks: bool,
) -> bool:
    """Insert the `rows` rows of `source` with a plain INSERT when none of their ids is in
    the final table yet and the engine may check their parents itself; False (nothing
    done) otherwise, for the upsert to do it."""
    if not setwise_key_checks:
        return False
    if _any_stored(cursor, spec, source, tenant_id):
        return False
    params = {"tenant": tenant_id}
    parents = ParentLocks.prepare(cursor, spec)
    if parents is None or not parents.lock(cursor, source, params, rows=rows):
        return False
    parents.insert(cursor, _insert(spec, _select(spec, source)), params)
    return True


# A held row's values as JSON, for its orphan reject: made when it expires, not when it is
# held (most held rows never expire). Rows held by older versions carry it already.
_HELD_RAW = sql.SQL(
    "CASE WHEN g.raw <> '' THEN g.raw ELSE "
    "(to_jsonb(g) - 'tenant_id' - 'upload_id' - 'line' - 'raw' - 'held_at')::text END"
)


@dataclass(frozen=True, slots=True)
class Expired:
    upload_id: str
    rows: int


def expire_pending(cursor: Cursor, *, tenant_id: str, older_than: datetime) -> list[Expired]:
    """Turn the tenant's rows held since before `older_than` into `orphan` rejects."""
    expired: dict[str, int] = {}
    for spec in (RECORDS[name] for name in PENDING_TYPES):
        missing = sql.SQL(" ").join(
            sql.SQL(
                "WHEN NOT EXISTS (SELECT 1 FROM {t} p WHERE p.tenant_id = g.tenant_id "
                "AND p.{c} = g.{c}) THEN {name}"
            ).format(
                t=sql.Identifier(parent.table),
                c=sql.Identifier(parent.column),
                name=sql.Literal(parent.column),
            )
            for parent in spec.parents
        )
        cursor.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {pending} WHERE tenant_id = %(tenant)s "
                "AND held_at < %(cutoff)s RETURNING *), "
                "r AS (SELECT g.upload_id, g.line, {raw} AS raw, "
                "CASE {missing} ELSE '' END AS field, g.tenant_id FROM gone g), "
                "ins AS (INSERT INTO rejects (upload_id, line, field, code, message, raw) "
                "SELECT upload_id, line, field, 'orphan', "
                "'its parent (' || field || ') did not arrive within the retention window', raw "
                "FROM r RETURNING upload_id) "
                "SELECT upload_id::text, count(*) FROM ins GROUP BY upload_id"
            ).format(pending=sql.Identifier(spec.pending_table), missing=missing, raw=_HELD_RAW),
            {"tenant": tenant_id, "cutoff": older_than},
        )
        for upload_id, rows in cursor.fetchall():
            expired[upload_id] = expired.get(upload_id, 0) + rows
    return [Expired(u, n) for u, n in expired.items()]


def restore_reject_lines(
    cursor: Cursor,
    *,
    upload_id: str,
    code: str,
    stream: BinaryIO,
    max_line_bytes: int,
    max_decompressed_bytes: int,
    batch: int = 10_000,
) -> int:
    """Put the line as sent back into the `raw` of an upload's rejects with `code`, read
    again from the upload's bytes. A held row keeps only its staged values, so an `orphan`
    reject is first written with those re-serialized; this makes it show the physical line
    like every other reject. `stream` may share the cursor's connection: lines are looked
    up a batch at a time between the statements. Returns how many rejects were updated."""
    cursor.execute(
        "SELECT line FROM rejects WHERE upload_id = %s AND code = %s ORDER BY line",
        (upload_id, code),
    )
    wanted = array("q", (line for (line,) in cursor.fetchall()))
    if not wanted:
        return 0
    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ingest_reject_lines (line bigint PRIMARY KEY, raw text)"
    )
    cursor.execute("TRUNCATE pg_temp.ingest_reject_lines")
    source = ByteStream(stream, max_bytes=max_decompressed_bytes)
    lines = read_lines(source, max_line_bytes=max_line_bytes)
    targets = iter(wanted)
    target = next(targets)
    found: list[str] = []

    def flush() -> None:
        with cursor.copy("COPY pg_temp.ingest_reject_lines (line, raw) FROM STDIN") as copy:
            copy.write("".join(found))
        found.clear()

    for number, data, _too_long in lines:
        if number != target:
            continue
        found.append(f"{number}\t{copy_text(raw_text(data))}\n")
        target = next(targets, None)
        if target is None:
            break
        if len(found) >= batch:
            flush()
    if found:
        flush()
    cursor.execute(
        "UPDATE rejects r SET raw = t.raw FROM pg_temp.ingest_reject_lines t "
        "WHERE r.upload_id = %s AND r.code = %s AND r.line = t.line",
        (upload_id, code),
    )
    return cursor.rowcount


def pending_tenants(cursor: Cursor, *, older_than: datetime) -> list[str]:
    """Tenants holding rows since before `older_than`."""
    cursor.execute(
        sql.SQL(" UNION ").join(
            sql.SQL("SELECT tenant_id::text FROM {} WHERE held_at < %(c)s").format(
                sql.Identifier(RECORDS[name].pending_table)
            )
            for name in PENDING_TYPES
        ),
        {"c": older_than},
    )
    return [row[0] for row in cursor.fetchall()]


def refresh_statistics(cursor: Cursor, *, record_type: str, inserted: int) -> bool:
    """ANALYZE a final table that has just grown by a good share, so the next merge plans
    with true sizes (autovacuum may not get there before the next upload arrives).

    Run it after the upload's transaction commits: ANALYZE holds a lock that would
    otherwise serialise other tenants' merges on the same table.
    """
    spec = RECORDS[record_type]
    cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (spec.table,))
    row = cursor.fetchone()
    known = max(row[0], 0) if row else 0
    if inserted < 1000 or inserted < 0.1 * known:
        return False
    cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(spec.table)))
    return True
