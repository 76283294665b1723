"""The outbox: an event and its deliveries, written in the caller's transaction (that of
the change the event reports), and a wake-up for the workers once it commits.

The wake-up is only that: if it is lost (the broker down, the worker killed), the sweep
finds the delivery in PostgreSQL (`webhook_sweep`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEvent

logger = logging.getLogger("apps.webhooks.services")

WEBHOOK_DELIVER_TASK = "apps.webhooks.tasks.webhook_deliver_task"
# What is left of a resource too large for a body (`WEBHOOK_MAX_PAYLOAD_BYTES`).
_ESSENTIAL = ("id", "url", "type", "state", "dry_run", "rows", "error", "errors_url")


def event_record(
    *,
    tenant_id,
    type: str,
    data: Callable[[], dict],
    smaller: Callable[[], dict] | None = None,
    endpoints: list[WebhookEndpoint] | None = None,
) -> WebhookEvent | None:
    """Record an event of the tenant for each enabled endpoint that takes its type (or for
    `endpoints`), in the caller's transaction; None when none does (then `data`, which
    builds the resource, is not even called). A body over `WEBHOOK_MAX_PAYLOAD_BYTES`
    carries `smaller()` instead (e.g. a batch as the list shows it, without its rejects),
    and failing that the resource's essential fields and `"truncated": true`."""
    if endpoints is None:
        endpoints = endpoints_subscribed(tenant_id=tenant_id, type=type)
    if not endpoints:
        return None
    now = timezone.now()
    payload = _payload(type, now, data(), smaller)
    event = WebhookEvent.objects.create(
        tenant_id=tenant_id, type=type, payload=payload, created_at=now
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(endpoint=e, event=event, next_attempt_at=now) for e in endpoints
    )
    ids = [d.id for d in deliveries]
    transaction.on_commit(lambda: deliveries_wake(delivery_ids=ids))
    return event


# FOR KEY SHARE: an endpoint being deleted is waited for (and then not found), and one
# found is deleted only once this transaction, and the deliveries it adds, are committed
# (they go with it). Changes to an endpoint's other fields do not wait for it.
_SUBSCRIBED = (
    "SELECT * FROM webhook_endpoints WHERE tenant_id = %s AND enabled AND events @> %s "
    "FOR KEY SHARE"
)


def endpoints_subscribed(*, tenant_id, type: str) -> list[WebhookEndpoint]:
    """The tenant's enabled endpoints that take events of `type`, kept from deletion until
    the caller's transaction ends."""
    return list(WebhookEndpoint.objects.raw(_SUBSCRIBED, [tenant_id, [type]]))


def _payload(type: str, now, data: dict, smaller: Callable[[], dict] | None) -> str:
    stamp = now.isoformat().replace("+00:00", "Z")
    limit = settings.WEBHOOK_MAX_PAYLOAD_BYTES

    def body(resource: dict) -> str:
        document = {"type": type, "timestamp": stamp, "data": resource}
        return json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False)

    text = body(data)
    if len(text.encode()) > limit and smaller is not None:
        text = body(smaller())
    if len(text.encode()) > limit:
        text = body({**{k: data[k] for k in _ESSENTIAL if k in data}, "truncated": True})
    return text


def deliveries_wake(*, delivery_ids: list[int], countdown: float | None = None) -> int:
    """Send a worker each delivery; returns how many were sent. With the broker away they
    stay due in PostgreSQL and the sweep sends them."""
    sent = 0
    for delivery_id in delivery_ids:
        try:
            current_app.send_task(
                WEBHOOK_DELIVER_TASK,
                args=[delivery_id],
                countdown=countdown,
                queue=settings.WEBHOOK_QUEUE or None,
            )
        except Exception:  # kombu raises several kinds when the broker is unreachable
            logger.warning("webhook delivery %s not sent: the sweep will", delivery_id)
            break
        sent += 1
    return sent


def deliveries_due(*, limit: int = 1000) -> list[int]:
    """Pending deliveries whose time has come (their wake-up lost, their worker killed)."""
    return list(
        WebhookDelivery.objects.filter(
            state=DeliveryState.PENDING,
            next_attempt_at__lte=timezone.now(),
            endpoint__enabled=True,
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )


def webhook_sweep() -> int:
    """Send a worker every delivery that is due; returns how many. A periodic job (beat, and
    every worker's housekeeping); sending one twice is harmless (`delivery_attempt` takes
    a delivery only when it is due, and moves it a lease ahead)."""
    return deliveries_wake(delivery_ids=deliveries_due())


def webhook_purge(*, batch: int = 1000) -> int:
    """Delete the events older than `WEBHOOK_RETENTION_DAYS` none of whose deliveries is
    still pending, with their deliveries and their attempts; returns how many events. A
    periodic job (beat), a batch at a time so that no transaction grows long."""
    days = settings.WEBHOOK_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    pending = WebhookDelivery.objects.filter(event_id=OuterRef("id"), state=DeliveryState.PENDING)
    purged = 0
    while True:
        # Locked (a redeliver adding to one waits, then finds it gone: `delivery_redeliver`),
        # and one a redeliver holds is left for the next run. A delivery a redeliver added
        # just before the lock keeps its event: looked for again once it is locked.
        old = (
            WebhookEvent.objects.filter(created_at__lt=cutoff)
            .exclude(Exists(pending))
            .order_by("created_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:batch]
        )
        with transaction.atomic():
            ids = set(old)
            if not ids:
                return purged
            ids -= set(
                WebhookDelivery.objects.filter(
                    event_id__in=ids, state=DeliveryState.PENDING
                ).values_list("event_id", flat=True)
            )
            WebhookEvent.objects.filter(id__in=ids).delete()  # deliveries, attempts with them
        purged += len(ids)
