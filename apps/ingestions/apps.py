from django.apps import AppConfig


class IngestionsConfig(AppConfig):
    name = "apps.ingestions"
