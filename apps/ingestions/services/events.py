"""The ingestion events webhooks carry, written in the transaction of the change they
report (the caller's), with `data` the resource exactly as the API shows it
(`apps.ingestions.presenters`). Nothing is built when no endpoint of the tenant takes the
event."""

from __future__ import annotations

from apps.ingestions.models import RecordBatch, Upload, UploadState
from apps.ingestions.presenters import BatchListOutputSerializer, batch_data, upload_data
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.services import endpoints_subscribed, event_record

UPLOAD_EVENTS = {
    UploadState.COMPLETED: "upload.completed",
    UploadState.COMPLETED_WITH_ERRORS: "upload.completed_with_errors",
    UploadState.FAILED: "upload.failed",
}
BATCH_MERGED = "records.batch_merged"
PENDING_EXPIRED = "pending.expired"


def upload_event(*, tenant_id, upload_id, state: str) -> None:
    """`upload.<state>` for an upload that has just finished in that state."""
    event_record(
        tenant_id=tenant_id,
        type=UPLOAD_EVENTS[state],
        data=lambda: upload_data(Upload.objects.get(id=upload_id), None),
    )


def batch_merged_events(*, tenant_id, batch_ids: list[int]) -> None:
    """`records.batch_merged`, one event per batch (the endpoints looked up once)."""
    endpoints = endpoints_subscribed(tenant_id=tenant_id, type=BATCH_MERGED)
    for batch_id in batch_ids if endpoints else ():
        _batch_event(tenant_id=tenant_id, type=BATCH_MERGED, batch_id=batch_id, to=endpoints)


def pending_expired_events(*, tenant_id, upload_ids: list) -> None:
    """`pending.expired` for each upload some of whose held rows have just become orphan
    rejects: the upload, or for parts of a live batch, the batch (once)."""
    endpoints = endpoints_subscribed(tenant_id=tenant_id, type=PENDING_EXPIRED)
    if not endpoints:
        return
    found = Upload.objects.filter(id__in=upload_ids).values_list("id", "batch_id")
    batches = {str(upload_id): batch_id for upload_id, batch_id in found}
    for batch_id in sorted({b for b in batches.values() if b is not None}):
        _batch_event(tenant_id=tenant_id, type=PENDING_EXPIRED, batch_id=batch_id, to=endpoints)
    for upload_id in map(str, upload_ids):
        if upload_id in batches and batches[upload_id] is None:
            event_record(
                tenant_id=tenant_id,
                type=PENDING_EXPIRED,
                data=lambda upload_id=upload_id: upload_data(
                    Upload.objects.get(id=upload_id), None
                ),
                endpoints=endpoints,
            )


def _batch_event(
    *, tenant_id, type: str, batch_id: int, to: list[WebhookEndpoint] | None = None
) -> None:
    def batch() -> RecordBatch:
        return RecordBatch.objects.prefetch_related("parts").get(id=batch_id)

    event_record(
        tenant_id=tenant_id,
        type=type,
        data=lambda: batch_data(batch(), None),
        # too large a body (a reject per record): the batch as the list shows it
        smaller=lambda: BatchListOutputSerializer(batch()).data,
        endpoints=to,
    )
