"""The webhooks app's writes: endpoints (`endpoints`), the event outbox (`events`), and
delivery (`delivery`, signed by `signing`, to addresses `addresses` allows). Services
never import tasks: they send them by name."""

from apps.webhooks.services.addresses import Target, WebhookUrlError, url_check
from apps.webhooks.services.delivery import delivery_attempt, endpoint_secrets
from apps.webhooks.services.endpoints import (
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_secret_rotate,
    endpoint_test,
    endpoint_update,
)
from apps.webhooks.services.events import (
    WEBHOOK_DELIVER_TASK,
    deliveries_due,
    deliveries_wake,
    endpoints_subscribed,
    event_record,
    webhook_purge,
    webhook_sweep,
)
from apps.webhooks.services.signing import secret_generate, signature, signature_header

__all__ = [
    "WEBHOOK_DELIVER_TASK",
    "Target",
    "WebhookUrlError",
    "deliveries_due",
    "deliveries_wake",
    "delivery_attempt",
    "delivery_redeliver",
    "endpoint_create",
    "endpoint_delete",
    "endpoint_secret_rotate",
    "endpoint_secrets",
    "endpoint_test",
    "endpoint_update",
    "endpoints_subscribed",
    "event_record",
    "secret_generate",
    "signature",
    "signature_header",
    "url_check",
    "webhook_purge",
    "webhook_sweep",
]
