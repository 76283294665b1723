"""Webhook endpoints and their deliveries in the Django admin: read-only for staff (their
state belongs to the services), and never an endpoint's signing secret."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import StaffReadOnlyAdmin
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(StaffReadOnlyAdmin):
    list_display = ["url", "tenant_link", "enabled", "failing_since", "created_at"]
    list_filter = ["enabled"]
    list_select_related = ["tenant"]
    search_fields = ["url", "tenant__name"]
    ordering = ["-created_at"]
    # no `secret` nor `previous_secrets`: shown once, to the tenant, when made
    fields = readonly_fields = [
        "id",
        "tenant_link",
        "url",
        "events",
        "description",
        "enabled",
        "failing_since",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="tenant", ordering="tenant__name")
    def tenant_link(self, obj) -> str:
        url = reverse("admin:tenants_tenant_change", args=[obj.tenant_id])
        return format_html('<a href="{}">{}</a>', url, obj.tenant.name)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(StaffReadOnlyAdmin):
    list_display = ["id", "event_type", "endpoint", "state", "attempts", "last_status_code"]
    list_display += ["next_attempt_at", "created_at"]
    list_filter = ["state"]
    list_select_related = ["event", "endpoint"]
    ordering = ["-id"]
    fields = readonly_fields = [
        "id",
        "endpoint",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_latency_ms",
        "last_error",
        "delivered_at",
        "created_at",
    ]

    @admin.display(description="event")
    def event_type(self, obj) -> str:
        return obj.event.type
