"""Storing a checked live batch: one statement that checks the tenant's backlog and inserts
the batch and its parts.

A live batch's request is small and frequent, so its cost is mostly fixed: one statement
in autocommit (atomic and durable on its own) instead of a transaction of four round
trips and the ORM's building of each. What it writes is exactly what the models describe:
`tests/ingestions/test_records.py` reads every batch and part back through them.

The same statement says whether the tenant's merge is on its way, and makes sure that
merge sees this batch: it locks the merge's request (`FOR KEY SHARE`), which a merge
deletes when it begins, before it reads the batches to merge. Locked here, the delete
waits for this batch's commit, so the merge reads the batch; deleted first, the lock finds
no row (PostgreSQL locks the row's latest version, not the snapshot's) and the caller
sends a merge. The statement is prepared (`prepared_cursor`): planned once per
connection, not per batch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec
from psycopg.types.json import Jsonb

from apps.core.db import prepared_cursor
from apps.ingestions.models import RecordBatch

# The backlog is counted and the batch inserted in one statement: nothing is inserted when
# the backlog is at the limit. The backlog is the tenant's records accepted less those
# merged (`BacklogAccepted`, `BacklogMerged`): the accepted total is added to under its
# row's lock, so batches stored at once are counted one after the other and the limit
# holds exactly; the merged total is read as of the statement (a merge committing
# meanwhile is seen by the next batch). When refused, the backlog is read again, as it is
# now (`_BACKLOG`), for the answer. Every NOT NULL column of `uploads` is given (Django keeps
# its defaults in Python, not in the table). `{parts}` is where the parts come from: one
# row of plain values for a batch of one type (most batches), arrays unnested for several
# (psycopg scans every list it sends to choose its type: about a tenth of a single
# record's request).
_STORE = """
WITH merged AS (
    SELECT coalesce(
        (SELECT records FROM record_backlog_merged WHERE tenant_id = %(tenant)s), 0
    ) AS records
), counted AS (
    INSERT INTO record_backlog_accepted AS a (tenant_id, records)
    SELECT %(tenant)s, %(accepted)s WHERE %(limit)s > 0
    ON CONFLICT (tenant_id) DO UPDATE SET records = a.records + excluded.records
    WHERE a.records - (SELECT records FROM merged) < %(limit)s
    RETURNING 1
), batch AS (
    INSERT INTO record_batches (created_at, updated_at, tenant_id, record_type, state, records,
        rejected, accepted, rejects, warnings, rules, merged_at)
    SELECT now(), now(), %(tenant)s, %(type)s, %(state)s, %(records)s, %(rejected)s,
        %(accepted)s, %(rejects)s, %(warnings)s, %(rules)s, NULL
    FROM counted
    RETURNING id, created_at, merged_at
), parts AS (
    INSERT INTO uploads (created_at, updated_at, id, tenant_id, record_type, filename, state,
        strict, sha256, size_bytes, error_code, error_detail, rows_total, rows_inserted,
        rows_updated, rows_unchanged, rows_rejected, rows_pending, rows_duplicates,
        rows_warned, bytes_done, rows_done, source, batch_id, body, rules_version)
    SELECT b.created_at, b.created_at, p.id, %(tenant)s, p.type,
        'batch_' || b.id || '_' || p.type || '.ndjson', 'received', false, p.sha256, p.size,
        '', '', 0, 0, 0, 0, 0, 0, 0, p.warned, 0, 0, 'live', b.id, p.body, p.rules
    FROM batch b, {parts} AS p(id, type, sha256, size, body, warned, rules)
), pending AS (
    SELECT 1 FROM record_merge_requests
    WHERE tenant_id = %(tenant)s AND sent_at >= %(merge_fresh)s
    FOR KEY SHARE
)
SELECT b.id, b.created_at, b.merged_at, EXISTS (SELECT 1 FROM pending)
FROM merged LEFT JOIN batch b ON true
"""
_BACKLOG = (
    "SELECT a.records - coalesce(m.records, 0) FROM record_backlog_accepted a"
    " LEFT JOIN record_backlog_merged m USING (tenant_id) WHERE a.tenant_id = %s"
)
_PART_COLUMNS = (
    ("ids", "uuid"),
    ("types", "text"),
    ("sha256s", "text"),
    ("sizes", "bigint"),
    ("bodies", "bytea"),
    ("warned", "bigint"),
    ("versions", "int"),
)
_STORE_ONE = _STORE.format(
    parts="(VALUES ({}))".format(", ".join(f"%({n})s::{t}" for n, t in _PART_COLUMNS)),
)
_STORE_MANY = _STORE.format(
    parts="unnest({})".format(", ".join(f"%({n})s::{t}[]" for n, t in _PART_COLUMNS)),
)


def _jsonb(value) -> Jsonb:
    return Jsonb(value, dumps=msgspec.json.encode)


@dataclass(frozen=True)
class NewPart:
    record_type: str
    body: bytes
    sha256: str
    rules_version: int | None = None  # of the tenant's rules it was checked with
    warned: int = 0  # its rows accepted with warnings


@dataclass(frozen=True)
class Stored:
    refused_by: int | None  # the backlog that refused the batch; None when it was stored
    merge_pending: bool = False  # a merge is on its way and will see the batch


def batch_store(*, batch: RecordBatch, parts: list[NewPart], limit: int, merge_fresh) -> Stored:
    """Store `batch` (unsaved; its id and times are set here) and its parts unless the
    tenant's backlog is at `limit`, in one statement (its own transaction, unless the
    caller has one open); also says whether a merge sent at or after `merge_fresh` is on
    its way, and will see the batch."""
    columns = {
        "ids": [uuid.uuid4() for _ in parts],
        "types": [p.record_type for p in parts],
        "sha256s": [p.sha256 for p in parts],
        "sizes": [len(p.body) for p in parts],
        "bodies": [p.body for p in parts],
        "warned": [p.warned for p in parts],
        "versions": [p.rules_version for p in parts],
    }
    if len(parts) == 1:
        statement, columns = _STORE_ONE, {name: values[0] for name, values in columns.items()}
    else:
        statement = _STORE_MANY
    params = {
        "tenant": batch.tenant_id,
        "type": batch.record_type,
        "state": batch.state,
        "records": batch.records,
        "rejected": batch.rejected,
        "accepted": batch.accepted,
        "rejects": _jsonb(batch.rejects),
        "warnings": _jsonb(batch.warnings),
        "rules": _jsonb(batch.rules),
        "limit": limit,
        **columns,
        "merge_fresh": merge_fresh,
    }
    with prepared_cursor() as cursor:
        # results in binary: the same values, the timestamp read faster than its text
        cursor.execute(statement, params, prepare=True, binary=True)
        batch_id, created_at, merged_at, merge_pending = cursor.fetchone()
        if batch_id is None:
            cursor.execute(_BACKLOG, [batch.tenant_id])
            row = cursor.fetchone()  # none before the tenant's first batch (a limit of 0)
            return Stored(refused_by=row[0] if row else 0)
    batch.id, batch.merged_at = batch_id, merged_at
    batch.created_at = batch.updated_at = created_at
    batch._state.adding = False  # stored: a save() updates it
    return Stored(refused_by=None, merge_pending=merge_pending)
