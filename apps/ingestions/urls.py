from django.urls import path

from apps.ingestions import apis

urlpatterns = [
    path("comprehensive/", apis.UploadCreateApi.as_view(), name="ingest-comprehensive"),
    path("orders/", apis.LegacyOrdersUploadApi.as_view(), name="ingest-orders-legacy"),
    path("uploads/", apis.UploadListApi.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>/", apis.UploadDetailApi.as_view(), name="upload-detail"),
    path("uploads/<str:upload_id>/errors/", apis.UploadErrorsApi.as_view(), name="upload-errors"),
]
