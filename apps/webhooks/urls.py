"""The webhooks API's routes, under /api/v1/webhooks/."""

from django.urls import path

from apps.webhooks import apis

urlpatterns = [
    path("", apis.WebhookListApi.as_view(), name="webhook-list"),
    path("<uuid:endpoint_id>/", apis.WebhookDetailApi.as_view(), name="webhook-detail"),
    path(
        "<uuid:endpoint_id>/rotate-secret/",
        apis.WebhookRotateSecretApi.as_view(),
        name="webhook-rotate-secret",
    ),
    path("<uuid:endpoint_id>/test/", apis.WebhookTestApi.as_view(), name="webhook-test"),
    path(
        "<uuid:endpoint_id>/deliveries/",
        apis.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "<uuid:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        apis.WebhookRedeliverApi.as_view(),
        name="webhook-redeliver",
    ),
]
