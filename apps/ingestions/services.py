from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from apps.core.errors import ApplicationError, UnknownRecordTypeError, WrongRecordTypeError
from apps.core.logs import log_bind, log_reset
from apps.ingestions import engine
from apps.ingestions.engine.merge import (
    expire_pending,
    lock_tenant,
    pending_tenants,
    refresh_statistics,
    restore_reject_lines,
)
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.stage import staging_drop_stale
from apps.ingestions.models import Blob, Upload, UploadState
from apps.ingestions.storage import BlobReader, blob_store
from apps.tenants.models import Tenant

logger = logging.getLogger(__name__)

Opener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    size: int


def fingerprint(stream: BinaryIO) -> Fingerprint:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return Fingerprint(sha256=digest.hexdigest(), size=size)


def record_type_decide(*, filename: str, explicit: str | None, open_stream: Opener) -> str:
    if explicit and explicit not in RECORDS:
        raise UnknownRecordTypeError(
            f"Unknown type {explicit!r}; expected one of {', '.join(RECORDS)}."
        )
    with open_stream() as stream:
        found = engine.detect_record_type(filename=filename, explicit=explicit, stream=stream)
    if found is None:
        raise UnknownRecordTypeError(
            f"Cannot tell the record type of {filename!r}: name it customers_*, products_*, "
            "orders_* or order_items_*, or give the type explicitly."
        )
    return found


@dataclass(frozen=True)
class UploadOutcome:
    upload: Upload
    created: bool  # False: identical bytes were already received; `upload` is the original


def upload_ingest_path(
    *, tenant: Tenant, path: Path, record_type: str | None = None, strict: bool = False
) -> UploadOutcome:
    """Register a local file as an upload and process it synchronously."""

    def open_stream() -> BinaryIO:
        return path.open("rb")

    if not path.is_file():
        raise ApplicationError(f"No such file: {path}")
    record_type = record_type_decide(
        filename=path.name, explicit=record_type, open_stream=open_stream
    )
    with open_stream() as stream:
        print_ = fingerprint(stream)
    outcome = upload_register(
        tenant=tenant,
        record_type=record_type,
        filename=path.name,
        fingerprint=print_,
        strict=strict,
    )
    if outcome.created:
        with open_stream() as stream:
            upload_process(upload_id=outcome.upload.id, stream=stream)
        outcome.upload.refresh_from_db()
    return outcome


@transaction.atomic
def upload_register(
    *,
    tenant: Tenant,
    record_type: str,
    filename: str,
    fingerprint: Fingerprint,
    strict: bool,
    blob: Blob | None = None,
) -> UploadOutcome:
    """Create the upload, or return the earlier one when the same bytes were received.
    An upload with stored bytes is queued for a worker once this transaction commits."""
    upload, created = Upload.objects.get_or_create(
        tenant=tenant,
        record_type=record_type,
        sha256=fingerprint.sha256,
        defaults={
            "filename": filename[:255],
            "size_bytes": fingerprint.size,
            "strict": strict,
            "blob": blob,
            "state": UploadState.RECEIVED if blob is None else UploadState.QUEUED,
        },
    )
    log_bind(tenant_id=tenant.id, upload_id=upload.id)  # on the rest of this request's lines
    if created:
        logger.info(
            "upload %s",
            upload.state,
            extra={"state": upload.state, "type": record_type, "size_bytes": upload.size_bytes},
        )
    else:
        logger.info("upload already received: same bytes, the original upload answers")
    if created and blob is not None:
        transaction.on_commit(lambda: upload_enqueue(upload_id=upload.id))
    return UploadOutcome(upload=upload, created=created)


def upload_create(
    *,
    tenant: Tenant,
    stream: BinaryIO,
    filename: str,
    record_type: str | None = None,
    strict: bool = False,
    allowed_types: frozenset[str] | None = None,
) -> UploadOutcome:
    """Store an uploaded file and queue it; identical bytes already received for the same
    tenant and type give back the original upload, and nothing is processed again."""
    blob = blob_store(stream=stream)
    try:
        if blob.size_bytes == 0:
            raise ApplicationError("The file is empty.", code="empty_file")
        head = bytes(blob.head)
        record_type = record_type_decide(
            filename=filename, explicit=record_type, open_stream=lambda: io.BytesIO(head)
        )
        if allowed_types is not None and record_type not in allowed_types:
            raise WrongRecordTypeError(
                f"This endpoint takes {' and '.join(sorted(allowed_types))} files only, "
                f"not {record_type}."
            )
        outcome = upload_register(
            tenant=tenant,
            record_type=record_type,
            filename=filename,
            fingerprint=Fingerprint(sha256=blob.sha256, size=blob.size_bytes),
            strict=strict,
            blob=blob,
        )
    except BaseException:
        blob.delete()
        raise
    if not outcome.created:
        blob.delete()  # the original upload keeps its own copy
    return outcome


