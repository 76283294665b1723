from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "apps.tenants"

    def ready(self) -> None:
        from apps.tenants import schema  # noqa: F401 - registers the API key's security scheme
