"""Reads behind the dashboard. Every selector takes the scope first: one tenant, or
`UNSCOPED_ALL_TENANTS` for a staff member looking at every tenant (a loud, deliberate
bypass); another tenant's rows are "not found"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import Extract, Floor

from apps.core.ids import uuid_or_none
from apps.ingestions.models import (
    BatchState,
    RecordBatch,
    RecordType,
    Reject,
    SessionState,
    Upload,
    UploadSession,
    UploadSource,
    UploadState,
    UploadWarning,
    ValidationRule,
)
from apps.ingestions.selectors import record_batch_rejects, rules_history
from apps.tenants.models import ApiKey, Tenant
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.selectors import delivery_recent, endpoint_list


class _AllTenants:
    def __repr__(self) -> str:
        return "UNSCOPED_ALL_TENANTS"


UNSCOPED_ALL_TENANTS = _AllTenants()
Scope = Tenant | _AllTenants


def _tenant_of(tenant: Scope) -> Tenant | None:
    """The scope's tenant, None for every tenant; anything else is a mistake, never a read."""
    if tenant is UNSCOPED_ALL_TENANTS:
        return None
    if not isinstance(tenant, Tenant):
        raise TypeError(f"a dashboard read needs a tenant or UNSCOPED_ALL_TENANTS, not {tenant!r}")
    return tenant


def _scoped(queryset: QuerySet, tenant: Scope, field: str = "tenant") -> QuerySet:
    only = _tenant_of(tenant)
    return queryset if only is None else queryset.filter(**{field: only})


def _files(tenant: Scope) -> QuerySet[Upload]:
    """Uploaded files: a live batch's parts are shown as its batch, never as uploads."""
    return _scoped(Upload.objects.select_related("tenant"), tenant).filter(source=UploadSource.FILE)


def tenant_of_signed_in_key(*, tenant_id, key_prefix: str) -> Tenant | None:
    """The tenant a dashboard session was opened for, while the key it was opened with is
    still active (revoking the key ends the session)."""
    parsed = uuid_or_none(tenant_id)
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
    parsed = uuid_or_none(tenant_id)
    return Tenant.objects.filter(id=parsed).first() if parsed else None


@dataclass(frozen=True)
class UploadFilter:
    """What the uploads list is narrowed to: a state, a type, a file name containing
    `filename` (ignoring case); empty means any."""

    state: str = ""
    record_type: str = ""
    filename: str = ""


def upload_recent(
    *, tenant: Scope, limit: int = 50, only: UploadFilter | None = None
) -> list[Upload]:
    """The newest uploads, newest first; those `only` lets through when given."""
    uploads = _files(tenant)
    if only is not None:
        if only.state:
            uploads = uploads.filter(state=only.state)
        if only.record_type:
            uploads = uploads.filter(record_type=only.record_type)
        if only.filename:
            uploads = uploads.filter(filename__icontains=only.filename)
    return list(uploads.order_by("-created_at", "id")[:limit])


def session_receiving(*, tenant: Scope, now: datetime, limit: int = 50) -> list[UploadSession]:
    """Files still being received (resumable and tus sessions not complete nor expired),
    newest first."""
    sessions = _scoped(UploadSession.objects.select_related("tenant"), tenant)
    sessions = sessions.filter(state=SessionState.OPEN, expires_at__gt=now)
    return list(sessions.order_by("-created_at", "token")[:limit])


def upload_find(*, tenant: Scope, upload_id) -> Upload | None:
    """One upload in scope, or None (also for another tenant's id)."""
    parsed = uuid_or_none(upload_id)
    if parsed is None:
        return None
    return _files(tenant).filter(id=parsed).first()


def reject_list(*, tenant: Scope, upload: Upload, code: str = "") -> QuerySet[Reject]:
    """An upload's rejected rows in line order; of `code` only when given."""
    rejects = _scoped(Reject.objects.filter(upload=upload), tenant, "upload__tenant")
    if code:
        rejects = rejects.filter(code=code)
    return rejects.order_by("line", "id")


def reject_list_of_code(*, tenant: Scope, uploads: list[Upload], code: str) -> QuerySet[Reject]:
    """The rejected rows of `code` in the given uploads: newest upload first, then by line."""
    ids = [u.id for u in uploads if u.rows_rejected]
    rejects = Reject.objects.filter(upload_id__in=ids, code=code).select_related("upload")
    rejects = _scoped(rejects, tenant, "upload__tenant")
    return rejects.order_by("-upload__created_at", "upload_id", "line", "id")


