"""A session's chunks: each stored durably at its offset; the last one registers the upload.

A chunk without a checksum of its own is committed piece by piece (1 MiB at a time), so a
transfer cut in the middle of a chunk resumes from the last stored piece, not from the
start of the chunk. A chunk with a checksum (tus `Upload-Checksum`) is all or nothing.

A big file is processed while it arrives (docs/engine.md#process-while-receiving): its
upload is opened, unsealed, with the first piece, and a worker follows the pieces as they
commit; the last byte seals it instead of registering a new one.
"""

from __future__ import annotations

import hashlib
import io
import logging
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.core.errors import ApplicationError, UnknownRecordTypeError, UnprocessableError
from apps.ingestions.models import (
    TERMINAL_STATES,
    Blob,
    BlobChunk,
    SessionState,
    Upload,
    UploadSession,
    UploadState,
)
from apps.ingestions.services.chunk_checksums import ChecksumMismatchError, ChunkChecksum
from apps.ingestions.services.receiving import (
    upload_cancel,
    upload_open_unsealed,
    upload_seal,
    upload_send_sealed,
)
from apps.ingestions.services.sessions import (
    BYTES_FAULTS,
    SESSION_TOKEN,
    offset_conflict,
    session_expired_error,
    session_fail,
    session_lookup,
    session_not_found,
    session_try_lock,
    session_unlock,
)
from apps.ingestions.services.storage import CHUNK_BYTES, HEAD_BYTES, BlobReader, blob_write_piece
from apps.ingestions.services.uploads import (
    Fingerprint,
    UploadOutcome,
    record_type_decide,
    record_type_of,
    upload_register,
)
from apps.tenants.models import Tenant

logger = logging.getLogger("apps.ingestions.sessions")  # the name it always had


@dataclass(frozen=True)
class ChunkOutcome:
    session: UploadSession
    upload: UploadOutcome | None  # set when this chunk completed the file


def _check_writable(session: UploadSession) -> None:
    if session.state == SessionState.EXPIRED:
        raise session_expired_error()
    if session.state == SessionState.FAILED:
        raise offset_conflict(
            session, f"This upload session failed: {session.error_detail}", "session_failed"
        )
    if session.state == SessionState.COMPLETE:
        raise offset_conflict(
            session, "This upload session already has all its bytes.", "session_complete"
        )


def session_append(
    *,
    tenant: Tenant,
    token: str,
    offset: int,
    stream: BinaryIO,
    content_length: int | None,
    checksum: ChunkChecksum | None = None,
    keep_partial: bool = False,
) -> ChunkOutcome:
    """Store a chunk that starts at `offset`; the chunk that completes the file creates
    and queues its upload. A wrong offset is a 409 that tells the offset to send from.

    A chunk is stored whole or not at all, except with `keep_partial` (tus, whose clients
    ask the offset and resume from it): then the bytes that arrived before the chunk broke
    off are kept and counted (each piece as it is read), and never a byte that did not."""
    if not SESSION_TOKEN.fullmatch(token):
        raise session_not_found()
    if not session_try_lock(token):
        session = session_lookup(tenant=tenant, token=token)
        raise offset_conflict(
            session, "Another chunk of this session is being received; retry.", "session_busy"
        )
    try:
        session = session_lookup(tenant=tenant, token=token)
        _check_writable(session)
        if offset != session.offset:
            raise offset_conflict(
                session,
                f"This chunk starts at offset {offset}, but the session has {session.offset} "
                f"bytes: send from offset {session.offset}.",
                "offset_mismatch",
            )
        if content_length is not None and offset + content_length > session.size:
            raise ApplicationError(
                f"The chunk ends at byte {offset + content_length}, past the declared size "
                f"of {session.size} bytes.",
                code="past_declared_size",
            )
        _fail_if_unreadable(session)
        try:
            _store_chunk(session, stream, checksum, whole=not keep_partial or checksum is not None)
        except Exception:
            if keep_partial:  # its pieces are kept: every byte may be in by now
                session_complete_if_full(session)
            raise
        session.refresh_from_db()
        upload = None
        if session.offset == session.size:
            upload = _session_complete(session)
            session.refresh_from_db()
        return ChunkOutcome(session=session, upload=upload)
    finally:
        session_unlock(token)


def session_complete_if_full(session: UploadSession) -> bool:
    """Complete an open session that has every byte but no upload: a tus chunk that broke
    off (or went past the size) after its last byte was stored, or a web process that died
    before completing it. A client that reads offset == length sends nothing more, and the
    file was never loaded. The caller holds the session's lock."""
    session.refresh_from_db()
    if session.state != SessionState.OPEN or session.offset != session.size:
        return False
    with suppress(ApplicationError):  # a failed check fails the session, which says so
        _session_complete(session)
    return True


