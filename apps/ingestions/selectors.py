"""Reads of the ingestion app, tenant first: another tenant's rows are not found."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.ids import uuid_or_none
from apps.ingestions.models import (
    BatchState,
    RecordBatch,
    Reject,
    Upload,
    UploadSession,
    UploadSource,
    UploadWarning,
    ValidationRule,
)
from apps.tenants.models import Tenant

# The uploads loading open sessions' bytes as they arrive, whose senders may pause for as
# long as their sessions last: in SQL (is the upload `u` one?), and their ids.
SESSION_RECEIVING_SQL = (
    "(u.sha256 = '' AND EXISTS (SELECT 1 FROM upload_sessions s "
    "WHERE s.receiving_id = u.id AND s.state = 'open'))"
)


def session_receiving_ids() -> QuerySet:
    return UploadSession.objects.filter(state="open", receiving__isnull=False).values(
        "receiving_id"
    )


def upload_list(
    *, tenant: Tenant, state: str | None = None, record_type: str | None = None
) -> QuerySet[Upload]:
    uploads = Upload.objects.filter(tenant=tenant, source=UploadSource.FILE).order_by("-created_at")
    # one loading a session's bytes as they arrive shows once the session is complete
    uploads = uploads.exclude(id__in=session_receiving_ids())
    if state:
        uploads = uploads.filter(state=state)
    if record_type:
        uploads = uploads.filter(record_type=record_type)
    return uploads


def upload_get(*, tenant: Tenant, upload_id) -> Upload | None:
    """The tenant's upload, or None (also for another tenant's id: not found, not forbidden)."""
    parsed = uuid_or_none(upload_id)
    if parsed is None:
        return None
    return Upload.objects.filter(tenant=tenant, id=parsed, source=UploadSource.FILE).first()


def reject_list(*, tenant: Tenant, upload: Upload, code: str | None = None) -> QuerySet[Reject]:
    rejects = Reject.objects.filter(upload=upload, upload__tenant=tenant)
    if code:
        rejects = rejects.filter(code=code)
    return rejects.order_by("line", "id")


def warning_list(*, tenant: Tenant, upload: Upload) -> QuerySet[UploadWarning]:
    return UploadWarning.objects.filter(upload=upload, upload__tenant=tenant).order_by("line", "id")


def rules_history(*, tenant: Tenant, record_type: str | None = None) -> QuerySet[ValidationRule]:
    """The tenant's rule versions, newest first (of `record_type` only, when given)."""
    rules = ValidationRule.objects.filter(tenant=tenant)
    if record_type is not None:
        rules = rules.filter(record_type=record_type)
    return rules.order_by("record_type", "-version")


def session_get(*, tenant: Tenant, token: str) -> UploadSession | None:
    """The tenant's upload session, or None (also for another tenant's token)."""
    return UploadSession.objects.filter(tenant=tenant, token=str(token)[:64]).first()


def record_batch_list(
    *, tenant: Tenant, state: str | None = None, record_type: str | None = None
) -> QuerySet[RecordBatch]:
    batches = RecordBatch.objects.filter(tenant=tenant).order_by("-id")
    if record_type:
        batches = batches.filter(record_type=record_type)
    return batches.filter(state=state) if state else batches


def record_batch_get(*, tenant: Tenant, batch_id: int) -> RecordBatch | None:
    return RecordBatch.objects.filter(tenant=tenant, id=batch_id).first()


def record_batch_rows(*, batch: RecordBatch) -> dict[str, int]:
    """A batch's counts, as an upload's: its parts' (once merged) and its rejects."""
    rows = dict.fromkeys(("inserted", "updated", "unchanged", "rejected", "pending"), 0)
    rows["duplicates"] = 0
    rows["rejected"] = batch.rejected
    if batch.state == BatchState.ACCEPTED and "warnings" not in batch.get_deferred_fields():
        # Not merged yet, so only its acceptance counts, and it has one warning a record
        # warned: the answer to a new batch needs no query of its parts.
        rows["warned"] = len(batch.warnings)
        return {"total": batch.records, **rows}
    # parts are merged with their batch, in one transaction: an accepted one has none yet
    merged_parts = batch.parts.all() if batch.state != BatchState.ACCEPTED else ()
    for part in merged_parts:
        for name, count in part.row_counts.items():
            if name not in ("total", "warned"):
                rows[name] += count
    rows["warned"] = sum(part.rows_warned for part in batch.parts.all())  # at acceptance
    return {"total": batch.records, **rows}


def record_batch_rejects(
    *, tenant: Tenant, batch: RecordBatch, code: str | None = None
) -> list[dict]:
    """Rejects at acceptance, then those of the merge (orphans), by line; of `code` only
    when given."""
    later = Reject.objects.filter(upload__batch=batch, upload__tenant=tenant)
    if code:
        later = later.filter(code=code)
    at_once = [r for r in batch.rejects if not code or r["code"] == code]
    rows = later.order_by("line", "id").values("line", "field", "code", "message", "raw", "errors")
    return sorted([*at_once, *rows], key=lambda r: r["line"])
