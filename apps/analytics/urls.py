"""The analytics API's routes, under /api/v1/analytics/."""

from django.urls import path

from apps.analytics import apis

urlpatterns = [
    path("summary/", apis.AnalyticsSummaryApi.as_view(), name="analytics-summary"),
    path("daily/", apis.AnalyticsDailyApi.as_view(), name="analytics-daily"),
    path("top-products/", apis.AnalyticsTopProductsApi.as_view(), name="analytics-top-products"),
    path("customers/top/", apis.AnalyticsTopCustomersApi.as_view(), name="analytics-top-customers"),
]
