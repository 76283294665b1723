"""The ingestion API's routes, under /api/v1/ingest/: uploads, sessions, tus, live records
and rules."""

from django.urls import path, register_converter

from apps.ingestions import apis
from apps.ingestions.services import SESSION_TOKEN


class SessionTokenConverter:
    """A session token as sessions are given them; any other path is no route (404), so
    nothing a client wrote there (a NUL byte, say) reaches a query."""

    regex = SESSION_TOKEN.pattern

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SessionTokenConverter, "token")

# Each path also answers without (or, for tus, with) its trailing slash:
# apps.core.middleware.TrailingSlashMiddleware.
urlpatterns = [
    path("comprehensive/", apis.UploadCreateApi.as_view(), name="ingest-comprehensive"),
    path("orders/", apis.LegacyOrdersUploadApi.as_view(), name="ingest-orders-legacy"),
    path("uploads/", apis.UploadListApi.as_view(), name="upload-list"),
    path("uploads/<uuid:upload_id>/", apis.UploadDetailApi.as_view(), name="upload-detail"),
    path("uploads/<uuid:upload_id>/errors/", apis.UploadErrorsApi.as_view(), name="upload-errors"),
    path(
        "uploads/<uuid:upload_id>/warnings/",
        apis.UploadWarningsApi.as_view(),
        name="upload-warnings",
    ),
    path("rules/", apis.RulesListApi.as_view(), name="rules-list"),
    path("rules/<str:record_type>/", apis.RulesDetailApi.as_view(), name="rules-detail"),
    path("sessions/", apis.SessionCreateApi.as_view(), name="session-create"),
    path("sessions/<token:token>/", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<token:token>/status/", apis.SessionStatusApi.as_view(), name="session-status"),
    path("sessions/<token:token>/resume/", apis.SessionResumeApi.as_view(), name="session-resume"),
    path("records/batches/", apis.RecordBatchListApi.as_view(), name="record-batch-list"),
    path(
        "records/batches/<int:batch_id>/",
        apis.RecordBatchDetailApi.as_view(),
        name="record-batch-detail",
    ),
    path(
        "records/batches/<int:batch_id>/errors/",
        apis.RecordBatchErrorsApi.as_view(),
        name="record-batch-errors",
    ),
    path("records/", apis.RecordBatchCreateMixedApi.as_view(), name="record-batch-create-mixed"),
    path(
        "records/<str:record_type>/",
        apis.RecordBatchCreateApi.as_view(),
        name="record-batch-create",
    ),
    path("tus/", apis.TusCreateApi.as_view(), name="tus-create"),
    path("tus/<token:token>", apis.TusUploadApi.as_view(), name="tus-upload"),
]
