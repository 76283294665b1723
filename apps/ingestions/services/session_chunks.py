"""A session's chunks: each stored durably at its offset; the last one registers the upload.

A chunk without a checksum of its own is committed piece by piece (1 MiB at a time), so a
transfer cut in the middle of a chunk resumes from the last stored piece, not from the
start of the chunk. A chunk with a checksum (tus `Upload-Checksum`) is all or nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import BinaryIO

from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.core.errors import ApplicationError, UnknownRecordTypeError, UnprocessableError
from apps.ingestions.models import Blob, BlobChunk, SessionState, UploadSession
from apps.ingestions.services.sessions import (
    SESSION_TOKEN,
    offset_conflict,
    session_expired_error,
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
    upload_register,
)
from apps.tenants.models import Tenant

logger = logging.getLogger("apps.ingestions.sessions")  # the name it always had

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


class ChecksumMismatchError(ApplicationError):
    """A chunk's bytes do not match its Upload-Checksum (tus answers 460)."""

    status = 460
    code = "checksum_mismatch"
    title = "Checksum mismatch"


@dataclass(frozen=True)
class ChunkChecksum:
    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, header: str) -> ChunkChecksum:
        """`Upload-Checksum: <algorithm> <base64 digest>`."""
        algorithm, _, encoded = header.strip().partition(" ")
        algorithm = algorithm.lower()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ApplicationError(
                f"Unsupported checksum algorithm {algorithm!r}; use one of "
                f"{', '.join(CHECKSUM_ALGORITHMS)}.",
                code="unsupported_checksum",
            )
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            raise ApplicationError(
                "Upload-Checksum must be `<algorithm> <base64 digest>`.", code="bad_checksum"
            ) from None
        return cls(algorithm=algorithm, digest=digest)


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
    ask the offset and resume from it): then each piece that arrived whole is kept and
    counted when the chunk breaks off, and never a byte that did not arrive."""
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
        _store_chunk(session, stream, checksum, whole=not keep_partial or checksum is not None)
        session.refresh_from_db()
        upload = None
        if session.offset == session.size:
            upload = _session_complete(session)
            session.refresh_from_db()
        return ChunkOutcome(session=session, upload=upload)
    finally:
        session_unlock(token)


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
            offset += len(piece)
        if hasher and hasher.digest() != checksum.digest:
            raise ChecksumMismatchError(
                f"The chunk's {checksum.algorithm} does not match Upload-Checksum; "
                "it was not stored: send it again.",
                extra={"offset": session.offset},
                headers={"Upload-Offset": str(session.offset)},
            )


def _durable() -> None:
    # A chunk is acknowledged only once it is on disk, whatever the server's default.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = on")


def _session_fail(session: UploadSession, *, code: str, detail: str) -> None:
    blob_id = session.blob_id
    UploadSession.objects.filter(token=session.token).update(
        state=SessionState.FAILED,
        error_code=code,
        error_detail=detail,
        blob=None,
        updated_at=timezone.now(),
    )
    Blob.objects.filter(id=blob_id).delete()


def _session_complete(session: UploadSession) -> UploadOutcome:
    """All bytes are in: check the file's sha256, decide its type and register the upload
    (queued once this commits). Identical bytes already received give the earlier upload."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    with BlobReader(session.blob_id, shared=True) as stream:
        while piece := stream.read(CHUNK_BYTES):
            digest.update(piece)
            size += len(piece)
            if len(head) < HEAD_BYTES:
                head += piece[: HEAD_BYTES - len(head)]
    sha256 = digest.hexdigest()
    if size != session.size:  # cannot happen while offsets are checked; never load if it does
        detail = f"stored {size} bytes for a session of {session.size}"
        _session_fail(session, code="size_mismatch", detail=detail)
        raise ApplicationError(f"The session failed: {detail}.", code="size_mismatch")
    if session.sha256 and sha256 != session.sha256:
        detail = (
            f"the file's sha256 is {sha256}, not the {session.sha256} announced; nothing was loaded"
        )
        _session_fail(session, code="checksum_mismatch", detail=detail)
        raise UnprocessableError(f"Checksum mismatch: {detail}.", code="checksum_mismatch")
    try:
        record_type = record_type_decide(
            filename=session.filename,
            explicit=session.record_type or None,
            open_stream=lambda: io.BytesIO(head),
        )
    except UnknownRecordTypeError as exc:
        _session_fail(session, code=exc.code, detail=exc.detail)
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
