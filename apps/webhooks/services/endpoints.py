"""A tenant's webhook endpoints: register, change, delete, rotate the secret, send a test
event; and send a delivery again."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import ConflictError, NotFoundError
from apps.tenants.models import Tenant
from apps.webhooks.models import TEST_EVENT, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services.addresses import url_check
from apps.webhooks.services.events import deliveries_wake, event_record
from apps.webhooks.services.signing import secret_expires, secret_generate

_CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || %s, 0))"


@transaction.atomic
def endpoint_create(
    *, tenant: Tenant, url: str, events: list[str], description: str = "", enabled: bool = True
) -> WebhookEndpoint:
    """A new endpoint (with `enabled` false, registered but sent nothing until it is
    enabled); its `secret` is shown to the caller once, in the answer. A tenant has at
    most `WEBHOOK_MAX_ENDPOINTS`: every event is a delivery to each, on workers all
    tenants share."""
    url_check(url)
    with connection.cursor() as cursor:  # creations of one tenant one at a time: the count holds
        cursor.execute(_CREATE_LOCK, [str(tenant.id)])
    limit = settings.WEBHOOK_MAX_ENDPOINTS
    if WebhookEndpoint.objects.filter(tenant=tenant).count() >= limit:
        raise ConflictError(
            f"The tenant has {limit} webhook endpoints, the most it may have: delete one "
            "first, or send more event types to one.",
            code="too_many_endpoints",
        )
    return WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        events=sorted(set(events)),
        description=description,
        enabled=enabled,
        secret=secret_generate(),
    )


@transaction.atomic
def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    """Change what is given, on the row as it is now (locked): a change made meanwhile (a
    rotated secret, another request's fields) is kept. Enabling an endpoint clears its
    failing mark: its pending deliveries are tried again from now on."""
    if url is not None:
        url_check(url)  # resolves the host: before the lock, not while holding it
    locked = _locked(endpoint.id)
    changed = {"updated_at"}
    if url is not None:
        locked.url = url
        changed.add("url")
    if events is not None:
        locked.events = sorted(set(events))
        changed.add("events")
    if description is not None:
        locked.description = description
        changed.add("description")
    if enabled is not None:
        if enabled and not locked.enabled:
            locked.failing_since = None
            changed.add("failing_since")
        locked.enabled = enabled
        changed.add("enabled")
    locked.save(update_fields=sorted(changed))
    return locked


@transaction.atomic
def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    # Locked first: an event being recorded for it (`endpoints_subscribed`) is committed
    # by then, its delivery deleted with the rest; one recorded later does not find it.
    locked = _locked(endpoint.id, delete=True)
    # Then its deliveries: a worker taking one, or logging an attempt's outcome, holds
    # its row while it adds to the log; it is waited for, so that its attempt is deleted
    # with the rest (the log's foreign key is checked at commit), and none starts after.
    deliveries = WebhookDelivery.objects.select_for_update().filter(endpoint_id=locked.id)
    list(deliveries.values_list("id", flat=True))
    locked.delete()  # deliveries with it; events stay for others


@transaction.atomic
def endpoint_secret_rotate(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret; the old one keeps signing beside it for
    `WEBHOOK_SECRET_OVERLAP_SECONDS`, so receivers can switch without losing an event. So
    do older ones still in their time (a second rotation whose first answer was lost, say),
    the newest `_MAX_PREVIOUS` of them."""
    locked = _locked(endpoint.id)
    now = timezone.now()
    expires = now + timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
    kept = [{"secret": locked.secret, "expires_at": expires.isoformat()}]
    kept += [old for old in locked.previous_secrets if secret_expires(old) > now]
    locked.previous_secrets = kept[:_MAX_PREVIOUS]
    locked.secret = secret_generate()
    locked.save(update_fields=["previous_secrets", "secret", "updated_at"])
    return locked


_MAX_PREVIOUS = 5


@transaction.atomic
def endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send the endpoint (only it, whatever its events) a `webhook.test` event."""
    endpoint = _locked(endpoint.id)
    event = event_record(
        tenant_id=endpoint.tenant_id,
        type=TEST_EVENT,
        data=lambda: {"endpoint_id": str(endpoint.id), "url": endpoint.url},
        endpoints=[endpoint],
    )
    return event.deliveries.get()


@transaction.atomic
def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery's event to its endpoint again, as a new delivery (same `webhook-id`,
    so a receiver that has it already can tell)."""
    _locked(delivery.endpoint_id)
    with connection.cursor() as cursor:  # kept from the purge until this commits
        cursor.execute(
            "SELECT 1 FROM webhook_events WHERE id = %s FOR KEY SHARE", [delivery.event_id]
        )
        if cursor.fetchone() is None:
            raise NotFoundError("No such delivery.")  # purged meanwhile
    again = WebhookDelivery.objects.create(
        endpoint_id=delivery.endpoint_id, event_id=delivery.event_id, next_attempt_at=timezone.now()
    )
    transaction.on_commit(lambda: deliveries_wake(delivery_ids=[again.id]))
    return again


def _locked(endpoint_id, *, delete: bool = False) -> WebhookEndpoint:
    """The endpoint's row as it is now, locked (for a change of its own fields, FOR NO KEY
    UPDATE, which events being recorded for it do not wait on); NotFoundError once another
    request has deleted it."""
    rows = WebhookEndpoint.objects.select_for_update(no_key=not delete)
    found = rows.filter(id=endpoint_id).first()
    if found is None:
        raise NotFoundError("No such webhook endpoint.")
    return found
