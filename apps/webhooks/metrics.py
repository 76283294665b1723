"""Webhook figures, read from the database when Prometheus scrapes `/metrics` (as the
upload figures are: every process reports the same truth)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric

from apps.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)


class WebhookCollector:
    def collect(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "webhook_deliveries",
            "Webhook deliveries by state: pending (to be sent or retried), delivered, failed "
            "(every attempt used up).",
            labels=["state"],
        )
        failing = GaugeMetricFamily(
            "webhook_endpoints_failing", "Webhook endpoints marked failing."
        )
        try:
            counts = dict(
                WebhookDelivery.objects.values_list("state").annotate(n=Count("id")).order_by()
            )
            failing_count = WebhookEndpoint.objects.filter(failing_since__isnull=False).count()
        except DatabaseError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            return
        for state in DeliveryState.values:
            deliveries.add_metric([state], counts.get(state, 0))
        failing.add_metric([], failing_count)
        yield deliveries
        yield failing