def sessions_complete_full(*, older_than: timedelta | None = None) -> int:
    """Complete every open session that has had all its bytes for `older_than` (default
    `UPLOAD_STUCK_SECONDS`) but no upload (`session_complete_if_full`); how many. Part of
    the re-queue job: no client has to come back for it."""
    if older_than is None:
        older_than = timedelta(seconds=settings.UPLOAD_STUCK_SECONDS)
    full = UploadSession.objects.filter(
        state=SessionState.OPEN, offset=F("size"), updated_at__lt=timezone.now() - older_than
    )
    done = 0
    for session in full.select_related("tenant"):
        if not session_try_lock(session.token):
            continue  # a chunk is being received: it completes the session itself
        try:
            if session_complete_if_full(session):
                logger.info("session %s completed by the re-queue job", session.token)
                done += 1
        finally:
            session_unlock(session.token)
    return done


def _fail_if_unreadable(session: UploadSession) -> None:
    """The upload loading the session's bytes failed on them (compression that cannot be
    read, in what has arrived): the file fails so however it ends. The session fails now,
    showing that upload, rather than take the rest of the file first."""
    if session.receiving_id is None:
        return
    failed = Upload.objects.filter(
        id=session.receiving_id, sha256="", state=UploadState.FAILED, error_code__in=BYTES_FAULTS
    ).first()
    if failed is not None:
        detail = f"the file cannot be read: {failed.error_detail}"
        session_fail(session, code=failed.error_code, detail=detail, upload=failed)
        raise UnprocessableError(f"The session failed: {detail}", code=failed.error_code)


def _store_chunk(
    session: UploadSession, stream: BinaryIO, checksum: ChunkChecksum | None, *, whole: bool
) -> None:
    """Write the chunk's bytes as blob pieces, advancing the session's offset with each
    piece; `whole` makes it one transaction (all or nothing)."""
    last = BlobChunk.objects.filter(blob_id=session.blob_id).aggregate(last=Max("seq"))["last"]
    seq = -1 if last is None else last
    offset = session.offset
    hasher = hashlib.new(checksum.algorithm) if checksum else None
    with transaction.atomic() if whole else nullcontext():
        while True:
            try:
                piece = stream.read(CHUNK_BYTES)
            except OSError as exc:  # the client went away, or sent less than announced
                kept = session.offset if whole else offset
                raise ApplicationError(
                    f"The chunk broke off after {offset - session.offset} bytes"
                    + (" and was not stored" if whole else "")
                    + f": send from offset {kept}.",
                    code="chunk_incomplete",
                    extra={"offset": kept},
                    headers={"Upload-Offset": str(kept)},
                ) from exc
            if not piece:
                break
            if offset + len(piece) > session.size:
                raise ApplicationError(
                    f"The chunk goes past the declared size of {session.size} bytes.",
                    code="past_declared_size",
                )
            if hasher:
                hasher.update(piece)
            seq += 1
            with transaction.atomic():
                _durable()
                blob_write_piece(session.blob_id, seq, piece)
                UploadSession.objects.filter(token=session.token).update(
                    offset=F("offset") + len(piece), updated_at=timezone.now()
                )
                if seq == 0:
                    _receive_early(session, piece)
            offset += len(piece)
        if hasher and hasher.digest() != checksum.digest:
            raise ChecksumMismatchError(
                f"The chunk's {checksum.algorithm} does not match Upload-Checksum; "
                "it was not stored: send it again.",
                extra={"offset": session.offset},
                headers={"Upload-Offset": str(session.offset)},
            )


def _receive_early(session: UploadSession, first: bytes) -> None:
    """With the file's first piece (in its transaction): a big file's upload opened,
    unsealed, and queued, so a worker loads it as its bytes arrive. Not when the piece is
    too short to tell the type from the head the completion would read, nor when the type
    cannot be told: the completion does as it always did."""
    big = session.size > settings.WEB_BUFFER_BODY_BYTES
    if not (big and settings.INGEST_PROCESS_WHILE_RECEIVING):
        return
    head = first[:HEAD_BYTES]
    if len(head) < min(HEAD_BYTES, session.size):
        return
    try:
        explicit = session.record_type or None
        record_type = record_type_of(
            head, filename=session.filename, explicit=explicit, allowed_types=None
        )
    except UnknownRecordTypeError:
        return  # the completion fails the session, as without this
    Blob.objects.filter(id=session.blob_id).update(head=head)
    upload = upload_open_unsealed(
        tenant=session.tenant,
        blob_id=session.blob_id,
        record_type=record_type,
        filename=session.filename,
        size=session.size,
        strict=session.strict,
        dry_run=session.dry_run,
    )
    UploadSession.objects.filter(token=session.token).update(receiving=upload)
    session.receiving = upload


