"""Receiving uploads: a file stored, its type decided, registered once per content, queued.

An upload comes from the API (`upload_create`, its bytes stored first), a completed
session (`upload_register` with its blob) or a local path (`upload_ingest_path`, processed
at once). Identical bytes for the same tenant and type give back the original upload;
a dry run is never that upload, nor given one back: it reports on the data as it is when
it runs, so each is run, and it loads nothing that would make a real upload redundant.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.db import transaction

from apps.core.errors import ApplicationError, UnknownRecordTypeError, WrongRecordTypeError
from apps.core.logs import log_bind
from apps.ingestions import engine
from apps.ingestions.models import Blob, Upload, UploadSource, UploadState
from apps.ingestions.services.processing import upload_process
from apps.ingestions.services.scheduling import upload_enqueue
from apps.ingestions.services.storage import blob_store
from apps.tenants.models import Tenant

# Every module that changes an upload's state logs on this one logger (docs/operations.md).
logger = logging.getLogger("apps.ingestions.services")

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
    if explicit and explicit not in engine.RECORDS:
        raise UnknownRecordTypeError(
            f"Unknown type {explicit!r}; expected one of {', '.join(engine.RECORDS)}."
        )
    with open_stream() as stream:
        found = engine.detect_record_type(filename=filename, explicit=explicit, stream=stream)
    if found is None:
        raise UnknownRecordTypeError(
            f"Cannot tell the record type of {filename!r}: name it customers_*, products_*, "
            "orders_* or order_items_*, or give the type explicitly."
        )
    return found


def record_type_of(
    head: bytes, *, filename: str, explicit: str | None, allowed_types: frozenset[str] | None
) -> str:
    """The type of a received file, from its first bytes (`HEAD_BYTES`): 4xx when it cannot
    be told, or when the endpoint takes other types only."""
    record_type = record_type_decide(
        filename=filename, explicit=explicit, open_stream=lambda: io.BytesIO(head)
    )
    if allowed_types is not None and record_type not in allowed_types:
        raise WrongRecordTypeError(
            f"This endpoint takes {' and '.join(sorted(allowed_types))} files only, "
            f"not {record_type}."
        )
    return record_type


@dataclass(frozen=True)
class UploadOutcome:
    upload: Upload
    created: bool  # False: identical bytes were already received; `upload` is the original


def upload_ingest_path(
    *,
    tenant: Tenant,
    path: Path,
    record_type: str | None = None,
    strict: bool = False,
    dry_run: bool = False,
) -> UploadOutcome:
    """Register a local file as an upload and process it synchronously."""

    def open_stream() -> BinaryIO:
        return path.open("rb")

    if not path.is_file():
        if path.is_dir():
            raise ApplicationError(f"{path} is a folder, not a file.")
        if path.exists():  # a pipe, a socket, a device: read twice (fingerprint, rows)
            raise ApplicationError(f"{path} is not a regular file: give a file it can read twice.")
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
        dry_run=dry_run,
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
    dry_run: bool = False,
    blob: Blob | None = None,
) -> UploadOutcome:
    """Create the upload, or return the earlier one when the same bytes were received (a
    dry run is always created, and never returned for a real upload; nor is a failed one:
    the same bytes again are its retry). An upload with stored bytes is queued for a worker
    once this transaction commits."""
    fields = {
        "filename": filename[:255],
        "size_bytes": fingerprint.size,
        "strict": strict,
        "blob": blob,
        "state": UploadState.RECEIVED if blob is None else UploadState.QUEUED,
    }
    identity = {
        "tenant": tenant,
        "record_type": record_type,
        "sha256": fingerprint.sha256,
        "source": UploadSource.FILE,
    }
    if dry_run:
        upload, created = Upload.objects.create(**identity, **fields, dry_run=True), True
    else:
        # a failed upload loaded nothing: the same bytes again are a new one (a retry)
        earlier = Upload.objects.exclude(state=UploadState.FAILED)
        upload, created = earlier.get_or_create(**identity, dry_run=False, defaults=fields)
    log_bind(tenant_id=tenant.id, upload_id=upload.id)  # on the rest of this request's lines
    if created:
        logger.info(
            "upload %s",
            upload.state,
            extra={
                "state": upload.state,
                "type": record_type,
                "size_bytes": upload.size_bytes,
                "dry_run": dry_run,
            },
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
    dry_run: bool = False,
    allowed_types: frozenset[str] | None = None,
) -> UploadOutcome:
    """Store an uploaded file and queue it; identical bytes already received for the same
    tenant and type give back the original upload, and nothing is processed again (not
    for a dry run, which always runs)."""
    blob = blob_store(stream=stream)
    try:
        if blob.size_bytes == 0:
            raise ApplicationError("The file is empty.", code="empty_file")
        record_type = record_type_of(
            bytes(blob.head), filename=filename, explicit=record_type, allowed_types=allowed_types
        )
        outcome = upload_register(
            tenant=tenant,
            record_type=record_type,
            filename=filename,
            fingerprint=Fingerprint(sha256=blob.sha256, size=blob.size_bytes),
            strict=strict,
            dry_run=dry_run,
            blob=blob,
        )
    except BaseException:
        blob.delete()
        raise
    if not outcome.created:
        blob.delete()  # the original upload keeps its own copy
    return outcome
