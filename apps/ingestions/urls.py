from django.urls import path

from apps.ingestions import apis

urlpatterns = [
    path("comprehensive/", apis.UploadCreateApi.as_view(), name="ingest-comprehensive"),
    path("orders/", apis.LegacyOrdersUploadApi.as_view(), name="ingest-orders-legacy"),
    path("uploads/", apis.UploadListApi.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>/", apis.UploadDetailApi.as_view(), name="upload-detail"),
    path("uploads/<str:upload_id>/errors/", apis.UploadErrorsApi.as_view(), name="upload-errors"),
    path("sessions/", apis.SessionCreateApi.as_view(), name="session-create"),
    path("sessions/<str:token>/", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<str:token>/status/", apis.SessionStatusApi.as_view(), name="session-status"),
    path("sessions/<str:token>/resume/", apis.SessionResumeApi.as_view(), name="session-resume"),
    path("tus/", apis.TusCreateApi.as_view(), name="tus-create"),
    path("tus/<str:token>", apis.TusUploadApi.as_view(), name="tus-upload"),
]