def warning_list(*, tenant: Scope, upload: Upload) -> QuerySet[UploadWarning]:
    """An upload's rows loaded with warnings (of rules that warn) in line order."""
    warnings = UploadWarning.objects.filter(upload=upload)
    return _scoped(warnings, tenant, "upload__tenant").order_by("line", "id")


@dataclass(frozen=True)
class TypeRules:
    """A tenant's rules for one record type: the current version (None: the contract
    alone) and how many versions there have been, ended ones included."""

    record_type: str
    current: ValidationRule | None
    versions: int


def rules_by_type(*, tenant: Scope) -> list[TypeRules] | None:
    """The tenant's rules of every record type, in the types' order, in two queries (never
    the history's schemas); None for every tenant: rules are each tenant's own."""
    only = _tenant_of(tenant)
    if only is None:
        return None
    rules = rules_history(tenant=only)
    current = {rule.record_type: rule for rule in rules.filter(ended_at__isnull=True)}
    # order_by(): the history's order would split the groups by version
    latest = rules.order_by().values_list("record_type").annotate(n=Max("version"))
    versions = dict(latest)
    return [TypeRules(name, current.get(name), versions.get(name, 0)) for name in RecordType.values]


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
    """Rows per second averaged over equal buckets from `start` to `end`, and the rate of
    the fastest upload that ran in the window (its rows over the time it ran)."""

    start: datetime
    end: datetime
    bucket_seconds: int
    rows_per_second: list[float]
    fastest: float = 0.0


