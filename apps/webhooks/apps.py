from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"

    def ready(self):
        from apps.core.metrics import metrics_collector_register
        from apps.webhooks.metrics import WebhookCollector

        metrics_collector_register(WebhookCollector())
