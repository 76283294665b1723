"""The analytics API, read-only and per tenant: totals over a range, the same per day, top
products and top customers. Money is a decimal string per currency, never a float, and
never summed across currencies. See docs/analytics.md for what counts."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from apps.analytics import params
from apps.analytics.selectors import (
    Totals,
    analytics_daily,
    analytics_summary,
    analytics_top_customers,
    analytics_top_products,
)
from apps.core.api import TenantApiView, problem_responses

_MONEY = "a decimal string per ISO 4217 currency code, exact (never a float)"


def _money(amounts: dict) -> dict[str, str]:
    return {code: f"{amount:.2f}" for code, amount in sorted(amounts.items())}


def _totals_data(totals: Totals) -> dict:
    return {
        "orders": totals.orders,
        "items": totals.items,
        "units": totals.units,
        "customers": totals.customers,
        "revenue": _money(totals.revenue),
        "average_order_value": _money(totals.average_order_value),
    }


class _MoneyField(serializers.DictField):
    def __init__(self, **kwargs):
        super().__init__(child=serializers.CharField(), **kwargs)


class TotalsOutputSerializer(serializers.Serializer):
    orders = serializers.IntegerField(help_text="orders with their order_date in the range")
    items = serializers.IntegerField(help_text="order items of those orders")
    units = serializers.IntegerField(help_text="the items' quantities, summed")
    customers = serializers.IntegerField(help_text="distinct customers of those orders")
    revenue = _MoneyField(help_text=f"the orders' total_amount summed: {_MONEY}")
    average_order_value = _MoneyField(
        help_text=f"revenue over orders in each currency, rounded half up to the cent: {_MONEY}"
    )


class DayOutputSerializer(TotalsOutputSerializer):
    date = serializers.CharField(
        help_text="the day, in the `tz` asked for (YYYY-MM-DD; an order at either end of "
        "the years 1 to 9999 may fall on `0000-12-31` or `+10000-01-01` there)"
    )


class DailyOutputSerializer(serializers.Serializer):
    tz = serializers.CharField()
    days = DayOutputSerializer(many=True, help_text="days with orders, oldest first")


class ProductOutputSerializer(serializers.Serializer):
    product_id = serializers.UUIDField()
    sku = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField()
    units = serializers.IntegerField(help_text="quantities sold in orders of this currency")
    revenue = serializers.CharField(help_text="the items' line_total summed, a decimal string")


class TopProductsOutputSerializer(serializers.Serializer):
    by = serializers.ChoiceField(params.BY_CHOICES)
    products = ProductOutputSerializer(many=True)


class CustomerOutputSerializer(serializers.Serializer):
    customer_id = serializers.UUIDField()
    name = serializers.CharField()
    email = serializers.CharField()
    currency = serializers.CharField()
    orders = serializers.IntegerField()
    revenue = serializers.CharField(help_text="the orders' total_amount summed, a decimal string")


class TopCustomersOutputSerializer(serializers.Serializer):
    customers = CustomerOutputSerializer(many=True)


_RANGE = [
    OpenApiParameter(
        "from",
        str,
        description="first day (`2024-01-31`) or instant (ISO 8601 timestamp), inclusive; "
        "a timestamp without an offset is in `tz`. Default: the first order.",
        examples=[OpenApiExample("a day", value="2024-01-01")],
    ),
    OpenApiParameter(
        "to",
        str,
        description="last day (the whole day) or instant, inclusive. Default: the last order.",
        examples=[OpenApiExample("a day", value="2024-01-31")],
    ),
    OpenApiParameter(
        "tz",
        str,
        description="the IANA time zone that dates (and days) are in; default UTC",
        examples=[OpenApiExample("UTC", value="UTC")],
    ),
]
_CURRENCY = OpenApiParameter(
    "currency",
    str,
    pattern="^[A-Z]{3}$",
    description="only orders in this ISO 4217 currency",
    examples=[OpenApiExample("euro", value="EUR")],
)
_LIMIT = OpenApiParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": params.LIMIT_MAX},
    description=f"how many (default {params.LIMIT_DEFAULT})",
)
_ERRORS = problem_responses(400, 401, 429)
_SUMMARY_EXAMPLE = {
    "orders": 3,
    "items": 7,
    "units": 12,
    "customers": 2,
    "revenue": {"EUR": "150.00", "USD": "19.99"},
    "average_order_value": {"EUR": "75.00", "USD": "19.99"},
}


class AnalyticsSummaryApi(TenantApiView):
    @extend_schema(
        operation_id="analytics_summary",
        summary="Totals over a range of order dates",
        tags=["analytics"],
        description="Totals over the orders whose order_date is in the range.",
        parameters=[*_RANGE, _CURRENCY],
        responses={200: TotalsOutputSerializer, **_ERRORS},
        examples=[OpenApiExample("two currencies", value=_SUMMARY_EXAMPLE, response_only=True)],
    )
    def get(self, request):
        span = params.read_range(request.query_params)
        currency = params.read_currency(request.query_params)
        totals = analytics_summary(tenant=self.tenant, span=span, currency=currency)
        return Response(_totals_data(totals))


class AnalyticsDailyApi(TenantApiView):
    @extend_schema(
        operation_id="analytics_daily",
        summary="Totals per day",
        tags=["analytics"],
        description="The summary's totals per day (in `tz`), for the days that have orders.",
        parameters=[*_RANGE, _CURRENCY],
        responses={200: DailyOutputSerializer, **_ERRORS},
        examples=[
            OpenApiExample(
                "one day",
                value={"tz": "UTC", "days": [{"date": "2024-01-31", **_SUMMARY_EXAMPLE}]},
                response_only=True,
            )
        ],
    )
    def get(self, request):
        span = params.read_range(request.query_params)
        currency = params.read_currency(request.query_params)
        days = analytics_daily(tenant=self.tenant, span=span, currency=currency)
        data = [{"date": day.isoformat(), **_totals_data(totals)} for day, totals in days]
        return Response({"tz": span.tz, "days": data})


class AnalyticsTopProductsApi(TenantApiView):
    @extend_schema(
        operation_id="analytics_top_products",
        summary="Top products by revenue or units",
        tags=["analytics"],
        description="Units sold and revenue per product and currency (one entry per pair: "
        "currencies are never summed), ranked by revenue or units.",
        parameters=[
            *_RANGE,
            _CURRENCY,
            _LIMIT,
            OpenApiParameter(
                "by", str, enum=list(params.BY_CHOICES), description="rank by (default revenue)"
            ),
        ],
        responses={200: TopProductsOutputSerializer, **_ERRORS},
        examples=[
            OpenApiExample(
                "by revenue",
                value={
                    "by": "revenue",
                    "products": [
                        {
                            "product_id": "0b6f7c1e-3d7a-4c1e-9a53-2f0a4c8f1b2d",
                            "sku": "SKU-1",
                            "name": "Widget",
                            "currency": "EUR",
                            "units": 5,
                            "revenue": "99.95",
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        span = params.read_range(request.query_params)
        currency = params.read_currency(request.query_params)
        limit, by = params.read_limit(request.query_params), params.read_by(request.query_params)
        ranks = analytics_top_products(
            tenant=self.tenant, span=span, limit=limit, by=by, currency=currency
        )
        products = [
            {
                "product_id": str(rank.product_id),
                "sku": rank.sku,
                "name": rank.name,
                "currency": rank.currency,
                "units": rank.units,
                "revenue": f"{rank.revenue:.2f}",
            }
            for rank in ranks
        ]
        return Response({"by": by, "products": products})


class AnalyticsTopCustomersApi(TenantApiView):
    @extend_schema(
        operation_id="analytics_top_customers",
        summary="Top customers by revenue",
        tags=["analytics"],
        description="Orders and revenue per customer and currency (one entry per pair), "
        "ranked by revenue.",
        parameters=[*_RANGE, _CURRENCY, _LIMIT],
        responses={200: TopCustomersOutputSerializer, **_ERRORS},
        examples=[
            OpenApiExample(
                "one customer",
                value={
                    "customers": [
                        {
                            "customer_id": "5d0c1f7e-8a43-4b8e-9d1c-6f2a7b3c4d5e",
                            "name": "Ada Lovelace",
                            "email": "ada@example.com",
                            "currency": "EUR",
                            "orders": 2,
                            "revenue": "150.00",
                        }
                    ]
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        span = params.read_range(request.query_params)
        currency = params.read_currency(request.query_params)
        limit = params.read_limit(request.query_params)
        ranks = analytics_top_customers(
            tenant=self.tenant, span=span, limit=limit, currency=currency
        )
        customers = [
            {
                "customer_id": str(rank.customer_id),
                "name": rank.name,
                "email": rank.email,
                "currency": rank.currency,
                "orders": rank.orders,
                "revenue": f"{rank.revenue:.2f}",
            }
            for rank in ranks
        ]
        return Response({"customers": customers})
