"""Running an upload: a worker's run, the engine in one transaction, progress, finish or fail.

`upload_run` is what a worker does with a queued upload; `upload_process` runs the engine
over its bytes, and stage, merge and the state change commit together or not at all, while
state and progress are written on a second connection so they show as it runs.

A dry run (`Upload.dry_run`) goes the same way, but its load is rolled back but for its
report (`engine.dry_run_upload`): it keeps its own counts and rejects, moves no other
upload's counts, refreshes no statistics and wakes no waiting upload, since it brought no
data. It waits for and gives way to real uploads of its parents as a real run would, so
that it reports what that run would find (docs/api.md#dry-runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import BinaryIO

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.logs import log_bind, log_reset
from apps.ingestions import engine
from apps.ingestions.models import TERMINAL_STATES, Blob, Upload, UploadState
from apps.ingestions.selectors import session_receiving_ids
from apps.ingestions.services.changes import changes_wake
from apps.ingestions.services.events import upload_event
from apps.ingestions.services.rules import rules_current
from apps.ingestions.services.scheduling import (
    ParentsArriving,
    upload_admit,
    upload_give_way,
    upload_try_lock,
    upload_wake,
)
from apps.ingestions.services.storage import BlobGone, BlobReader, ReceiveBehind

# Every module that changes an upload's state logs on this one logger (docs/operations.md).
logger = logging.getLogger("apps.ingestions.services")


def upload_run(*, upload_id) -> Upload | None:
    """What a worker does with a queued upload: wait (state `waiting`) while the tenant has
    unfinished uploads of the types it depends on or another file being processed
    (`upload_admit`), else process it from its stored bytes, then wake the tenant's uploads
    that were waiting for it. An upload that gave way to one of its parents' uploads that
    arrived meanwhile is back in the queue: it is looked at again at once, and waits for
    them (docs/engine.md#scheduling)."""
    ran = False
    while True:
        upload, ready = upload_admit(upload_id=upload_id)
        if upload is None:
            return None
        if not ready and not ran:
            return upload  # waiting (or gone, or finished): nothing of it ran
        if not ready:
            break  # it gave way, and waits now: the wake below finds the tenant's next
        ran = True
        receiving = upload.sha256 == ""  # its bytes may still be arriving: follow them
        if upload.blob_id is None and receiving:
            _upload_discard(upload_id=upload.id)  # cancelled while receiving
            break
        if upload.blob_id is None:
            _upload_fail(upload_id=upload.id, code="no_data", detail="The upload's bytes are gone.")
            break
        with BlobReader(upload.blob_id, follow=receiving) as stream:
            processed = upload_process(upload_id=upload.id, stream=stream, give_way=True)
        if processed is None or processed.state != UploadState.QUEUED:
            break  # done (or another worker has it, or it was cancelled)
        if processed.sha256 == "":
            break  # its bytes still arrive: its seal sends it to a worker again
    # Also after a dry run: it holds no parents back, but it held the tenant's merge lock,
    # and uploads that waited for it to finish (`tenant_busy`) may run now.
    upload_wake(tenant_id=upload.tenant_id)
    return Upload.objects.filter(id=upload.id).first()


class _ProgressWriter:
    """Writes state and progress on its own connection, in short autocommit transactions,
    so they are visible while the upload's own long transaction is still open. The give-way
    probe (`ParentsArriving`) asks its question on this connection too, from the merge
    thread: `cursor()` takes the connection one statement at a time."""

    def __init__(self, upload_id):
        self.upload_id = upload_id
        self._conn = connections.create_connection("default")
        self._conn.inc_thread_sharing()  # the merge thread asks the probe on it
        self._lock = threading.Lock()

    @contextmanager
    def cursor(self) -> Iterator:
        with self._lock, self._conn.cursor() as cursor:
            yield cursor

    def start(self) -> None:
        with self.cursor() as cursor:
            cursor.execute(
                "UPDATE uploads SET state = %s, started_at = now(), updated_at = now(), "
                "bytes_done = 0, rows_done = 0 WHERE id = %s",
                (UploadState.PROCESSING, self.upload_id),
            )

    def __call__(self, bytes_done: int, rows_done: int) -> None:
        with self.cursor() as cursor:
            cursor.execute(
                "UPDATE uploads SET bytes_done = %s, rows_done = %s, updated_at = now() "
                "WHERE id = %s",
                (bytes_done, rows_done, self.upload_id),
            )

    def close(self) -> None:
        self._conn.close()


def upload_process(*, upload_id, stream: BinaryIO, give_way: bool = False) -> Upload | None:
    """Run the engine for one upload. A second run is harmless: a finished upload is left
    alone, one in progress elsewhere is skipped, and stage, merge and the state change
    commit together or not at all. With `give_way` (a worker's run from stored bytes, which
    can run again), an upload about to hold rows for parents whose upload was sent with it
    is rolled back and put back in the queue instead (`ParentsArriving`)."""
    log_token = log_bind(upload_id=upload_id)
    progress = _ProgressWriter(upload_id)
    try:
        with transaction.atomic():
            if not upload_try_lock(upload_id):
                return None
            upload = Upload.objects.filter(id=upload_id).first()
            if upload is None or upload.is_terminal:
                return upload
            log_bind(tenant_id=upload.tenant_id)
            progress.start()
            started = time.monotonic()
            rules = rules_current(tenant_id=upload.tenant_id, record_type=upload.record_type)
            rules = rules.get(upload.record_type)
            result = _load(upload, stream=stream, progress=progress, give_way=give_way, rules=rules)
            version = rules.version if rules is not None else None
            state = upload_finish(upload=upload, result=result, rules_version=version)
            changes_wake(tenant_id=upload.tenant_id)
        # The tenant's next upload need not wait for the statistics refresh below.
        upload_wake(tenant_id=upload.tenant_id)
        _report(upload, result, state=state, seconds=time.monotonic() - started)
    except engine.ParentsComing:
        upload_give_way(upload_id=upload_id)  # rolled back: nothing of it merged
    except BlobGone:
        _upload_discard(upload_id=upload_id)  # cancelled while receiving: rolled back
    except ReceiveBehind:
        upload_give_way(upload_id=upload_id, until_received=True)  # rolled back
    except engine.FileError as exc:
        _upload_unreadable(upload_id=upload_id, error=exc)
    except (OperationalError, InterfaceError, engine.StagingUnavailable):
        # The database went away, or refused the load's staging connection (too many
        # clients): the upload stays as it was, to be run again.
        raise
    except SoftTimeLimitExceeded:
        logger.error("upload %s stopped by the task time limit", upload_id)
        _upload_fail(
            upload_id=upload_id,
            code="timed_out",
            detail="processing took longer than the task time limit and was stopped; "
            "nothing of this file was loaded",
        )
    except Exception as exc:
        # A bug, not bad input: say so on the upload instead of leaving it "processing".
        logger.exception("upload %s failed unexpectedly", upload_id)
        _upload_fail(
            upload_id=upload_id,
            code="internal_error",
            detail=f"processing stopped on an unexpected error ({type(exc).__name__}); "
            "nothing of this file was loaded",
        )
    finally:
        progress.close()
        log_reset(log_token)
    return Upload.objects.filter(id=upload_id).first()


def _load(
    upload: Upload,
    *,
    stream: BinaryIO,
    progress: _ProgressWriter,
    give_way: bool,
    rules: engine.Rules | None,
) -> engine.LoadResult:
    """The engine's load, in the upload's transaction (the caller's); a dry run's is rolled
    back but for its report."""
    logger.info(
        "upload started",
        extra={
            "state": UploadState.PROCESSING,
            "type": upload.record_type,
            "size_bytes": upload.size_bytes,
            "dry_run": upload.dry_run,
        },
    )
    load = engine.dry_run_upload if upload.dry_run else engine.load_upload
    with connection.connection.cursor() as cursor:  # the psycopg connection, in our txn
        return load(
            cursor,
            tenant_id=str(upload.tenant_id),
            upload_id=str(upload.id),
            record_type=upload.record_type,
            stream=stream,
            strict=upload.strict,
            now=timezone.now(),
            max_line_bytes=settings.INGEST_MAX_LINE_BYTES,
            max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
            progress=progress,
            setwise_key_checks=settings.INGEST_SETWISE_KEY_CHECKS,
            parents_coming=ParentsArriving(upload, cursor=progress.cursor) if give_way else None,
            rules=rules,
        )


def _report(upload: Upload, result: engine.LoadResult, *, state: str, seconds: float) -> None:
    """Log the outcome, and refresh the statistics of the tables the load grew (a dry
    run's grew none)."""
    logger.info(
        "upload %s",
        state,
        extra={
            "state": state,
            "rows": asdict(result.rows),
            "duration_s": round(seconds, 3),
            "rows_per_second": round(result.rows.total / seconds, 1) if seconds else None,
            "dry_run": upload.dry_run,
        },
    )
    if upload.dry_run:
        return
    grown = {upload.record_type: result.rows.inserted}
    for resolved in result.resolved:
        grown[resolved.record_type] = grown.get(resolved.record_type, 0) + resolved.inserted
    with connection.cursor() as cursor:
        for record_type, inserted in grown.items():
            engine.refresh_statistics(
                cursor.cursor,
                record_type=record_type,
                inserted=inserted,
                tenant_id=upload.tenant_id,
            )


def _upload_unreadable(*, upload_id, error: engine.FileError) -> None:
    """Fail an upload whose bytes cannot be read to their end: invalid compression, too
    large once decompressed, or never whole (its sender died: its bytes go too)."""
    if error.code == "incomplete_upload":
        _upload_incomplete(upload_id=upload_id, error=error)
        return
    logger.warning("upload %s failed: %s", upload_id, error.detail)
    _upload_fail(upload_id=upload_id, code=error.code, detail=error.detail)


def _upload_incomplete(*, upload_id, error: engine.FileError) -> None:
    """Its reader waited longer than the stall limit for the next piece: failed, and its
    bytes deleted, in one transaction, while it is still unsealed and no session of a
    client that may resume it is open. Sealed meanwhile (the last byte came as the reader
    gave up), or receiving an open session's bytes (its sender may pause for as long as
    the session lasts): put back instead, to run again once its bytes are in."""
    with transaction.atomic():
        if not upload_try_lock(upload_id):
            return  # another worker has it
        unsealed = Upload.objects.filter(id=upload_id, sha256="").exclude(
            id__in=session_receiving_ids()
        )
        if not unsealed.exists():
            upload_give_way(upload_id=upload_id, until_received=True)
            return
        logger.warning("upload %s failed: %s", upload_id, error.detail)
        Blob.objects.filter(id__in=unsealed.values("blob_id")).delete()
        _upload_fail(upload_id=upload_id, code=error.code, detail=error.detail)


def _upload_discard(*, upload_id) -> None:
    """Remove an upload cancelled while its bytes arrived (`receiving.upload_cancel`
    deleted them while this worker ran it), once its load is rolled back. One sealed
    before its bytes went (which nothing should do) fails instead of staying `processing`."""
    with transaction.atomic():
        removed, _ = (
            Upload.objects.filter(id=upload_id, sha256="", blob=None)
            .exclude(state__in=TERMINAL_STATES)
            .delete()
        )
    if removed:
        logger.info("upload cancelled while its bytes arrived: its load rolled back")
    elif Upload.objects.filter(id=upload_id).exclude(state__in=TERMINAL_STATES).exists():
        _upload_fail(upload_id=upload_id, code="no_data", detail="The upload's bytes are gone.")


def _upload_fail(*, upload_id, code: str, detail: str) -> None:
    """Mark the upload failed and record its `upload.failed` event, in one transaction."""
    with transaction.atomic():
        tenant_id = Upload.objects.filter(id=upload_id).values_list("tenant_id", flat=True).first()
        if tenant_id is None:
            return
        Upload.objects.filter(id=upload_id).update(
            state=UploadState.FAILED,
            error_code=code,
            error_detail=detail,
            finished_at=timezone.now(),
        )
        upload_event(tenant_id=tenant_id, upload_id=upload_id, state=UploadState.FAILED)
    logger.warning(
        "upload failed: %s",
        code,
        extra={"upload_id": str(upload_id), "state": UploadState.FAILED, "error_code": code},
    )


def upload_finish(
    *, upload: Upload, result: engine.LoadResult, rules_version: int | None = None
) -> str:
    rows = result.rows
    if not result.merged:
        state = UploadState.FAILED
    elif rows.rejected:
        state = UploadState.COMPLETED_WITH_ERRORS
    else:
        state = UploadState.COMPLETED
    Upload.objects.filter(id=upload.id).update(
        state=state,
        error_code="strict_rejected" if not result.merged else "",
        error_detail=(
            f"strict upload refused: {rows.rejected} row(s) rejected, nothing loaded"
            if not result.merged
            else ""
        ),
        rows_total=rows.total,
        rows_inserted=rows.inserted,
        rows_updated=rows.updated,
        rows_unchanged=rows.unchanged,
        rows_rejected=rows.rejected,
        rows_pending=rows.pending,
        rows_duplicates=rows.duplicates,
        rows_warned=rows.warned,
        rules_version=rules_version,
        rows_done=rows.total,
        bytes_done=upload.size_bytes,
        finished_at=timezone.now(),
    )
    if not upload.dry_run:  # a dry run's moves of held rows were rolled back
        uploads_adjust(result=result)
    # in the upload's transaction: the event commits with the state it reports
    upload_event(tenant_id=upload.tenant_id, upload_id=upload.id, state=state)
    return state


def uploads_adjust(*, result: engine.LoadResult) -> None:
    """Move the rows of other uploads that a load changed: older held rows it replaced
    (pending to duplicates), held rows it let in (pending to inserted, updated or
    unchanged). Run after the loaded uploads' own counts are written."""
    for upload_id, count in result.superseded:
        Upload.objects.filter(id=upload_id).update(
            rows_pending=F("rows_pending") - count, rows_duplicates=F("rows_duplicates") + count
        )
    for resolved in result.resolved:
        moved = resolved.inserted + resolved.updated + resolved.unchanged
        Upload.objects.filter(id=resolved.upload_id).update(
            rows_pending=F("rows_pending") - moved,
            rows_inserted=F("rows_inserted") + resolved.inserted,
            rows_updated=F("rows_updated") + resolved.updated,
            rows_unchanged=F("rows_unchanged") + resolved.unchanged,
        )
