"""The pending hold: rows whose parents have not arrived wait in `pending_<type>` (for the
types with parents, `records.PENDING_TYPES`) until a later upload brings them.

Owns the hold's statements: whether a tenant holds rows of a type (`has_pending`), replacing
an older held row by a newer one with the same id (`supersede_held`), holding rows
(`hold_missing`), loading held rows once their parents are there (`resolve_pending`),
turning rows held too long into `orphan` rejects (`expire_pending`, `pending_tenants`) and
putting the line as sent back into those rejects (`restore_reject_lines`). All statements run
in the caller's transaction, under the tenant's merge lock (`merge.lock_tenant`).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from psycopg import Cursor, sql

from apps.ingestions.engine.changes import note_changes
from apps.ingestions.engine.checks import copy_text
from apps.ingestions.engine.keys import ParentLocks
from apps.ingestions.engine.parse import raw_text
from apps.ingestions.engine.reader import ByteStream, read_lines
from apps.ingestions.engine.records import PENDING_TYPES, RECORDS, RecordSpec, descendants
from apps.ingestions.engine.results import ResolvedCounts
from apps.ingestions.engine.statements import (
    any_stored,
    columns_sql,
    insert_sql,
    parents_exist_sql,
    prefixed_sql,
    select_sql,
    upsert_sql,
)


def has_pending(cursor: Cursor, spec: RecordSpec, *, tenant_id: str) -> bool:
    """Does the tenant hold rows of this type that an incoming row could replace?"""
    if not spec.holds_pending:
        return False
    cursor.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE tenant_id = %s)").format(
            sql.Identifier(spec.pending_table)
        ),
        (tenant_id,),
    )
    return cursor.fetchone()[0]


def supersede_held(
    cursor: Cursor, spec: RecordSpec, source: sql.Composable, params: dict
) -> tuple[tuple[str, int], ...]:
    """Delete the tenant's held rows that a row of `source` replaces (the same id, from an
    older upload); (upload id, rows) for each upload that lost some."""
    cursor.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM {pending} p USING {source} d "
            "WHERE p.tenant_id = %(tenant)s AND p.{key} = d.{key} RETURNING p.upload_id) "
            "SELECT upload_id::text, count(*) FROM gone GROUP BY upload_id"
        ).format(
            pending=sql.Identifier(spec.pending_table),
            source=source,
            key=sql.Identifier(spec.key),
        ),
        params,
    )
    return tuple((u, n) for u, n in cursor.fetchall())


def hold_missing(
    cursor: Cursor,
    spec: RecordSpec,
    source: sql.Composable,
    params: dict,
    *,
    rows: int,
    held: ParentLocks | None,
) -> int:
    """Hold the rows of `source` (`rows` of them) with a parent missing; how many were.
    `params`: the tenant, the upload and the time held (`now`). With `held`, the pending
    table's own keys are checked by the engine (see `keys`)."""
    hold = hold_sql(spec, source, upload=sql.SQL("%(upload)s"), line=sql.SQL("d.line"))
    # the hold's own keys (its tenant, this upload) are one parent row each
    if held is not None and held.lock(cursor, source, params, rows=rows):
        return held.insert(cursor, hold, params)
    cursor.execute(hold, params)
    return cursor.rowcount


def hold_sql(
    spec: RecordSpec, source: sql.Composable, *, upload: sql.Composable, line: sql.Composable
) -> sql.Composable:
    """The INSERT that holds the rows of `source` (aliased `d`) with a parent missing, each
    under the upload and line given as expressions over `d`; `%(tenant)s` and `%(now)s`
    are its parameters."""
    return sql.SQL(
        "INSERT INTO {pending} (tenant_id, {cols}, upload_id, line, raw, held_at) "
        "SELECT %(tenant)s, {dcols}, {upload}, {line}, '', %(now)s "
        "FROM {source} d WHERE NOT ({exists})"
    ).format(
        pending=sql.Identifier(spec.pending_table),
        cols=columns_sql(spec.columns),
        dcols=prefixed_sql("d", spec.columns),
        upload=upload,
        line=line,
        source=source,
        exists=parents_exist_sql(spec, "d"),
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
    it (its `descendants`) are looked at (its own held rows may have seen their parents
    arrive from another writer meanwhile). With `setwise_key_checks`, rows whose ids are all
    new go in with a plain INSERT, their parents checked per statement by the engine where
    allowed (see `keys`).
    """
    resolved: list[ResolvedCounts] = []
    wanted = set(PENDING_TYPES) if arrived is None else {arrived, *descendants(arrived)}
    for spec in (RECORDS[name] for name in PENDING_TYPES if name in wanted):
        moved = _move_resolvable(cursor, spec, tenant_id)
        if moved:
            resolved += _load_moved(cursor, spec, moved, tenant_id, setwise_key_checks)
    return resolved


def _move_resolvable(cursor: Cursor, spec: RecordSpec, tenant_id: str) -> int:
    """Move the tenant's held rows of `spec` whose parents are all there into `pg_temp._moved`;
    how many. A temp table, not a CTE: joining two CTEs would give the planner no
    statistics (and a nested loop over both). None held at all (the usual case of a live
    merge), no temp table is made: the tenant's lock keeps other loads from holding rows
    meanwhile."""
    if not has_pending(cursor, spec, tenant_id=tenant_id):
        return 0
    pending = sql.Identifier(spec.pending_table)
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
        ).format(pending=pending, exists=parents_exist_sql(spec, "m")),
        {"tenant": tenant_id},
    )
    return cursor.rowcount


def _load_moved(
    cursor: Cursor, spec: RecordSpec, moved: int, tenant_id: str, setwise_key_checks: bool
) -> list[ResolvedCounts]:
    """Write the `moved` rows of `pg_temp._moved` into the final table; the counts per upload that
    held them."""
    cursor.execute("ANALYZE pg_temp._moved")
    source = sql.Identifier("pg_temp", "_moved")
    note_changes(cursor, spec, source, tenant_id)
    if _insert_all_new(cursor, spec, source, moved, tenant_id, setwise_key_checks):
        cursor.execute("SELECT upload_id::text, count(*) FROM pg_temp._moved GROUP BY upload_id")
        return [ResolvedCounts(u, spec.name, n, 0, 0) for u, n in cursor.fetchall()]
    key = sql.Identifier(spec.key)
    select = sql.SQL("SELECT tenant_id, {cols} FROM pg_temp._moved").format(
        cols=columns_sql(spec.columns)
    )
    cursor.execute(
        sql.SQL(
            "CREATE TEMP TABLE pg_temp._outcome ON COMMIT DROP AS "
            "SELECT NULL::uuid AS {key}, NULL::boolean AS inserted LIMIT 0"
        ).format(key=key)
    )
    cursor.execute(
        sql.SQL("WITH ins AS ({upsert}) INSERT INTO pg_temp._outcome SELECT * FROM ins").format(
            upsert=upsert_sql(spec, select)
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
    return [ResolvedCounts(u, spec.name, i, up, un) for u, i, up, un in cursor.fetchall()]


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
    if any_stored(cursor, spec, source, tenant_id):
        return False
    params = {"tenant": tenant_id}
    parents = ParentLocks.prepare(cursor, spec)
    if parents is None or not parents.lock(cursor, source, params, rows=rows):
        return False
    parents.insert(cursor, insert_sql(spec, select_sql(spec, source)), params)
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
    """Turn the tenant's rows held since before `older_than` into `orphan` rejects (each
    its row's one problem: their `errors` stay the column's default, empty)."""
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
