"""Keeping uploads moving: re-queue and recover, stop hung ones, expire held rows, retry, purge.

The periodic jobs (`upload_recover`, `pending_expire`) and `upload_retry`, which a resumed
session asks for. Each is safe to run twice, or in two workers at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.ingestions import engine
from apps.ingestions.models import (
    TERMINAL_STATES,
    UNIQUE_CONTENT,
    Blob,
    Reject,
    Upload,
    UploadState,
)
from apps.ingestions.selectors import session_receiving_ids
from apps.ingestions.services.events import pending_expired_events, upload_event
from apps.ingestions.services.record_merge import records_merge_stuck
from apps.ingestions.services.scheduling import (
    upload_enqueue,
    upload_lock_holder,
    upload_try_lock,
    upload_wake,
)
from apps.ingestions.services.storage import BlobReader, incomplete_upload

# Every module that changes an upload's state logs on this one logger (docs/operations.md).
logger = logging.getLogger("apps.ingestions.services")


def staging_purge() -> int:
    """Drop staging tables left by loads that failed or whose worker died (a re-run would
    drop its own, but a failed upload is not run again). Called by a periodic job."""
    with transaction.atomic(), connection.cursor() as cursor:
        dropped = engine.staging_drop_stale(cursor.cursor)
    if dropped:
        logger.info("dropped %d staging table(s) of unfinished loads", len(dropped))
    return len(dropped)


def upload_requeue(*, stuck_after: timedelta | None = None) -> int:
    """Send again what no worker is running: uploads left `processing` by a worker that
    died (their per-upload lock is free), and `queued` ones whose message may never have
    reached the broker; wake `waiting` ones nothing blocks any more. A second delivery is
    harmless. Called by a periodic job."""
    if stuck_after is None:
        stuck_after = timedelta(seconds=settings.UPLOAD_STUCK_SECONDS)
    cutoff = timezone.now() - stuck_after
    candidates = (
        Upload.objects.filter(
            state__in=(UploadState.PROCESSING, UploadState.QUEUED), updated_at__lt=cutoff
        )
        # queued with its bytes still arriving: its seal sends it (process while receiving)
        .exclude(state=UploadState.QUEUED, sha256="")
        .values_list("id", "state")
    )
    sent = 0
    for upload_id, state in candidates:
        with transaction.atomic():
            if not upload_try_lock(upload_id):
                continue  # a worker is on it right now
            # still as it was seen: a run of this job in another worker that got here first
            # has touched `updated_at`, and the upload is not sent a second time
            updated = Upload.objects.filter(
                id=upload_id, state=state, updated_at__lt=cutoff
            ).update(state=UploadState.QUEUED, updated_at=timezone.now())
        if updated and upload_enqueue(upload_id=upload_id):
            logger.info("upload %s re-queued (was %s)", upload_id, state)
            sent += 1
    for tenant_id in (
        Upload.objects.filter(state=UploadState.WAITING)
        .values_list("tenant_id", flat=True)
        .distinct()
    ):
        sent += upload_wake(tenant_id=tenant_id)
    return sent


def upload_recover() -> int:
    """The re-queue job: stop hung uploads (`upload_stop_hung`), send again those no worker
    runs (`upload_requeue`), drop leftover staging tables (`staging_purge`); returns how many
    uploads were sent. Every worker sends it every `WORKER_HOUSEKEEPING_SECONDS` (beat, where
    it runs, every minute too): a run that finds another one going does nothing."""
    with _job_lock("upload_recover") as ours:
        if not ours:
            return 0
        upload_stop_hung()
        upload_stop_incomplete()
        sent = upload_requeue()
        records_merge_stuck()
        try:  # housekeeping: never in the way of the re-queueing above
            staging_purge()
        except Exception:
            logger.exception("dropping leftover staging tables failed")
    return sent


@contextlib.contextmanager
def _job_lock(name: str) -> Iterator[bool]:
    """Yield whether this process got the job's lock (a session-level advisory lock, gone
    with the connection if the process dies), and free it afterwards."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended('job:' || %s, 0))", (name,))
        ours = cursor.fetchone()[0]
    try:
        yield ours
    finally:
        if ours:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(hashtextextended('job:' || %s, 0))", (name,)
                    )
            except DatabaseError:  # the job's error is the one to see
                if not connection.in_atomic_block:
                    connection.close()  # and the lock goes with the session


