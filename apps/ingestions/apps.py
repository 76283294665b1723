from django.apps import AppConfig


class IngestionsConfig(AppConfig):
    name = "apps.ingestions"

    def ready(self):
        from apps.core.metrics import metrics_collector_register
        from apps.ingestions.metrics import UploadCollector

        metrics_collector_register(UploadCollector())
