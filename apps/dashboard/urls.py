from django.urls import path

from apps.dashboard import pages, views

app_name = "dashboard"
urlpatterns = [
    path("", views.dashboard_index, name="index"),
    path("data/", views.dashboard_data, name="data"),
    path("uploads/<uuid:upload_id>/", pages.upload_detail, name="upload"),
    path("uploads/<uuid:upload_id>/errors/", pages.upload_errors, name="errors"),
    path("uploads/<uuid:upload_id>/warnings/", pages.upload_warnings, name="warnings"),
    path("rejects/", pages.code_rejects, name="rejects"),
    path("batches/<int:batch_id>/errors/", pages.batch_errors, name="batch-errors"),
    path(
        "webhooks/deliveries/<int:delivery_id>/redeliver/",
        views.webhook_redeliver,
        name="webhook-redeliver",
    ),
    path("login/", views.sign_in, name="login"),
    path("staff/login/", views.staff_sign_in, name="staff-login"),
    path("logout/", views.sign_out_view, name="logout"),
]
