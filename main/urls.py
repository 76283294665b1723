from django.contrib import admin
from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from apps.core.api import json_not_found, json_server_error
from apps.core.metrics import metrics_view
from apps.ingestions.apis import ContractDetailApi, ContractListApi


@require_safe
def healthz(request):
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request):
    """Ready when the database answers and the broker accepts a connection."""
    from main.celery import app

    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # report, never raise: this is a probe
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status=200 if ready else 503
    )


class SchemaApi(SpectacularAPIView):
    """OpenAPI 3: JSON by default, YAML with ?format=yaml; no key needed."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]
    authentication_classes = []
    permission_classes = []
    throttle_classes = []


urlpatterns = [
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", require_safe(metrics_view)),  # Prometheus; no key
    path("api/v1/schema/", SchemaApi.as_view(), name="schema"),
    path("api/v1/ingest/", include("apps.ingestions.urls")),
    path("api/v1/contract/", ContractListApi.as_view(), name="contract-list"),
    path("api/v1/contract/<str:record_type>/", ContractDetailApi.as_view(), name="contract-detail"),
    path("dashboard/", include("apps.dashboard.urls")),
    path("admin/", admin.site.urls),  # staff only: Django's auth, as the dashboard's staff
]

handler404 = json_not_found
handler500 = json_server_error