def upload_stop_hung(*, silent_for: timedelta | None = None) -> int:
    """Stop uploads that a live worker holds but that made no progress for `silent_for`
    (progress is written every chunk, so a healthy upload is never silent that long): mark
    them failed (`hung`) and cancel their running statement. Called by a periodic job."""
    if silent_for is None:
        silent_for = timedelta(seconds=settings.UPLOAD_HUNG_SECONDS)
    cutoff = timezone.now() - silent_for
    stopped = 0
    for upload_id in Upload.objects.filter(
        state=UploadState.PROCESSING, updated_at__lt=cutoff
    ).values_list("id", flat=True):
        pid = upload_lock_holder(upload_id)
        if pid is None:
            continue  # nobody holds it: a dead worker's upload, `upload_requeue` sends it
        with transaction.atomic():
            marked = Upload.objects.filter(id=upload_id, state=UploadState.PROCESSING).update(
                state=UploadState.FAILED,
                error_code="hung",
                error_detail=f"no progress for {int(silent_for.total_seconds())} s: processing "
                "was stopped and nothing of this file was loaded",
                finished_at=timezone.now(),
            )
            if marked:
                tenant = Upload.objects.values_list("tenant_id", flat=True).get(id=upload_id)
                upload_event(tenant_id=tenant, upload_id=upload_id, state=UploadState.FAILED)
        if marked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_cancel_backend(%s)", (pid,))
            logger.error("upload %s made no progress: stopped (backend %s)", upload_id, pid)
            stopped += 1
    return stopped


def upload_stop_incomplete(*, silent_for: timedelta | None = None) -> int:
    """Fail uploads whose bytes stopped arriving (docs/engine.md#process-while-receiving):
    still unsealed, their sender silent for INGEST_RECEIVE_STALL_SECONDS (it touches the
    upload as pieces come), and no worker on them (one following them gives up by itself).
    Their bytes are deleted: they will never be whole. One whose bytes a cancel deleted
    already is removed. Returns how many it failed. Called by a periodic job."""
    if silent_for is None:
        silent_for = timedelta(seconds=settings.INGEST_RECEIVE_STALL_SECONDS)
    cutoff = timezone.now() - silent_for
    unsealed = Upload.objects.filter(source="file", sha256="", updated_at__lt=cutoff).exclude(
        id__in=session_receiving_ids()  # a session's expiry ends those
    )
    stopped = 0
    for upload_id in unsealed.exclude(state__in=TERMINAL_STATES).values_list("id", flat=True):
        with transaction.atomic():
            if not upload_try_lock(upload_id):
                continue  # a worker is on it
            upload = unsealed.filter(id=upload_id).exclude(state__in=TERMINAL_STATES).first()
            if upload is None:
                continue  # sealed, cancelled or finished since
            if upload.blob_id is None:
                # cancelled while something else held its lock (its client got its answer
                # or went away): removed, as the cancel would have
                Upload.objects.filter(id=upload_id).delete()
                logger.info("upload %s cancelled while receiving: removed", upload_id)
                continue
            error = incomplete_upload(int(silent_for.total_seconds()))
            failed = unsealed.filter(id=upload_id).exclude(state__in=TERMINAL_STATES)
            if not failed.update(
                state=UploadState.FAILED,
                error_code=error.code,
                error_detail=error.detail,
                finished_at=timezone.now(),
            ):
                continue  # its worker failed it just now (and sent its event)
            Blob.objects.filter(id=upload.blob_id).delete()
            upload_event(tenant_id=upload.tenant_id, upload_id=upload_id, state=UploadState.FAILED)
        logger.warning("upload %s failed: its bytes stopped arriving", upload_id)
        stopped += 1
    return stopped


