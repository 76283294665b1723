"""Reads of the ingestion app, tenant first: another tenant's rows are not found."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.ingestions.models import Reject, Upload, UploadSession
from apps.tenants.models import Tenant


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def upload_list(
    *, tenant: Tenant, state: str | None = None, record_type: str | None = None
) -> QuerySet[Upload]:
    uploads = Upload.objects.filter(tenant=tenant).order_by("-created_at")
    if state:
        uploads = uploads.filter(state=state)
    if record_type:
        uploads = uploads.filter(record_type=record_type)
    return uploads


def upload_get(*, tenant: Tenant, upload_id) -> Upload | None:
    """The tenant's upload, or None (also for another tenant's id: not found, not forbidden)."""
    parsed = _uuid(upload_id)
    if parsed is None:
        return None
    return Upload.objects.filter(tenant=tenant, id=parsed).first()


def reject_list(*, tenant: Tenant, upload: Upload, code: str | None = None) -> QuerySet[Reject]:
    rejects = Reject.objects.filter(upload=upload, upload__tenant=tenant)
    if code:
        rejects = rejects.filter(code=code)
    return rejects.order_by("line", "id")


def session_get(*, tenant: Tenant, token: str) -> UploadSession | None:
    """The tenant's upload session, or None (also for another tenant's token)."""
    return UploadSession.objects.filter(tenant=tenant, token=str(token)[:64]).first()
