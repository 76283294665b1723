"""The webhook API's input and output serializers, and its examples."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema_field
from rest_framework import serializers

from apps.core.api import JsonBooleanField
from apps.webhooks.models import DeliveryState, EventType, WebhookEndpoint

_URL_HELP = (
    "where events are POSTed: http or https; a host that resolves to a loopback, link-local "
    "or private address is refused unless the operator allows it"
)


class _DistinctList(serializers.ListField):
    """A list whose repeats are dropped before its length is checked: the same event type
    named six times is one type, not six against the limit of one each."""

    def to_internal_value(self, data):
        return list(dict.fromkeys(super().to_internal_value(data)))


def _events_field(**kwargs) -> serializers.ListField:
    return _DistinctList(
        child=serializers.ChoiceField(EventType.values),
        allow_empty=False,
        max_length=len(EventType.values),
        help_text="the event types to receive",
        **kwargs,
    )


_EXAMPLE_ID = "5f0c2a8e-3b1d-4c6e-9f7a-2d4b6c8e0a13"
CREATE_EXAMPLES = [
    OpenApiExample(
        "uploads that finish",
        value={
            "url": "https://shop.example.com/hooks/ingest",
            "events": ["upload.completed", "upload.completed_with_errors", "upload.failed"],
            "description": "nightly catalogue sync",
        },
        request_only=True,
    ),
    OpenApiExample(
        "registered",
        value={
            "id": _EXAMPLE_ID,
            "url": "https://shop.example.com/hooks/ingest",
            "events": ["upload.completed", "upload.completed_with_errors", "upload.failed"],
            "description": "nightly catalogue sync",
            "enabled": True,
            "failing": False,
            "failing_since": None,
            "deliveries_url": "https://ingest.example.com/api/v1/webhooks/"
            f"{_EXAMPLE_ID}/deliveries/",
            "created_at": "2026-12-01T09:30:00.123456Z",
            "updated_at": "2026-12-01T09:30:00.123456Z",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
        response_only=True,
        status_codes=["201"],
    ),
]


class EndpointCreateInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2048, help_text=_URL_HELP)
    events = _events_field()
    description = serializers.CharField(max_length=500, allow_blank=True, default="")
    enabled = JsonBooleanField(
        default=True,
        help_text="false: registered, but no events are recorded for it until it is enabled",
    )


class EndpointUpdateInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2048, required=False, help_text=_URL_HELP)
    events = _events_field(required=False)
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)
    enabled = JsonBooleanField(
        required=False,
        help_text="false: no events are recorded for it, pending deliveries wait; true again "
        "sends those and clears `failing`",
    )


class EndpointOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(EventType.values))
    description = serializers.CharField()
    enabled = serializers.BooleanField()
    failing = serializers.BooleanField(
        help_text="a delivery used up its last attempt; cleared by the next success"
    )
    failing_since = serializers.DateTimeField(allow_null=True)
    deliveries_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(serializers.URLField())
    def get_deliveries_url(self, endpoint: WebhookEndpoint) -> str:
        path = reverse("webhook-deliveries", kwargs={"endpoint_id": endpoint.id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class EndpointSecretOutputSerializer(EndpointOutputSerializer):
    secret = serializers.CharField(
        help_text="the signing secret (`whsec_` + base64), shown only in this answer"
    )


class AttemptOutputSerializer(serializers.Serializer):
    attempt = serializers.IntegerField(source="number")
    status_code = serializers.IntegerField(allow_null=True, help_text="null: no answer")
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="empty when it was delivered")
    at = serializers.DateTimeField(source="created_at")


class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.CharField(source="event.message_id", help_text="its `webhook-id`")
    event_type = serializers.CharField(source="event.type")
    state = serializers.ChoiceField(DeliveryState.values)
    attempt = serializers.IntegerField(source="attempts", help_text="attempts made so far")
    status_code = serializers.IntegerField(source="last_status_code", allow_null=True)
    latency_ms = serializers.IntegerField(source="last_latency_ms", allow_null=True)
    error = serializers.CharField(source="last_error")
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="when it is tried next (null: delivered or failed)"
    )
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    attempts = AttemptOutputSerializer(source="attempt_log", many=True)