def upload_enqueue(*, upload_id) -> bool:
    """Hand the upload to a worker. With the broker down it stays queued, and the periodic
    re-queue job sends it once the broker is back."""
    from apps.ingestions.tasks import upload_process_task  # tasks import services

    try:
        upload_process_task.delay(str(upload_id))
    except Exception:  # kombu raises several kinds when the broker is unreachable
        logger.warning("broker unreachable: upload %s stays queued", upload_id, exc_info=True)
        return False
    return True


# A type waits for the tenant's unfinished uploads of the types it depends on.
_BLOCKED_BY = {
    "customers": (),
    "products": (),
    "orders": ("customers", "products"),
    "order_items": ("customers", "products", "orders"),
}
_ACTIVE = (UploadState.RECEIVED, UploadState.QUEUED, UploadState.WAITING, UploadState.PROCESSING)
# Uploads received at most this long after an upload count as sent with it: it waits for
# those of the types it depends on (and gives way to them, see `upload_run`), not for ones
# sent later, so a tenant that keeps sending parent files can never starve it.
_SENT_TOGETHER_SECONDS = 300


def _lock_schedule(tenant_id) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('schedule:' || %s::text, 0))",
            (str(tenant_id),),
        )


def _blockers(upload: Upload) -> tuple[list[str], list[str], datetime]:
    """What holds an upload back: an upload of the tenant of one of these types, in one of
    these states, received up to this moment (before it, or sent with it)."""
    return (
        list(_BLOCKED_BY[upload.record_type]),
        [str(state) for state in _ACTIVE],
        upload.created_at + timedelta(seconds=_SENT_TOGETHER_SECONDS),
    )


def _blocked(upload: Upload) -> bool:
    types, states, until = _blockers(upload)
    return (
        Upload.objects.filter(
            tenant_id=upload.tenant_id,
            record_type__in=types,
            state__in=states,
            created_at__lte=until,
        )
        .exclude(id=upload.id)
        .exists()
    )


def upload_run(*, upload_id) -> Upload | None:
    """What a worker does with a queued upload: wait (state `waiting`) while the tenant has
    unfinished uploads of the types it depends on, else process it from its stored bytes,
    then wake the tenant's uploads that were waiting for it. An upload that gave way to
    one of its parents' uploads that arrived meanwhile (see `upload_process`) is back in
    the queue: it is looked at again at once, and waits for them."""
    while True:
        with transaction.atomic():
            upload = Upload.objects.filter(id=upload_id).first()
            if upload is None or upload.is_terminal:
                return upload
            log_bind(tenant_id=upload.tenant_id, upload_id=upload.id)  # the task unbinds them
            _lock_schedule(upload.tenant_id)
            if _blocked(upload):
                if Upload.objects.filter(id=upload.id, state=UploadState.QUEUED).update(
                    state=UploadState.WAITING
                ):
                    logger.info(
                        "upload waiting for the tenant's earlier uploads",
                        extra={"state": UploadState.WAITING},
                    )
                return upload
        if upload.blob_id is None:
            _upload_fail(upload_id=upload.id, code="no_data", detail="The upload's bytes are gone.")
            break
        with BlobReader(upload.blob_id) as stream:
            processed = upload_process(upload_id=upload.id, stream=stream, give_way=True)
        if processed is None or processed.state != UploadState.QUEUED:
            break  # done (or another worker has it)
    upload_wake(tenant_id=upload.tenant_id)
    return Upload.objects.get(id=upload.id)


def upload_wake(*, tenant_id) -> int:
    """Queue the tenant's waiting uploads that nothing blocks any more."""
    woken = []
    with transaction.atomic():
        _lock_schedule(tenant_id)
        for upload in Upload.objects.filter(tenant_id=tenant_id, state=UploadState.WAITING):
            if not _blocked(upload):
                Upload.objects.filter(id=upload.id).update(state=UploadState.QUEUED)
                woken.append(upload.id)
                logger.info(
                    "upload queued: nothing blocks it any more",
                    extra={"upload_id": str(upload.id), "state": UploadState.QUEUED},
                )
        for upload_id in woken:
            transaction.on_commit(lambda upload_id=upload_id: upload_enqueue(upload_id=upload_id))
    return len(woken)


