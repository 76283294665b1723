"""Reads behind the dashboard. Every selector takes the scope first: one tenant, or
`UNSCOPED_ALL_TENANTS` for a staff member looking at every tenant (a loud, deliberate
bypass); another tenant's rows are "not found"."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet

from apps.ingestions.models import Reject, Upload, UploadState
from apps.tenants.models import ApiKey, Tenant


class _AllTenants:
    def __repr__(self) -> str:
        return "UNSCOPED_ALL_TENANTS"


UNSCOPED_ALL_TENANTS = _AllTenants()
Scope = Tenant | _AllTenants


def _scoped(queryset: QuerySet, tenant: Scope, field: str = "tenant") -> QuerySet:
    if tenant is UNSCOPED_ALL_TENANTS:
        return queryset
    if not isinstance(tenant, Tenant):
        raise TypeError(f"a dashboard read needs a tenant or UNSCOPED_ALL_TENANTS, not {tenant!r}")
    return queryset.filter(**{field: tenant})


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def tenant_of_signed_in_key(*, tenant_id, key_prefix: str) -> Tenant | None:
    """The tenant a dashboard session was opened for, while the key it was opened with is
    still active (revoking the key ends the session)."""
    parsed = _uuid(tenant_id)
    if parsed is None:
        return None
    key = (
        ApiKey.objects.select_related("tenant")
        .filter(tenant_id=parsed, prefix=key_prefix, revoked_at=None, tenant__is_active=True)
        .first()
    )
    return key.tenant if key else None


def tenant_options() -> list[Tenant]:
    """Every tenant, for a staff member's tenant filter."""
    return list(Tenant.objects.order_by("name", "id"))


def tenant_find(*, tenant_id) -> Tenant | None:
    parsed = _uuid(tenant_id)
    return Tenant.objects.filter(id=parsed).first() if parsed else None


def upload_recent(*, tenant: Scope, limit: int = 50) -> list[Upload]:
    """The newest uploads, newest first."""
    uploads = _scoped(Upload.objects.select_related("tenant"), tenant)
    return list(uploads.order_by("-created_at", "id")[:limit])


def upload_find(*, tenant: Scope, upload_id) -> Upload | None:
    """One upload in scope, or None (also for another tenant's id)."""
    parsed = _uuid(upload_id)
    if parsed is None:
        return None
    return _scoped(Upload.objects.select_related("tenant"), tenant).filter(id=parsed).first()


def reject_list(*, tenant: Scope, upload: Upload) -> QuerySet[Reject]:
    """An upload's rejected rows in line order."""
    return _scoped(Reject.objects.filter(upload=upload), tenant, "upload__tenant").order_by(
        "line", "id"
    )


def reject_code_counts(*, tenant: Scope, uploads: list[Upload]) -> list[tuple[str, int]]:
    """Rejected rows by code over the given uploads, most frequent first."""
    ids = [u.id for u in uploads if u.rows_rejected]
    if not ids:
        return []
    rejects = _scoped(Reject.objects.filter(upload_id__in=ids), tenant, "upload__tenant")
    counts = rejects.values("code").annotate(n=Count("id")).order_by("-n", "code")
    return [(row["code"], row["n"]) for row in counts]


@dataclass(frozen=True)
class Throughput:
    """Rows per second averaged over equal buckets from `start` to `end`."""

    start: datetime
    end: datetime
    bucket_seconds: int
    rows_per_second: list[float]


def throughput_series(
    *, tenant: Scope, window: timedelta, buckets: int, now: datetime
) -> Throughput:
    """Rows processed per second over the last `window`, in `buckets` equal buckets ending
    at the bucket boundary after `now`. An upload's rows are spread evenly over the time it
    ran (until its last progress write while it still runs)."""
    size = int(window.total_seconds()) // buckets
    epoch = int(now.timestamp())
    end = datetime.fromtimestamp(epoch - epoch % size + size, tz=now.tzinfo)
    start = end - timedelta(seconds=size * buckets)
    uploads = _scoped(Upload.objects, tenant).filter(
        Q(finished_at__gte=start) | Q(finished_at=None, state=UploadState.PROCESSING),
        started_at__isnull=False,
        rows_done__gt=0,
    )
    rows = [0.0] * buckets
    for started, finished, updated, done in uploads.values_list(
        "started_at", "finished_at", "updated_at", "rows_done"
    ):
        ran_from, ran_to = started.timestamp(), (finished or updated).timestamp()
        if ran_to <= ran_from:  # too fast to measure: all in the bucket it ended in
            index = int((ran_to - start.timestamp()) // size)
            if 0 <= index < buckets:
                rows[index] += done
            continue
        per_second = done / (ran_to - ran_from)
        first = max(0, int((ran_from - start.timestamp()) // size))
        last = min(buckets - 1, int((ran_to - start.timestamp()) // size))
        for index in range(first, last + 1):
            low = start.timestamp() + index * size
            overlap = min(ran_to, low + size) - max(ran_from, low)
            if overlap > 0:
                rows[index] += per_second * overlap
    return Throughput(
        start=start,
        end=end,
        bucket_seconds=size,
        rows_per_second=[r / size for r in rows],
    )
