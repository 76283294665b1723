"""Resumable upload sessions: open one, look it up, resume, terminate, expire (SPEC section 5).

A session receives a file in chunks at increasing offsets (`session_chunks`), and turns into
an `Upload` when the last byte arrives and the checksum matches. A tus 1.0 upload is a
session too; only the HTTP dialect differs.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import (
    ApplicationError,
    ConflictError,
    GoneError,
    NotFoundError,
    PayloadTooLargeError,
    UnknownRecordTypeError,
)
from apps.ingestions import engine
from apps.ingestions.models import Blob, SessionState, UploadSession
from apps.ingestions.selectors import session_get
from apps.ingestions.services.filenames import filename_clean
from apps.ingestions.services.housekeeping import upload_retry
from apps.ingestions.services.receiving import upload_cancel
from apps.tenants.models import Tenant

logger = logging.getLogger("apps.ingestions.sessions")  # the name it always had

_SHA256 = re.compile(r"[0-9a-f]{64}")
# What `secrets.token_hex(16)` makes: the session and tus URLs route only this, and a
# token header of any other form is no session (no lock is taken for it, nothing queried).
SESSION_TOKEN = re.compile(r"[0-9a-f]{32}")


def session_create(
    *,
    tenant: Tenant,
    filename: str,
    size: int,
    sha256: str = "",
    record_type: str = "",
    strict: bool = False,
    dry_run: bool = False,
    metadata: str = "",
) -> UploadSession:
    """Open a session for a file of `size` bytes. Its bytes go to a blob of their own."""
    filename = filename_clean(filename)
    if not filename:
        raise ApplicationError("Give the file's name (`filename`).", code="missing_filename")
    if size <= 0:
        raise ApplicationError("The file is empty: its size must be at least 1.", code="empty_file")
    if size > settings.INGEST_MAX_UPLOAD_BYTES:
        digits = len(str(size))
        shown = f"{size} bytes" if digits <= 20 else f"a size of {digits} digits"
        raise PayloadTooLargeError(
            f"The file is {shown}; the limit is {settings.INGEST_MAX_UPLOAD_BYTES}."
        )
    sha256 = sha256.strip().lower()
    if sha256 and not _SHA256.fullmatch(sha256):
        raise ApplicationError("sha256 must be 64 hexadecimal digits.", code="bad_sha256")
    if record_type and record_type not in engine.RECORDS:
        raise UnknownRecordTypeError(
            f"Unknown type {record_type!r}; expected one of {', '.join(engine.RECORDS)}."
        )
    with transaction.atomic():
        blob = Blob.objects.create(sha256="", size_bytes=0)
        return UploadSession.objects.create(
            token=secrets.token_hex(16),  # SESSION_TOKEN
            tenant=tenant,
            filename=filename,
            size=size,
            sha256=sha256,
            record_type=record_type,
            strict=strict,
            dry_run=dry_run,
            metadata=metadata,
            blob=blob,
            expires_at=timezone.now() + timedelta(seconds=settings.INGEST_SESSION_TTL_SECONDS),
        )


def offset_conflict(session: UploadSession, detail: str, code: str) -> ConflictError:
    """A 409 that tells the offset to send from (header and body)."""
    return ConflictError(
        detail,
        code=code,
        extra={"offset": session.offset},
        headers={"Upload-Offset": str(session.offset)},
    )


def session_try_lock(token: str) -> bool:
    """One request at a time writes a session: a session-level advisory lock, held across
    the small transactions that store a chunk's pieces."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(hashtextextended('session:' || %s, 0))", (token,)
        )
        return cursor.fetchone()[0]


def session_unlock(token: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtextextended('session:' || %s, 0))", (token,))


def session_expired_error() -> GoneError:
    """The 410 of a session whose bytes were deleted."""
    return GoneError(
        "This upload session has expired and its bytes were deleted; start a new one.",
        code="session_expired",
    )


def session_lookup(*, tenant: Tenant, token: str) -> UploadSession:
    """The tenant's session (404 for anyone else's); an open one past its expiry is
    expired on the spot, without waiting for the periodic job."""
    session = session_get(tenant=tenant, token=token) if SESSION_TOKEN.fullmatch(token) else None
    if session is None:
        raise session_not_found()
    # under the session's lock, as every writer of its bytes: a chunk being received now
    # is left to end (the periodic job expires the session after it)
    overdue = session.state == SessionState.OPEN and session.expires_at <= timezone.now()
    if overdue and session_try_lock(token):
        try:
            _session_mark_expired(session)
        finally:
            session_unlock(token)
    return session


