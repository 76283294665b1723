"""Storing a checked live batch: one statement that checks the tenant's backlog and inserts
the batch and its parts.

A live batch's request is small and frequent, so its cost is mostly fixed: one statement
in autocommit (atomic and durable on its own) instead of a transaction of four round
trips and the ORM's building of each. What it writes is exactly what the models describe:
`tests/ingestions/test_records.py` reads every batch and part back through them.

Outside a transaction, the same round trip also asks whether the tenant's merge is on its
way, once the batch is committed: PostgreSQL runs the statements of one simple query as
one implicit transaction, which a `COMMIT` between them ends, so the question that
follows reads a snapshot taken after the batch is committed (why that order matters:
`record_batch_accept`). An error before the `COMMIT` rolls back the batch and skips the
rest, leaving the session idle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import connection
from psycopg.types.json import Jsonb

from apps.ingestions.models import RecordBatch

# The backlog is read and the batch inserted in one statement: nothing is inserted when
# the backlog is at the limit. Every NOT NULL column of `uploads` is given (Django keeps
# its defaults in Python, not in the table).
_STORE = """
WITH backlog AS (
    SELECT coalesce(sum(accepted), 0) AS records FROM record_batches
    WHERE tenant_id = %(tenant)s AND state = 'accepted'
), batch AS (
    INSERT INTO record_batches (created_at, updated_at, tenant_id, record_type, state, records,
        rejected, accepted, rejects, warnings, rules, merged_at)
    SELECT now(), now(), %(tenant)s, %(type)s, %(state)s, %(records)s, %(rejected)s,
        %(accepted)s, %(rejects)s, %(warnings)s, %(rules)s, NULL
    FROM backlog WHERE backlog.records < %(limit)s
    RETURNING id, created_at, merged_at
), parts AS (
    INSERT INTO uploads (created_at, updated_at, id, tenant_id, record_type, filename, state,
        strict, sha256, size_bytes, error_code, error_detail, rows_total, rows_inserted,
        rows_updated, rows_unchanged, rows_rejected, rows_pending, rows_duplicates,
        rows_warned, bytes_done, rows_done, source, batch_id, body, rules_version)
    SELECT b.created_at, b.created_at, p.id, %(tenant)s, p.type,
        'batch_' || b.id || '_' || p.type || '.ndjson', 'received', false, p.sha256, p.size,
        '', '', 0, 0, 0, 0, 0, 0, 0, p.warned, 0, 0, 'live', b.id, p.body, p.rules
    FROM batch b, unnest(%(ids)s::uuid[], %(types)s::text[], %(sha256s)s::text[],
        %(sizes)s::bigint[], %(bodies)s::bytea[], %(warned)s::bigint[], %(versions)s::int[])
        AS p(id, type, sha256, size, body, warned, rules)
)
SELECT backlog.records, b.id, b.created_at, b.merged_at
FROM backlog LEFT JOIN batch b ON true
"""

# Whether the tenant's merge is on its way: sent at or after `fresh` (and not yet begun: a
# merge deletes its request when it starts).
MERGE_PENDING = "SELECT 1 FROM record_merge_requests WHERE tenant_id = %s AND sent_at >= %s"
_AFTER_COMMIT = "; COMMIT; " + MERGE_PENDING.replace("%s", "%(tenant)s", 1).replace(
    "%s", "%(merge_fresh)s", 1
)


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
    merge_pending: bool = False  # asked after the commit, and a merge is on its way


def batch_store(
    *, batch: RecordBatch, parts: list[NewPart], limit: int, merge_fresh=None
) -> Stored:
    """Store `batch` (unsaved; its id and times are set here) and its parts unless the
    tenant's backlog is at `limit`, in one statement (its own transaction, unless the
    caller has one open). With `merge_fresh` (a time) and no transaction open, also asks
    once the batch is committed whether a merge sent since then is on its way."""
    after_commit = merge_fresh is not None and not connection.in_atomic_block
    params = {
        "tenant": batch.tenant_id,
        "type": batch.record_type,
        "state": batch.state,
        "records": batch.records,
        "rejected": batch.rejected,
        "accepted": batch.accepted,
        "rejects": Jsonb(batch.rejects),
        "warnings": Jsonb(batch.warnings),
        "rules": Jsonb(batch.rules),
        "limit": limit,
        "ids": [uuid.uuid4() for _ in parts],
        "types": [p.record_type for p in parts],
        "sha256s": [p.sha256 for p in parts],
        "sizes": [len(p.body) for p in parts],
        "bodies": [p.body for p in parts],
        "warned": [p.warned for p in parts],
        "versions": [p.rules_version for p in parts],
        "merge_fresh": merge_fresh,
    }
    merge_pending = False
    with connection.cursor() as cursor:
        cursor.execute(_STORE + _AFTER_COMMIT if after_commit else _STORE, params)
        backlog, batch_id, created_at, merged_at = cursor.fetchone()
        if after_commit:
            cursor.nextset()  # the COMMIT
            cursor.nextset()
            merge_pending = cursor.fetchone() is not None
    if batch_id is None:
        return Stored(refused_by=backlog)
    batch.id, batch.merged_at = batch_id, merged_at
    batch.created_at = batch.updated_at = created_at
    batch._state.adding = False  # stored: a save() updates it
    return Stored(refused_by=None, merge_pending=merge_pending)
