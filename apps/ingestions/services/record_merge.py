"""Merging live records: a tenant's accepted batches, oldest first, a micro-batch per
transaction, through the engine (`load_parts`: each type's parts of the micro-batch loaded
as one, each part counted as if alone) under the tenant's lock.

Exactly once: a micro-batch's parts are loaded and its batches marked merged in one
transaction, so a killed worker merges nothing of it, and a second run (a redelivered or
duplicate message, the housekeeping's) finds it merged. Files and batches of a tenant
interleave under the same lock (`engine.lock_tenant`), the one file uploads take. A merge
waits for it at most `LIVE_MERGE_LOCK_WAIT` (another merge of the tenant is done by then),
then puts itself off instead of holding a worker while a file loads, so other tenants'
merges go on.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.ingestions import engine
from apps.ingestions.models import BatchState, MergeRequest, RecordBatch, Upload, UploadState
from apps.ingestions.services.changes import changes_wake
from apps.ingestions.services.events import batch_merged_events
from apps.ingestions.services.processing import uploads_adjust
from apps.ingestions.services.records import records_merge_enqueue
from apps.ingestions.services.storage import BlobReader

logger = logging.getLogger("apps.ingestions.services")


def records_merge(*, tenant_id) -> int:
    """Merge the tenant's accepted batches; returns how many. When the tenant's lock stays
    taken (a file loading), sends itself again in `LIVE_MERGE_RETRY_SECONDS` and returns."""
    # From here on, a batch accepted sends a merge of its own (`record_store` explains why
    # none is missed); those accepted before are read below. So one micro-batch is
    # enough, unless the backlog was more than one: batches arriving meanwhile wait for
    # the merge they send, `LIVE_MERGE_DELAY_SECONDS` later, and go in together then.
    MergeRequest.objects.filter(tenant_id=tenant_id).delete()
    merged = 0
    while True:
        done = _merge_some(tenant_id=str(tenant_id))
        if done is None:
            records_merge_enqueue(
                tenant_id=tenant_id, countdown=settings.LIVE_MERGE_RETRY_SECONDS, force=True
            )
            return merged
        batches, more = done
        merged += batches
        if not more:
            return merged


_MAX_BATCHES = 5000  # in one micro-batch
# The tenant's merged total, in the merge's transaction (see `record_store`).
_MERGED = (
    "INSERT INTO record_backlog_merged AS m (tenant_id, records) VALUES (%s, %s) "
    "ON CONFLICT (tenant_id) DO UPDATE SET records = m.records + excluded.records"
)
# The parts of the picked batches, looked up batch by batch in `batch_id`'s index, whatever
# the statistics say: without any (a server with autovacuum off, or a table not analyzed
# yet), PostgreSQL guesses that a list of ids matches a good share of the table and reads
# all of `uploads`, every live part ever stored, on every merge. `OFFSET 0` keeps the
# planner from turning the per-batch lookup back into one join. By batch alone, then the
# state: with the state in the query the planner may scan every received upload's index
# entries (stale statistics, dead rows).
_PARTS = """
SELECT u.id, u.record_type, u.batch_id, u.body, u.blob_id, u.state
FROM unnest(%s::bigint[]) AS b(id)
CROSS JOIN LATERAL (SELECT * FROM uploads WHERE batch_id = b.id OFFSET 0) AS u
ORDER BY u.batch_id
"""


def _merge_some(*, tenant_id: str) -> tuple[int, bool] | None:
    """One micro-batch: the oldest accepted batches up to `LIVE_MERGE_RECORDS` records (at
    least one batch), loaded type by type in dependency order, each type's parts in the
    order accepted (a later row wins for the same id), and marked merged, all in one
    transaction. Returns how many batches it merged and whether it left accepted ones for
    the next; None when the tenant's lock is taken."""
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            if not engine.try_lock_tenant(cursor, tenant_id, wait=settings.LIVE_MERGE_LOCK_WAIT):
                return None
        picked, records = [], 0
        unmerged = RecordBatch.objects.filter(tenant_id=tenant_id, state=BatchState.ACCEPTED)
        oldest = list(unmerged.order_by("id").values_list("id", "accepted")[:_MAX_BATCHES])
        for batch_id, accepted in oldest:
            if picked and records + accepted > settings.LIVE_MERGE_RECORDS:
                break
            picked.append(batch_id)
            records += accepted
        more = len(picked) < len(oldest) or len(oldest) == _MAX_BATCHES
        if not picked:
            return 0, False
        parts = Upload.objects.raw(_PARTS, [picked])
        grown = _load(tenant_id, [p for p in parts if p.state == UploadState.RECEIVED])
        changes_wake(tenant_id=tenant_id)
        now = timezone.now()
        RecordBatch.objects.filter(id__in=picked).update(
            state=BatchState.MERGED, merged_at=now, updated_at=now
        )
        with connection.cursor() as cursor:
            cursor.execute(_MERGED, [tenant_id, records])
        batch_merged_events(tenant_id=tenant_id, batch_ids=picked)
    logger.info("record batches merged", extra={"batches": len(picked), "records": records})
    # By the table's growth only, not the tenant's (as a file's load does): a merge adds a
    # few thousand rows, and a tenant new to a large table had the whole table analyzed
    # at its first merges (twice in 30 s, 0.6 s of CPU each on 14 million customers),
    # while its records kept arriving; the key checks do not depend on the statistics.
    with connection.cursor() as cursor:
        for record_type, inserted in grown.items():
            engine.refresh_statistics(cursor.cursor, record_type=record_type, inserted=inserted)
    return len(picked), more


