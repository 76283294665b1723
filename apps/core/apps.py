from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "apps.core"

    def ready(self):
        from apps.core.ratelimit import parse_rate

        parse_rate(settings.API_RATE_LIMIT)  # a malformed rate stops the start, not each request
