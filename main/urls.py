import threading

from django.contrib import admin
from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.exceptions import ValidationError

from apps.core.api import ProblemJSONRenderer, json_not_found, json_server_error
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
    checks["broker"] = _broker_check(app)
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status=200 if ready else 503
    )


READY_BROKER_SECONDS = 3.0


def _broker_check(app) -> str:
    """ "ok", or why not, within READY_BROKER_SECONDS: a broker that accepts the connection
    and then never answers would hold the probe (and the process's greenlet) for good."""
    outcome = ["error: no answer within 3 s"]

    def check() -> None:
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            outcome[0] = "ok"
        except Exception as exc:  # report, never raise: this is a probe
            outcome[0] = f"error: {type(exc).__name__}"

    checking = threading.Thread(target=check, name="readyz-broker", daemon=True)
    checking.start()
    checking.join(READY_BROKER_SECONDS)
    return outcome[0]


class SchemaApi(SpectacularAPIView):
    """OpenAPI 3: JSON by default, YAML with ?format=yaml; no key needed."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]
    authentication_classes = []
    permission_classes = []
    throttle_classes = []

    def _get_version_parameter(self, request):
        # drf-spectacular names the file after `?version=` in a header: a CR, LF or NUL
        # there was a 500. This API has one schema.
        if "version" in request.GET:
            raise ValidationError({"version": ["This API has one version: leave it out."]})
        return None


# What the documentation pages may load: this server's files only (Redoc's bundle would
# fetch a logo from its maker's site otherwise); inline scripts and styles are their own,
# and Redoc runs a worker from a blob.
_DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; connect-src 'self'"
)


class _PublicDocs:
    """The documentation pages: no key, no quota (they read the schema, also public), and
    nothing loaded from elsewhere."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []
    http_method_names = ["get", "head"]  # an HTML page: DRF's OPTIONS would render its metadata

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(response.data, dict):
            # the problem document as JSON, not through the page's HTML template (which
            # wrote "405 Method Not Allowed" under a problem+json Content-Type)
            response.accepted_renderer = ProblemJSONRenderer()
            response.accepted_media_type = ProblemJSONRenderer.media_type
        response["Content-Security-Policy"] = _DOCS_POLICY
        return response


class SwaggerApi(_PublicDocs, SpectacularSwaggerView):
    pass


class RedocApi(_PublicDocs, SpectacularRedocView):
    template_name = "apidocs/redoc.html"  # without the web fonts of another site


urlpatterns = [
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", require_safe(metrics_view)),  # Prometheus; no key
    path("api/v1/schema/", SchemaApi.as_view(), name="schema"),
    path("api/v1/docs/", SwaggerApi.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/redoc/", RedocApi.as_view(url_name="schema"), name="redoc"),
    path("api/v1/ingest/", include("apps.ingestions.urls")),
    path("api/v1/analytics/", include("apps.analytics.urls")),
    path("api/v1/contract/", ContractListApi.as_view(), name="contract-list"),
    path("api/v1/contract/<str:record_type>/", ContractDetailApi.as_view(), name="contract-detail"),
    path("api/v1/webhooks/", include("apps.webhooks.urls")),
    path("dashboard/", include("apps.dashboard.urls")),
    path("admin/", admin.site.urls),  # staff only: Django's auth, as the dashboard's staff
]

handler404 = json_not_found
handler500 = json_server_error