class _ProgressWriter:
    """Writes state and progress on its own connection, in short autocommit transactions,
    so they are visible while the upload's own long transaction is still open."""

    def __init__(self, upload_id):
        self.upload_id = upload_id
        self._conn = connections.create_connection("default")
        # the merge thread asks `parents_coming` on it too, one statement at a time
        self._conn.inc_thread_sharing()
        self._lock = threading.Lock()

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock, self._conn.cursor() as cursor:
            cursor.execute(sql, params)

    def parents_coming(self, upload: Upload) -> bool:
        """Has an upload of a type this one depends on arrived for the tenant since this
        one started (it would have waited for it otherwise), not finished yet, and been
        sent with this one (received at most `_SENT_TOGETHER_SECONDS` after it)? Uploads sent
        later do not count: an upload gives way a bounded number of times, and is never
        starved by a tenant that keeps sending parents."""
        types, states, until = _blockers(upload)  # `_blocked`, on this connection
        with self._lock, self._conn.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM uploads WHERE tenant_id = %s "
                "AND record_type = ANY(%s) AND state = ANY(%s) AND created_at <= %s "
                "AND id <> %s)",
                (upload.tenant_id, types, states, until, upload.id),
            )
            return cursor.fetchone()[0]

    def start(self) -> None:
        self._write(
            "UPDATE uploads SET state = %s, started_at = now(), updated_at = now(), "
            "bytes_done = 0, rows_done = 0 WHERE id = %s",
            (UploadState.PROCESSING, self.upload_id),
        )

    def __call__(self, bytes_done: int, rows_done: int) -> None:
        self._write(
            "UPDATE uploads SET bytes_done = %s, rows_done = %s, updated_at = now() WHERE id = %s",
            (bytes_done, rows_done, self.upload_id),
        )

    def close(self) -> None:
        self._conn.close()


