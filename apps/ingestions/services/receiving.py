"""Process while receiving: a big raw-body upload is queued at its first bytes, not its last.

`upload_receive` decides the type from the first bytes, creates the upload and its blob
(both unsealed: `sha256` empty) and queues it at once; then it stores each piece in a
transaction of its own, which the worker's reader follows (`BlobReader(follow=True)`). At
the last byte it seals both in one transaction. A worker's load reaches its end, and can
commit, only once the blob is sealed, so nothing is loaded before every byte is in.

When the seal finds the bytes were already received (the uploads' identity constraint), or
the request fails before its end (the client went away, the body is too large, the server
stopped it), the upload is cancelled (`upload_cancel`): its bytes are deleted, and the
upload with them unless a worker is running it; that worker's reader then finds its blob
gone, rolls its load back and removes the upload itself (`processing`). docs/engine.md
#process-while-receiving.
"""

from __future__ import annotations

import logging
import time
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, ConflictError, PayloadTooLargeError
from apps.core.logs import log_bind
from apps.ingestions.models import (
    TERMINAL_STATES,
    UNIQUE_CONTENT,
    Blob,
    Upload,
    UploadSource,
    UploadState,
)
from apps.ingestions.services.scheduling import (
    upload_enqueue,
    upload_lock_holder,
    upload_try_lock,
    upload_wake,
)
from apps.ingestions.services.storage import HEAD_BYTES, BodyPieces, blob_write_piece
from apps.ingestions.services.uploads import UploadOutcome, record_type_of
from apps.tenants.models import Tenant

# Every module that changes an upload's state logs on this one logger (docs/operations.md).
logger = logging.getLogger("apps.ingestions.services")

# A piece is written when it has 1 MiB, or this long after the one before with bytes
# pending, so a slow sender is seen alive (INGEST_RECEIVE_STALL_SECONDS); the body is read
# this much at a time for that.
FLUSH_SECONDS = 5.0
_READ_BYTES = 64 * 1024
_SEALS = 3  # tries at a seal whose identical original keeps failing as it is found


def upload_receive(
    *,
    tenant: Tenant,
    stream: BinaryIO,
    filename: str,
    size: int,
    record_type: str | None = None,
    strict: bool = False,
    dry_run: bool = False,
    allowed_types: frozenset[str] | None = None,
) -> UploadOutcome:
    """Receive a body of `size` bytes (its Content-Length) while a worker processes it.
    Returns the new upload (sealed), or the original when the same bytes were received
    before; like `upload_create`, which stores the whole body before queueing."""
    limit = settings.INGEST_MAX_UPLOAD_BYTES
    if size > limit:
        raise PayloadTooLargeError(f"The upload is larger than the limit of {limit} bytes.")
    head = _read_head(stream)
    if not head:
        raise ApplicationError("The file is empty.", code="empty_file")
    record_type = record_type_of(
        head, filename=filename, explicit=record_type, allowed_types=allowed_types
    )
    upload = _upload_open(
        tenant=tenant,
        record_type=record_type,
        filename=filename,
        size=size,
        head=head,
        strict=strict,
        dry_run=dry_run,
    )
    try:
        sha256, stored = _store(upload, head=head, stream=stream, limit=limit)
        original = upload_seal(upload, sha256=sha256, size=stored)
    except BaseException:
        upload_cancel(upload_id=upload.id, blob_id=upload.blob_id)
        raise
    if original is not None:  # the same bytes were received before
        upload_cancel(upload_id=upload.id, blob_id=upload.blob_id)
        log_bind(upload_id=original.id)
        logger.info("upload already received: same bytes, the original upload answers")
        return UploadOutcome(upload=original, created=False)
    return UploadOutcome(upload=upload_send_sealed(upload_id=upload.id), created=True)


def upload_send_sealed(*, upload_id) -> Upload:
    """After the seal: the upload sent to a worker again if one may be waiting for it (put
    back by a worker that would have waited for these bytes, not taken yet, or left by a
    worker that died); a second message for it is harmless. Returns it as it is now."""
    sealed = Upload.objects.get(id=upload_id)
    if sealed.state == UploadState.QUEUED or (
        sealed.state == UploadState.PROCESSING and upload_lock_holder(sealed.id) is None
    ):
        upload_enqueue(upload_id=upload_id)
    return sealed


def _read_head(stream: BinaryIO) -> bytes:
    """The body's first bytes, enough to tell its type (fewer only when it is shorter)."""
    head = b""
    while len(head) < HEAD_BYTES and (more := stream.read(HEAD_BYTES - len(head))):
        head += more
    return head


@transaction.atomic
def _upload_open(
    *,
    tenant: Tenant,
    record_type: str,
    filename: str,
    size: int,
    head: bytes,
    strict: bool,
    dry_run: bool,
) -> Upload:
    """The upload and its blob, unsealed, queued for a worker once this commits."""
    blob = Blob.objects.create(sha256="", size_bytes=0, head=head)
    return upload_open_unsealed(
        tenant=tenant,
        blob_id=blob.id,
        record_type=record_type,
        filename=filename,
        size=size,
        strict=strict,
        dry_run=dry_run,
    )


