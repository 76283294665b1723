"""Merging live records: a tenant's accepted batches, oldest first, a micro-batch per
transaction, through the engine's load (merge, keys, pending) under the tenant's lock.

Exactly once: a micro-batch's parts are loaded and its batches marked merged in one
transaction, so a killed worker merges nothing of it, and a second run (a redelivered or
duplicate message, the housekeeping's) finds it merged. Files and batches of a tenant
interleave under the same lock (`engine.lock_tenant`), the one file uploads take.
"""

from __future__ import annotations

import io
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.ingestions import engine
from apps.ingestions.models import BatchState, RecordBatch, Upload, UploadState
from apps.ingestions.services.processing import upload_finish
from apps.ingestions.services.records import records_merge_enqueue
from apps.ingestions.services.storage import BlobReader

logger = logging.getLogger("apps.ingestions.services")

_RANK = {name: rank for rank, name in enumerate(engine.RECORD_ORDER)}


def records_merge(*, tenant_id) -> int:
    """Merge the tenant's accepted batches until none is left; returns how many."""
    merged = 0
    while done := _merge_some(tenant_id=str(tenant_id)):
        merged += done
    return merged


def _merge_some(*, tenant_id: str) -> int:
    """One micro-batch: the oldest accepted batches up to `LIVE_MERGE_RECORDS` records (at
    least one batch), loaded type by type in dependency order, each type's parts in the
    order accepted (a later row wins for the same id), and marked merged, all in one
    transaction. Returns how many batches it merged."""
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            engine.lock_tenant(cursor, tenant_id)  # files of the tenant wait, and other merges
        picked, records = [], 0
        unmerged = RecordBatch.objects.filter(tenant_id=tenant_id, state=BatchState.ACCEPTED)
        for batch_id, accepted in unmerged.order_by("id").values_list("id", "accepted")[:1000]:
            if picked and records + accepted > settings.LIVE_MERGE_RECORDS:
                break
            picked.append(batch_id)
            records += accepted
        if not picked:
            return 0
        parts = Upload.objects.filter(batch_id__in=picked, state=UploadState.RECEIVED)
        grown: dict[str, int] = {}
        for part in sorted(parts, key=lambda p: (_RANK[p.record_type], p.batch_id)):
            result = _load(part)
            upload_finish(upload=part, result=result)
            grown[part.record_type] = grown.get(part.record_type, 0) + result.rows.inserted
        now = timezone.now()
        RecordBatch.objects.filter(id__in=picked).update(
            state=BatchState.MERGED, merged_at=now, updated_at=now
        )
    logger.info("record batches merged", extra={"batches": len(picked), "records": records})
    with connection.cursor() as cursor:
        for record_type, inserted in grown.items():
            engine.refresh_statistics(cursor.cursor, record_type=record_type, inserted=inserted)
    return len(picked)


def _load(part: Upload) -> engine.LoadResult:
    """Load one part from its stored bytes (read whole: a part is at most a batch) in the
    caller's transaction."""
    with BlobReader(part.blob_id, shared=True) as reader:
        data = reader.read()
    with connection.connection.cursor() as cursor:
        return engine.load_upload(
            cursor,
            tenant_id=str(part.tenant_id),
            upload_id=str(part.id),
            record_type=part.record_type,
            stream=io.BytesIO(data),
            now=timezone.now(),
            max_line_bytes=settings.INGEST_MAX_LINE_BYTES,
            max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
            setwise_key_checks=settings.INGEST_SETWISE_KEY_CHECKS,
        )


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
        records_merge_enqueue(tenant_id=tenant_id)
        sent += 1
    return sent