def session_not_found() -> NotFoundError:
    """The 404 of a token that is no session of the tenant's."""
    return NotFoundError("No such upload session.", code="not_found")


@dataclass(frozen=True)
class ResumeOutcome:
    session: UploadSession
    requeued: bool  # a failed processing was started again


def session_resume(*, tenant: Tenant, token: str) -> ResumeOutcome:
    """An open session answers the offset to send from; a complete one whose processing
    failed is processed again from its stored bytes."""
    session = session_lookup(tenant=tenant, token=token)
    if session.state == SessionState.EXPIRED:
        raise session_expired_error()
    if session.state == SessionState.FAILED:
        raise ConflictError(
            f"This upload session failed ({session.error_detail}); start a new one.",
            code="session_failed",
        )
    requeued = False
    if session.state == SessionState.COMPLETE and session.upload_id is not None:
        requeued = upload_retry(upload_id=session.upload_id)
    session.refresh_from_db()
    return ResumeOutcome(session=session, requeued=requeued)


def session_terminate(*, tenant: Tenant, token: str) -> None:
    """tus termination: forget the session and the bytes it holds. An upload it already
    produced stays."""
    session = session_lookup(tenant=tenant, token=token)
    if not session_try_lock(token):
        raise offset_conflict(
            session, "A chunk of this session is being received; retry.", "session_busy"
        )
    try:
        session.refresh_from_db()  # as it is now: a chunk may have completed it meanwhile
        with transaction.atomic():
            blob_id = session.blob_id if session.state == SessionState.OPEN else None
            UploadSession.objects.filter(token=token).delete()
            if blob_id is not None:
                session_bytes_delete(session)
    finally:
        session_unlock(token)


def _session_mark_expired(session: UploadSession) -> None:
    """Expire an open session (the caller holds its lock): its bytes are deleted, and the
    upload loading them. One that a chunk completed meanwhile is left as it is."""
    with transaction.atomic():
        session.refresh_from_db()
        expired = UploadSession.objects.filter(token=session.token, state=SessionState.OPEN)
        if session.state == SessionState.OPEN and expired.update(
            state=SessionState.EXPIRED, blob=None, receiving=None, updated_at=timezone.now()
        ):
            session_bytes_delete(session)
    session.refresh_from_db()


# The faults of a file that its first bytes decide, whatever follows them: a load that
# meets one before the last byte fails the session at once (`session_chunks`). Not
# `decompression_bomb`: its ratio counts the compressed bytes read so far, which differ
# when the reader waits for bytes still arriving.
BYTES_FAULTS = ("invalid_compression",)


def session_fail(session: UploadSession, *, code: str, detail: str, upload=None) -> None:
    """The session failed: its bytes go, and the upload loading them unless a worker ended
    it already (`upload`, then shown as the session's)."""
    with transaction.atomic():
        UploadSession.objects.filter(token=session.token).update(
            state=SessionState.FAILED,
            error_code=code,
            error_detail=detail,
            blob=None,
            receiving=None,
            upload=upload,
            updated_at=timezone.now(),
        )
        session_bytes_delete(session)  # as read before the update


def session_bytes_delete(session: UploadSession) -> None:
    """An open session's bytes deleted, as it fails, expires or ends (the caller holds its
    lock): the upload loading them as they arrive (`session_chunks`), if any, is cancelled
    with them (never sealed, nothing of it loads)."""
    if session.receiving_id is not None:
        upload_cancel(upload_id=session.receiving_id, blob_id=session.blob_id)
    Blob.objects.filter(id=session.blob_id).delete()


def session_expire(*, now=None) -> int:
    """Periodic job: open sessions past their expiry become `expired` and their bytes are
    deleted; session records are forgotten one retention period after they expired."""
    now = now or timezone.now()
    expired = 0
    for session in UploadSession.objects.filter(state=SessionState.OPEN, expires_at__lte=now):
        if not session_try_lock(session.token):
            continue  # a chunk is arriving right now; next run
        try:
            session.refresh_from_db()
            if session.state == SessionState.OPEN:
                _session_mark_expired(session)
                expired += 1
        finally:
            session_unlock(session.token)
    forget_before = now - timedelta(seconds=settings.INGEST_SESSION_TTL_SECONDS)
    UploadSession.objects.filter(expires_at__lte=forget_before).exclude(
        state=SessionState.OPEN
    ).delete()
    if expired:
        logger.info("expired %d upload session(s)", expired)
    return expired