def upload_open_unsealed(
    *,
    tenant: Tenant,
    blob_id: int,
    record_type: str,
    filename: str,
    size: int,
    strict: bool,
    dry_run: bool,
) -> Upload:
    """An upload of the unsealed blob `blob_id` (`sha256` empty: the identity constraint does not
    apply to it yet), queued for a worker once the caller's transaction commits."""
    upload = Upload.objects.create(
        tenant=tenant,
        record_type=record_type,
        filename=filename[:255],
        sha256="",
        size_bytes=size,
        strict=strict,
        dry_run=dry_run,
        blob_id=blob_id,
        source=UploadSource.FILE,
        state=UploadState.QUEUED,
    )
    log_bind(tenant_id=tenant.id, upload_id=upload.id)  # on the rest of this request's lines
    logger.info(
        "upload queued while its bytes arrive",
        extra={
            "state": upload.state,
            "type": record_type,
            "size_bytes": size,
            "dry_run": dry_run,
        },
    )
    transaction.on_commit(lambda: upload_enqueue(upload_id=upload.id))
    return upload


def _store(upload: Upload, *, head: bytes, stream: BinaryIO, limit: int) -> tuple[str, int]:
    """Write the body into the blob, each piece committed on its own (the default
    connection is in autocommit here), at least every FLUSH_SECONDS while bytes come, and
    touch the upload's `updated_at` as often, so the housekeeping can tell a sender that
    died (`upload_stop_incomplete`); returns its sha256 and size."""
    pieces = BodyPieces(
        stream, limit=limit, first=head, read_bytes=_READ_BYTES, flush_seconds=FLUSH_SECONDS
    )
    touched = time.monotonic()
    for seq, piece in enumerate(pieces):
        _write_piece(upload.blob_id, seq, piece)
        if time.monotonic() - touched >= FLUSH_SECONDS:
            Upload.objects.filter(id=upload.id).update(updated_at=timezone.now())
            touched = time.monotonic()
    return pieces.sha256, pieces.size


def _write_piece(blob_id: int, seq: int, data: bytes) -> None:
    """One piece, committed; a 409 when the blob is gone (the upload was stopped)."""
    try:
        blob_write_piece(blob_id, seq, data)
    except IntegrityError as exc:  # the blob's foreign key: it was deleted
        raise _stopped() from exc


def _stopped() -> ConflictError:
    return ConflictError(
        "This upload was stopped before its last byte arrived (its bytes stopped arriving "
        "for too long): nothing of it was loaded; send it again.",
        code="upload_stopped",
    )


def upload_seal(upload: Upload, *, sha256: str, size: int) -> Upload | None:
    """Seal the upload and its blob in one transaction (in that order, as every other
    writer of both locks them); None, or the original upload when the same bytes were
    received before (nothing sealed then; a failed upload is no original: this one is its
    retry). An upload stopped meanwhile (its sender taken for dead, its bytes deleted) is a
    409: nothing of it loads."""
    attempts = 0
    while True:
        try:
            with transaction.atomic():
                sealed = Upload.objects.filter(id=upload.id, sha256="").update(
                    sha256=sha256, size_bytes=size, waits_for_bytes=False
                )
                if sealed:  # and its bytes still there (an upload failed on them keeps them)
                    sealed = Blob.objects.filter(id=upload.blob_id, sha256="").update(
                        sha256=sha256, size_bytes=size
                    )
                if not sealed:
                    raise _stopped()
            return None
        except IntegrityError as exc:
            attempts += 1
            if UNIQUE_CONTENT not in str(exc) or attempts == _SEALS:
                raise
        original = (
            Upload.objects.filter(
                tenant_id=upload.tenant_id,
                record_type=upload.record_type,
                sha256=sha256,
                source=UploadSource.FILE,
                dry_run=False,
            )
            .exclude(state=UploadState.FAILED)
            .first()
        )
        if original is not None:
            return original
        # the original failed since the seal found it: sealed again, this one is its retry


def upload_cancel(*, upload_id, blob_id: int) -> None:
    """An upload whose bytes will not all arrive, or were received before: its bytes go.
    With no worker running it, the upload goes with them; a worker running it finds them
    gone, rolls back and removes the upload itself. One that a worker already finished
    (failed on its first bytes, its event sent) stays, without its bytes."""
    removed = 0
    with transaction.atomic():
        if upload_try_lock(upload_id):
            unfinished = Upload.objects.filter(id=upload_id, sha256="").exclude(
                state__in=TERMINAL_STATES
            )
            tenant_id = unfinished.values_list("tenant_id", flat=True).first()
            removed, _ = unfinished.delete()
        Blob.objects.filter(id=blob_id, sha256="").delete()  # never a sealed one
    logger.info("upload cancelled while its bytes arrived", extra={"upload_id": str(upload_id)})
    if removed:  # uploads of the tenant that waited for it go on now, not at the next sweep
        upload_wake(tenant_id=tenant_id)