def _upload_try_lock(upload_id) -> bool:
    """Only one process runs an upload at a time: a transaction-scoped advisory lock (not a
    row lock, so progress can still be written to the row from another connection)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('upload:' || %s::text, 0))",
            (str(upload_id),),
        )
        return cursor.fetchone()[0]


def upload_process(*, upload_id, stream: BinaryIO, give_way: bool = False) -> Upload | None:
    """Run the engine for one upload. A second run is harmless: a finished upload is left
    alone, one in progress elsewhere is skipped, and stage, merge and the state change
    commit together or not at all. With `give_way` (a worker's run from stored bytes, which
    can run again), an upload about to hold rows for parents whose upload was sent with it
    is rolled back and put back in the queue instead (see `upload_run`)."""
    log_token = log_bind(upload_id=upload_id)
    progress = _ProgressWriter(upload_id)
    try:
        with transaction.atomic():
            if not _upload_try_lock(upload_id):
                return None
            upload = Upload.objects.filter(id=upload_id).first()
            if upload is None or upload.is_terminal:
                return upload
            log_bind(tenant_id=upload.tenant_id)
            progress.start()
            started = time.monotonic()
            logger.info(
                "upload started",
                extra={
                    "state": UploadState.PROCESSING,
                    "type": upload.record_type,
                    "size_bytes": upload.size_bytes,
                },
            )
            with connection.connection.cursor() as cursor:  # the psycopg connection, in our txn
                result = engine.load_upload(
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
                    parents_coming=(
                        functools.partial(progress.parents_coming, upload) if give_way else None
                    ),
                )
            state = _upload_finish(upload=upload, result=result)
        # The tenant's next upload need not wait for the statistics refresh below.
        upload_wake(tenant_id=upload.tenant_id)
        seconds = time.monotonic() - started
        logger.info(
            "upload %s",
            state,
            extra={
                "state": state,
                "rows": asdict(result.rows),
                "duration_s": round(seconds, 3),
                "rows_per_second": round(result.rows.total / seconds, 1) if seconds else None,
            },
        )
        grown = {upload.record_type: result.rows.inserted}
        for resolved in result.resolved:
            grown[resolved.record_type] = grown.get(resolved.record_type, 0) + resolved.inserted
        with connection.cursor() as cursor:
            for record_type, inserted in grown.items():
                refresh_statistics(cursor.cursor, record_type=record_type, inserted=inserted)
    except engine.ParentsComing:
        # Rolled back: back in the queue as it was, where it waits for those parents
        # (`upload_run`); unless another worker has taken it meanwhile.
        with transaction.atomic():
            if _upload_try_lock(upload_id):
                Upload.objects.filter(id=upload_id, state=UploadState.PROCESSING).update(
                    state=UploadState.QUEUED,
                    started_at=None,
                    bytes_done=0,
                    rows_done=0,
                    updated_at=timezone.now(),
                )
        logger.info(
            "upload put back: an upload of the parents its rows need has arrived",
            extra={"state": UploadState.QUEUED},
        )
    except engine.FileError as exc:
        logger.warning("upload %s failed: %s", upload_id, exc.detail)
        _upload_fail(upload_id=upload_id, code=exc.code, detail=exc.detail)
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
    return Upload.objects.get(id=upload_id)


def _upload_fail(*, upload_id, code: str, detail: str) -> None:
    Upload.objects.filter(id=upload_id).update(
        state=UploadState.FAILED, error_code=code, error_detail=detail, finished_at=timezone.now()
    )
    logger.warning(
        "upload failed: %s",
        code,
        extra={"upload_id": str(upload_id), "state": UploadState.FAILED, "error_code": code},
    )


def _upload_finish(*, upload: Upload, result: engine.LoadResult) -> str:
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
        rows_done=rows.total,
        bytes_done=upload.size_bytes,
        finished_at=timezone.now(),
    )
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
    return state


def staging_purge() -> int:
    """Drop staging tables left by loads that failed or whose worker died (a re-run would
    drop its own, but a failed upload is not run again). Called by a periodic job."""
    with transaction.atomic(), connection.cursor() as cursor:
        dropped = staging_drop_stale(cursor.cursor)
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
    candidates = Upload.objects.filter(
        state__in=(UploadState.PROCESSING, UploadState.QUEUED), updated_at__lt=cutoff
    ).values_list("id", "state")
    sent = 0
    for upload_id, state in candidates:
        with transaction.atomic():
            if not _upload_try_lock(upload_id):
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
        sent = upload_requeue()
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


def _upload_lock_holder(upload_id) -> int | None:
    """The server process id of the session holding the upload's lock, if any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.pid FROM pg_locks l, "
            "(SELECT hashtextextended('upload:' || %s::text, 0) AS k) key "
            "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
            "AND l.classid = ((key.k >> 32) & 4294967295)::oid "
            "AND l.objid = (key.k & 4294967295)::oid",
            (str(upload_id),),
        )
        row = cursor.fetchone()
    return row[0] if row else None


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
        pid = _upload_lock_holder(upload_id)
        if pid is None:
            continue  # nobody holds it: a dead worker's upload, `upload_requeue` sends it
        marked = Upload.objects.filter(id=upload_id, state=UploadState.PROCESSING).update(
            state=UploadState.FAILED,
            error_code="hung",
            error_detail=f"no progress for {int(silent_for.total_seconds())} s: processing "
            "was stopped and nothing of this file was loaded",
            finished_at=timezone.now(),
        )
        if marked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_cancel_backend(%s)", (pid,))
            logger.error("upload %s made no progress: stopped (backend %s)", upload_id, pid)
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
        tenants = pending_tenants(cursor.cursor, older_than=cutoff)
    total = 0
    for tenant_id in tenants:
        with transaction.atomic(), connection.connection.cursor() as cursor:
            lock_tenant(cursor, tenant_id)
            for expired in expire_pending(cursor, tenant_id=tenant_id, older_than=cutoff):
                total += expired.rows
                Upload.objects.filter(id=expired.upload_id).update(
                    rows_pending=F("rows_pending") - expired.rows,
                    rows_rejected=F("rows_rejected") + expired.rows,
                    state=UploadState.COMPLETED_WITH_ERRORS,
                )
                _orphans_show_their_lines(upload_id=expired.upload_id)
    return total


def _orphans_show_their_lines(*, upload_id) -> None:
    """Give an upload's orphan rejects the lines as sent, from its stored bytes (a file
    ingested from a local path has none: its orphans keep the held values)."""
    blob_id = Upload.objects.filter(id=upload_id).values_list("blob_id", flat=True).first()
    if blob_id is None:
        return
    # on this connection: inside the expiry's transaction, and visible to it
    with BlobReader(blob_id, shared=True) as stream, connection.connection.cursor() as cursor:
        try:
            restore_reject_lines(
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
    this). Anything else is left as it is; returns whether the upload was queued."""
    from apps.ingestions.models import Reject

    with transaction.atomic():
        upload = Upload.objects.select_for_update().filter(id=upload_id).first()
        if upload is None or upload.state != UploadState.FAILED or upload.blob_id is None:
            return False
        Reject.objects.filter(upload_id=upload.id).delete()
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
        transaction.on_commit(lambda: upload_enqueue(upload_id=upload.id))
    logger.info("upload %s queued again after failing", upload_id)
    return True
