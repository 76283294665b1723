"""The tenant's sales card: revenue per day per currency and the top products of each
currency, in the page's data and in every SALES_EVERY-th refresh only."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import shop_load, signed_in, staff_user

pytestmark = pytest.mark.django_db


def _signed_in_tenant(key: str) -> Client:
    client = Client()
    client.get("/dashboard/login/")
    token = client.cookies["csrftoken"].value
    response = client.post("/dashboard/login/", {"api_key": key, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    return client


def test_the_sales_card_has_each_currency_s_revenue_per_day_and_top_products(acme, tmp_path):
    """30 days to the latest order; EUR (two orders) before USD (one); exact strings; the
    polled document carries the card only when asked for it."""
    tenant, key = acme
    shop_load(tenant, tmp_path)
    client = _signed_in_tenant(key)
    sales = client.get("/dashboard/data/", {"sales": "1"}).json()["sales"]
    assert sales["currencies"] == ["EUR", "USD"]
    assert sales["caption"] == "30 days to 2024-03-05 (UTC, by order date)"
    assert len(sales["days"]) == 30
    assert sales["days"][-5:] == [
        {"date": "2024-03-01", "revenue": {"EUR": "35.01", "USD": "0.00"}},
        {"date": "2024-03-02", "revenue": {"EUR": "0.00", "USD": "0.00"}},
        {"date": "2024-03-03", "revenue": {"EUR": "0.00", "USD": "0.00"}},
        {"date": "2024-03-04", "revenue": {"EUR": "0.00", "USD": "0.00"}},
        {"date": "2024-03-05", "revenue": {"EUR": "0.00", "USD": "5.00"}},
    ]
    assert sales["products"] == {
        "EUR": [
            {"label": "Ink (INK)", "units": 3, "revenue": "30.01"},
            {"label": "Pen (PEN)", "units": 2, "revenue": "5.00"},
        ],
        "USD": [{"label": "Pen (PEN)", "units": 2, "revenue": "5.00"}],
    }
    assert client.get("/dashboard/data/").json()["sales"] is None
    page = client.get("/dashboard/").content.decode()
    assert 'id="revenue-chart"' in page
    assert '<option value="EUR">EUR</option>' in page


def test_a_tenant_without_orders_sees_an_empty_card_and_another_tenant_none_of_the_shop(
    acme, globex, tmp_path
):
    """Globex has no orders: no currencies, nothing of Acme's."""
    shop_load(acme[0], tmp_path)
    sales = _signed_in_tenant(globex[1]).get("/dashboard/data/", {"sales": "1"}).json()["sales"]
    assert sales == {"currencies": [], "days": [], "products": {}, "caption": "No orders yet."}


def test_staff_looking_at_every_tenant_get_no_sales_card(acme, tmp_path):
    """Sales are one tenant's: the all-tenants page has no card (one tenant's is there)."""
    shop_load(acme[0], tmp_path)
    client = signed_in(staff_user("ops"))
    assert client.get("/dashboard/data/", {"sales": "1"}).json()["sales"] is None
    chosen = client.get("/dashboard/data/", {"sales": "1", "tenant": str(acme[0].id)}).json()
    assert chosen["sales"]["currencies"] == ["EUR", "USD"]


@pytest.mark.parametrize(
    ("when", "first", "last"),
    [
        ("9999-12-31T12:00:00Z", "9999-12-02", "9999-12-31"),
        ("0001-01-02T12:00:00Z", "0001-01-01", "0001-01-02"),
    ],
)
def test_the_sales_card_of_orders_at_either_end_of_the_calendar(acme, tmp_path, when, first, last):
    """The latest order on the last day there is, or on the second: the card's days stop
    at the calendar's ends (no error), and the order is in them."""
    from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
    from apps.ingestions.services import upload_ingest_path

    tenant, key = acme
    for name, rows in (
        ("customers_1.ndjson", [customer_row()]),
        ("orders_1.ndjson", [order_row(order_id=uid("edge"), order_date=when, currency="EUR")]),
    ):
        path = tmp_path / name
        path.write_bytes(ndjson_bytes(rows))
        assert upload_ingest_path(tenant=tenant, path=path).upload.rows_inserted == 1
    response = _signed_in_tenant(key).get("/dashboard/data/", {"sales": "1"})
    assert response.status_code == 200, response.content
    sales = response.json()["sales"]
    assert (sales["days"][0]["date"], sales["days"][-1]["date"]) == (first, last)
    assert sales["currencies"] == ["EUR"]
    assert sum(float(day["revenue"]["EUR"]) for day in sales["days"]) > 0
