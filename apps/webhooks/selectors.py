"""Reads of the webhooks app: `tenant` first; another tenant's rows are not found."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.ids import uuid_or_none
from apps.tenants.models import Tenant
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint


def endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant=tenant).order_by("created_at", "id")


def endpoint_get(*, tenant: Tenant, endpoint_id) -> WebhookEndpoint | None:
    parsed = uuid_or_none(endpoint_id)
    if parsed is None:
        return None
    return WebhookEndpoint.objects.filter(tenant=tenant, id=parsed).first()


def delivery_list(*, tenant: Tenant, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries, newest first, with their attempts."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint, endpoint__tenant=tenant)
        .select_related("event")
        .prefetch_related("attempt_log")
        .order_by("-id")
    )


def delivery_get(
    *, tenant: Tenant, endpoint: WebhookEndpoint, delivery_id: int
) -> WebhookDelivery | None:
    return delivery_list(tenant=tenant, endpoint=endpoint).filter(id=delivery_id).first()


def delivery_recent(*, tenant: Tenant, limit: int = 20) -> list[WebhookDelivery]:
    """The tenant's latest deliveries to any of its endpoints (the dashboard's list)."""
    return list(
        WebhookDelivery.objects.filter(endpoint__tenant=tenant)
        .select_related("event", "endpoint")
        .order_by("-id")[:limit]
    )
