"""Webhooks: a tenant's endpoints, the event outbox, and each event's delivery to each
endpoint (with its attempts).

An event and its deliveries are written in the transaction of the change they report (the
outbox); workers then deliver them, at least once, from these rows (docs/webhooks.md)."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from apps.core.models import BaseModel
from apps.tenants.models import Tenant


class EventType(models.TextChoices):
    UPLOAD_COMPLETED = "upload.completed"
    UPLOAD_COMPLETED_WITH_ERRORS = "upload.completed_with_errors"
    UPLOAD_FAILED = "upload.failed"
    RECORDS_BATCH_MERGED = "records.batch_merged"
    PENDING_EXPIRED = "pending.expired"


TEST_EVENT = "webhook.test"  # sent by `POST /webhooks/{id}/test/` to that endpoint only


class WebhookEndpoint(BaseModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    events = ArrayField(models.CharField(max_length=64))
    description = models.CharField(max_length=500, blank=True, default="")
    enabled = models.BooleanField(default=True)
    # The signing secrets ("whsec_" + base64): HMAC needs them as they are, so they are
    # kept, never shown again after the answer that created them.
    secret = models.CharField(max_length=100)
    # Rotated-out secrets that still sign until their time is up, newest first:
    # [{"secret": ..., "expires_at": ISO 8601}] (a second rotation keeps the first's).
    previous_secrets = models.JSONField(default=list, blank=True)
    # Set when a delivery used up its last attempt; cleared by the next success.
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_endpoints"

    def __str__(self) -> str:
        return f"webhook {self.id} ({self.url})"

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


class WebhookEvent(models.Model):
    """One event, as sent: `payload` is the body's exact text, signed as it is."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=64)
    payload = models.TextField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "webhook_events"

    def __str__(self) -> str:
        return f"{self.type} {self.message_id}"

    @property
    def message_id(self) -> str:
        """The `webhook-id` header: the same on every attempt, for receivers to dedupe."""
        return f"msg_{self.id.hex}"


class DeliveryState(models.TextChoices):
    PENDING = "pending"  # to be sent at `next_attempt_at` (or being sent: see there)
    DELIVERED = "delivered"
    FAILED = "failed"  # its last attempt failed


class WebhookDelivery(models.Model):
    """An event's delivery to one endpoint. `next_attempt_at` is when a worker may take it
    next; a worker taking it moves it a lease ahead, so a worker killed mid-request leaves
    it to be taken again once the lease is over."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "webhook_deliveries"
        indexes = [
            # the sweep: pending deliveries that are due
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_deliveries_due",
                condition=models.Q(state="pending"),
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_deliveries_endpoint"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.id} ({self.state})"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, as the delivery log shows it."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