def pending_expire(*, now=None, retention: timedelta | None = None) -> int:
    """Turn rows held longer than the retention window into `orphan` rejects; returns how
    many. Called by a periodic job."""
    now = now or timezone.now()
    if retention is None:
        retention = timedelta(seconds=settings.INGEST_PENDING_RETENTION_SECONDS)
    cutoff = now - retention
    with connection.cursor() as cursor:
        tenants = engine.pending_tenants(cursor.cursor, older_than=cutoff)
    total = 0
    for tenant_id in tenants:
        with transaction.atomic(), connection.connection.cursor() as cursor:
            engine.lock_tenant(cursor, tenant_id)
            expired_uploads = []
            for expired in engine.expire_pending(cursor, tenant_id=tenant_id, older_than=cutoff):
                total += expired.rows
                Upload.objects.filter(id=expired.upload_id).update(
                    rows_pending=F("rows_pending") - expired.rows,
                    rows_rejected=F("rows_rejected") + expired.rows,
                    state=UploadState.COMPLETED_WITH_ERRORS,
                )
                _orphans_show_their_lines(upload_id=expired.upload_id)
                expired_uploads.append(expired.upload_id)
            pending_expired_events(tenant_id=tenant_id, upload_ids=expired_uploads)
    return total


def _orphans_show_their_lines(*, upload_id) -> None:
    """Give an upload's orphan rejects the lines as sent, from its stored bytes (a file
    ingested from a local path has none: its orphans keep the held values)."""
    stored = Upload.objects.filter(id=upload_id).values_list("blob_id", "body").first()
    if stored is None or stored == (None, None):
        return
    blob_id, body = stored
    # on this connection: inside the expiry's transaction, and visible to it
    source = BlobReader(blob_id, shared=True) if body is None else io.BytesIO(bytes(body))
    with source as stream, connection.connection.cursor() as cursor:
        try:
            engine.restore_reject_lines(
                cursor,
                upload_id=str(upload_id),
                code="orphan",
                stream=stream,
                max_line_bytes=settings.INGEST_MAX_LINE_BYTES,
                max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
            )
        except engine.FileError as exc:  # the limits changed since it loaded: keep the values
            logger.warning("orphans of upload %s keep their held values: %s", upload_id, exc)


def upload_retry(*, upload_id) -> bool:
    """Process a failed upload again from its stored bytes (a resumed session asks for
    this). Anything else is left as it is, and so is one whose bytes were sent again as an
    upload of their own since it failed (that one loads them); returns whether the upload
    was queued."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(id=upload_id).first()
        if upload is None or upload.state != UploadState.FAILED or upload.blob_id is None:
            return False
        try:
            with transaction.atomic():
                Upload.objects.filter(id=upload.id).update(
                    state=UploadState.QUEUED,
                    error_code="",
                    error_detail="",
                    rows_total=0,
                    rows_inserted=0,
                    rows_updated=0,
                    rows_unchanged=0,
                    rows_rejected=0,
                    rows_pending=0,
                    rows_duplicates=0,
                    bytes_done=0,
                    rows_done=0,
                    started_at=None,
                    finished_at=None,
                    updated_at=timezone.now(),
                )
        except IntegrityError as exc:  # no longer failed, it would be a second of those bytes
            if UNIQUE_CONTENT not in str(exc):
                raise
            return False
        Reject.objects.filter(upload_id=upload.id).delete()
        transaction.on_commit(lambda: upload_enqueue(upload_id=upload.id))
    logger.info("upload %s queued again after failing", upload_id)
    return True