def _load(tenant_id: str, parts: list[Upload]) -> dict[str, int]:
    """Load the parts, a type at a time in dependency order, and write their counts; the
    rows inserted per type."""
    grown: dict[str, int] = {}
    finished: list[tuple[Upload, engine.LoadResult]] = []
    for record_type in engine.RECORD_ORDER:
        of_type = [p for p in parts if p.record_type == record_type]
        if not of_type:
            continue
        with connection.connection.cursor() as cursor:
            results = engine.load_parts(
                cursor,
                tenant_id=tenant_id,
                record_type=record_type,
                parts=[engine.Part(str(p.id), _bytes(p)) for p in of_type],
                now=timezone.now(),
                max_line_bytes=settings.INGEST_MAX_LINE_BYTES,
                setwise_key_checks=settings.INGEST_SETWISE_KEY_CHECKS,
            )
        finished += zip(of_type, results, strict=True)
        grown[record_type] = sum(r.rows.inserted for r in results)
    _finish(finished)
    for _, result in finished:
        uploads_adjust(result=result)
    return grown


def _bytes(part: Upload) -> bytes:
    """A part's bytes: in its row (`body`), or for a part stored before that, its blob."""
    if part.body is not None:
        return bytes(part.body)
    with BlobReader(part.blob_id, shared=True) as reader:
        return reader.read()


_FINISH = """
UPDATE uploads u SET state = v.state, rows_total = v.total, rows_inserted = v.inserted,
    rows_updated = v.updated, rows_unchanged = v.unchanged, rows_rejected = v.rejected,
    rows_pending = v.pending, rows_duplicates = v.duplicates, rows_done = v.total,
    bytes_done = v.bytes, finished_at = now(), updated_at = now()
FROM unnest(%s::uuid[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
    AS v(id, state, total, inserted, updated, unchanged, rejected, pending, duplicates, bytes)
WHERE u.id = v.id
"""


def _finish(finished: list[tuple[Upload, engine.LoadResult]]) -> None:
    """Every part's state and counts, in one statement."""
    columns: list[list] = [[] for _ in range(10)]
    for part, result in finished:
        rows = result.rows
        state = UploadState.COMPLETED_WITH_ERRORS if rows.rejected else UploadState.COMPLETED
        values = (
            str(part.id),
            str(state),
            rows.total,
            rows.inserted,
            rows.updated,
            rows.unchanged,
            rows.rejected,
            rows.pending,
            rows.duplicates,
            result.bytes_read,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    with connection.cursor() as cursor:
        cursor.execute(_FINISH, columns)


def records_merge_stuck(*, older_than: timedelta | None = None) -> int:
    """Send the merge again for every tenant with a batch accepted longer ago than
    `LIVE_MERGE_STUCK_SECONDS` and still unmerged (its message lost, its worker killed);
    returns how many tenants. Part of the re-queue job."""
    if older_than is None:
        older_than = timedelta(seconds=settings.LIVE_MERGE_STUCK_SECONDS)
    cutoff = timezone.now() - older_than
    tenants = (
        RecordBatch.objects.filter(state=BatchState.ACCEPTED, created_at__lt=cutoff)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    sent = 0
    for tenant_id in tenants:
        sent += records_merge_enqueue(tenant_id=tenant_id, force=True)
    return sent