def throughput_series(
    *, tenant: Scope, window: timedelta, buckets: int, now: datetime
) -> Throughput:
    """Rows processed per second over the last `window`, in `buckets` equal buckets ending
    at the bucket boundary after `now`. An upload's rows are spread evenly over the time it
    ran (until its last progress write while it still runs); a live batch's records merged
    count in the bucket of their merge (summed in the query: thousands of batches a
    minute)."""
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
    fastest = 0.0
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
        fastest = max(fastest, per_second)
        first = max(0, int((ran_from - start.timestamp()) // size))
        last = min(buckets - 1, int((ran_to - start.timestamp()) // size))
        for index in range(first, last + 1):
            low = start.timestamp() + index * size
            overlap = min(ran_to, low + size) - max(ran_from, low)
            if overlap > 0:
                rows[index] += per_second * overlap
    merged = _scoped(RecordBatch.objects, tenant).filter(merged_at__gte=start, merged_at__lt=end)
    bucket = Floor((Extract("merged_at", "epoch") - start.timestamp()) / size)
    for index, records in merged.values_list(bucket).annotate(Sum("accepted")).order_by():
        rows[int(index)] += records
    return Throughput(
        start=start,
        end=end,
        bucket_seconds=size,
        rows_per_second=[r / size for r in rows],
        fastest=fastest,
    )


def batch_recent(*, tenant: Scope, limit: int = 50) -> list[RecordBatch]:
    """The newest live batches, newest first, with their parts (for their counts) and without
    their rejects and warnings (up to one a record; the errors page reads them)."""
    batches = _scoped(RecordBatch.objects.select_related("tenant"), tenant)
    batches = batches.defer("rejects", "warnings")
    return list(batches.prefetch_related("parts").order_by("-id")[:limit])


def batch_find(*, tenant: Scope, batch_id: int) -> RecordBatch | None:
    """One live batch in scope, or None (also for another tenant's id)."""
    batches = _scoped(RecordBatch.objects.select_related("tenant"), tenant)
    return batches.prefetch_related("parts").filter(id=batch_id).first()


def batch_reject_list(*, tenant: Scope, batch: RecordBatch) -> list[dict]:
    """A batch's rejects by line: those at acceptance, then the merge's (orphans)."""
    only = _tenant_of(tenant)
    if only is not None and only.id != batch.tenant_id:
        return []
    return record_batch_rejects(tenant=batch.tenant, batch=batch)


@dataclass(frozen=True)
class LiveFigures:
    """Live records over the last `window_seconds` (accepted and rejected at acceptance,
    merged) and now (the backlog not merged yet, the age of its oldest batch)."""

    window_seconds: int
    accepted: int
    rejected: int
    merged: int
    backlog: int
    backlog_batches: int
    lag_seconds: float


def live_figures(*, tenant: Scope, window: timedelta, now: datetime) -> LiveFigures:
    """One query, on indexes: batches accepted (`created_at`) or merged (`merged_at`) in the
    window, and the unmerged ones (the partial `batch_backlog` index)."""
    since = now - window
    unmerged = Q(state=BatchState.ACCEPTED)
    recent, merged = Q(created_at__gte=since), Q(merged_at__gte=since)
    batches = _scoped(RecordBatch.objects, tenant).filter(unmerged | recent | merged)
    figures = batches.aggregate(  # names of their own: a field's name is not an aggregate's
        records_accepted=Sum("accepted", filter=recent, default=0),
        records_rejected=Sum("rejected", filter=recent, default=0),
        records_merged=Sum("accepted", filter=merged, default=0),
        backlog=Sum("accepted", filter=unmerged, default=0),
        backlog_batches=Count("id", filter=unmerged),
        oldest=Min("created_at", filter=unmerged),
    )
    oldest = figures["oldest"]
    return LiveFigures(
        window_seconds=int(window.total_seconds()),
        accepted=figures["records_accepted"],
        rejected=figures["records_rejected"],
        merged=figures["records_merged"],
        backlog=figures["backlog"],
        backlog_batches=figures["backlog_batches"],
        lag_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    )


@dataclass(frozen=True)
class TenantSummary:
    """One tenant at a glance, for staff: its files (how many, how many still to finish or
    failed, the newest), their rows, and its live records waiting to be merged."""

    tenant: Tenant
    uploads: int
    active: int
    failed: int
    last_upload_at: datetime | None
    rows_loaded: int
    rows_rejected: int
    rows_pending: int
    backlog: int


_ACTIVE = (UploadState.RECEIVED, UploadState.QUEUED, UploadState.WAITING, UploadState.PROCESSING)


def tenant_summaries(*, tenant: Scope) -> list[TenantSummary] | None:
    """Every tenant's summary, by name, in two grouped queries; None for one tenant's view
    (its page is its summary)."""
    if _tenant_of(tenant) is not None:
        return None
    files = Upload.objects.filter(source=UploadSource.FILE, dry_run=False).order_by()
    by_tenant = {
        row["tenant_id"]: row
        for row in files.values("tenant_id").annotate(
            uploads=Count("id"),
            active=Count("id", filter=Q(state__in=_ACTIVE)),
            failed=Count("id", filter=Q(state=UploadState.FAILED)),
            last_upload_at=Max("created_at"),
            loaded=Sum(F("rows_inserted") + F("rows_updated") + F("rows_unchanged")),
            rejected=Sum("rows_rejected"),
            pending=Sum("rows_pending"),
        )
    }
    unmerged = RecordBatch.objects.filter(state=BatchState.ACCEPTED).order_by()
    backlog = dict(unmerged.values_list("tenant_id").annotate(n=Sum("accepted")))
    summaries = []
    for each in Tenant.objects.order_by("name", "id"):
        row = by_tenant.get(each.id, {})
        summaries.append(
            TenantSummary(
                tenant=each,
                uploads=row.get("uploads", 0),
                active=row.get("active", 0),
                failed=row.get("failed", 0),
                last_upload_at=row.get("last_upload_at"),
                rows_loaded=row.get("loaded") or 0,
                rows_rejected=row.get("rejected") or 0,
                rows_pending=row.get("pending") or 0,
                backlog=backlog.get(each.id) or 0,
            )
        )
    return summaries


@dataclass(frozen=True)
class TenantWebhooks:
    endpoints: list
    deliveries: list[WebhookDelivery]


def webhooks_of(*, tenant: Scope, limit: int = 20) -> TenantWebhooks | None:
    """The tenant's webhook endpoints and latest deliveries; None for every tenant
    (endpoints are each tenant's own)."""
    only = _tenant_of(tenant)
    if only is None:
        return None
    endpoints = list(endpoint_list(tenant=only))
    return TenantWebhooks(endpoints, delivery_recent(tenant=only, limit=limit))


def webhook_delivery_find(*, tenant: Scope, delivery_id: int) -> WebhookDelivery | None:
    """One delivery in scope, or None (also for another tenant's)."""
    deliveries = _scoped(WebhookDelivery.objects.all(), tenant, "endpoint__tenant")
    return deliveries.filter(id=delivery_id).first()