def _durable() -> None:
    # A chunk is acknowledged only once it is on disk, whatever the server's default.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = on")


def _read_back(session: UploadSession) -> tuple[str, int, bytes]:
    """The stored file's sha256, size and head (its first `HEAD_BYTES`)."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    with BlobReader(session.blob_id, shared=True) as stream:
        while piece := stream.read(CHUNK_BYTES):
            digest.update(piece)
            size += len(piece)
            if len(head) < HEAD_BYTES:
                head += piece[: HEAD_BYTES - len(head)]
    return digest.hexdigest(), size, head


def _session_complete(session: UploadSession) -> UploadOutcome:
    """All bytes are in: check the file's sha256, decide its type and register the upload
    (queued once this commits), or seal the one loading it. Identical bytes already received
    give the earlier upload."""
    sha256, size, head = _read_back(session)
    if size != session.size:  # cannot happen while offsets are checked; never load if it does
        detail = f"stored {size} bytes for a session of {session.size}"
        session_fail(session, code="size_mismatch", detail=detail)
        raise ApplicationError(f"The session failed: {detail}.", code="size_mismatch")
    if session.sha256 and sha256 != session.sha256:
        detail = (
            f"the file's sha256 is {sha256}, not the {session.sha256} announced; nothing was loaded"
        )
        session_fail(session, code="checksum_mismatch", detail=detail)
        raise UnprocessableError(f"Checksum mismatch: {detail}.", code="checksum_mismatch")
    if session.receiving_id is not None and _early_upload_kept(session):
        return _session_seal(session, sha256=sha256, size=size)
    try:
        record_type = record_type_decide(
            filename=session.filename,
            explicit=session.record_type or None,
            open_stream=lambda: io.BytesIO(head),
        )
    except UnknownRecordTypeError as exc:
        session_fail(session, code=exc.code, detail=exc.detail)
        raise
    with transaction.atomic():
        Blob.objects.filter(id=session.blob_id).update(sha256=sha256, size_bytes=size, head=head)
        blob = Blob.objects.get(id=session.blob_id)
        outcome = upload_register(
            tenant=session.tenant,
            record_type=record_type,
            filename=session.filename,
            fingerprint=Fingerprint(sha256=sha256, size=size),
            strict=session.strict,
            dry_run=session.dry_run,
            blob=blob,
        )
        UploadSession.objects.filter(token=session.token).update(
            state=SessionState.COMPLETE,
            upload=outcome.upload,
            blob=blob if outcome.created else None,
            updated_at=timezone.now(),
        )
        if not outcome.created:
            blob.delete()  # the earlier upload keeps its own copy
    logger.info(
        "session %s complete: upload %s (%s)",
        session.token,
        outcome.upload.id,
        "new" if outcome.created else "identical bytes already received",
    )
    return outcome


def _early_upload_kept(session: UploadSession) -> bool:
    """Whether the upload loading the session's bytes is still to seal. One a worker
    failed before the last byte (say, internal_error, or bad compression in the first
    bytes) is removed: it was never shown, and the completion registers the file afresh,
    as if none had been opened (a fault of the bytes fails it again)."""
    failed = Upload.objects.filter(id=session.receiving_id, sha256="", state__in=TERMINAL_STATES)
    if failed.delete()[0]:
        logger.info("session %s: the upload loading it early had failed, removed", session.token)
        UploadSession.objects.filter(token=session.token).update(receiving=None)
        session.receiving_id = None
        return False
    return True


def _session_seal(session: UploadSession, *, sha256: str, size: int) -> UploadOutcome:
    """All bytes are in, and an upload is loading them: seal it (its load can commit now)
    and complete the session, in one transaction. Identical bytes already received: the
    earlier upload answers, and this one is cancelled (nothing of it loads)."""
    upload = session.receiving
    with transaction.atomic():
        original = upload_seal(upload, sha256=sha256, size=size)
        if original is None:  # received, as the API tells, when its last byte came
            Upload.objects.filter(id=upload.id).update(created_at=timezone.now())
        UploadSession.objects.filter(token=session.token).update(
            state=SessionState.COMPLETE,
            upload=original or upload,
            receiving=None,
            blob=None if original else session.blob_id,
            updated_at=timezone.now(),
        )
        if original is not None:
            upload_cancel(upload_id=upload.id, blob_id=session.blob_id)
    if original is not None:
        logger.info(
            "session %s complete: identical bytes already received, upload %s answers",
            session.token,
            original.id,
        )
        return UploadOutcome(upload=original, created=False)
    logger.info("session %s complete: upload %s sealed", session.token, upload.id)
    return UploadOutcome(upload=upload_send_sealed(upload_id=upload.id), created=True)
