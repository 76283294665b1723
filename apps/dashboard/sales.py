"""The tenant's sales card: revenue per day and the top products of each currency, read
through the analytics selectors and formatted by `formats.sales_json`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

from apps.analytics.params import Range
from apps.analytics.selectors import (
    analytics_daily,
    analytics_last_order_date,
    analytics_top_products_each_currency,
)
from apps.dashboard.formats import sales_json
from apps.tenants.models import Tenant

SALES_DAYS = 30  # revenue per day over the 30 days that end with the latest order
SALES_TOP = 5  # and the top 5 products of each currency


def sales_of(*, tenant: Tenant) -> dict:
    """Revenue per day and the top products of each currency, over the SALES_DAYS days
    that end with the tenant's latest order (UTC days, by order date)."""
    last = analytics_last_order_date(tenant=tenant)
    # the same queries with orders or without: the page's query count stays fixed
    last_day = (last or timezone.now()).astimezone(UTC).date()
    # fewer days when the calendar ends first (an order on 0001-01-02); none after 9999
    first_day = date.fromordinal(max(1, last_day.toordinal() - SALES_DAYS + 1))
    start = datetime.combine(first_day, time(), tzinfo=UTC)
    end = None if last_day == date.max else start + timedelta(days=SALES_DAYS)
    span = Range(start=start, end=end, tz="UTC")
    days = analytics_daily(tenant=tenant, span=span)
    products = analytics_top_products_each_currency(tenant=tenant, span=span, limit=SALES_TOP)
    shown = last_day if last is not None else None
    length = (last_day - first_day).days + 1
    return sales_json(last_day=shown, days=days, products=products, length=length)
