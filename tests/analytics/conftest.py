from __future__ import annotations

from decimal import Decimal

import pytest

from apps.ingestions.engine.testing import (
    customer_row,
    order_item_row,
    order_row,
    product_row,
    uid,
)


@pytest.fixture
def client_for(db):
    """`client_for(tenant)`: a DRF test client sending a fresh key of that tenant."""
    from rest_framework.test import APIClient

    from apps.tenants.services import api_key_rotate

    def make(tenant) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=api_key_rotate(tenant=tenant, revoke_existing=False).raw)
        return client

    return make


@pytest.fixture
def shop(tenant, ndjson, load):
    """A small shop: two customers, two products, three orders (two in EUR, one in USD;
    one on 2024-03-01 23:30 UTC, which is 2024-03-02 in Berlin) and their items."""
    load(
        tenant,
        ndjson(
            "customers_1.ndjson",
            [
                customer_row(customer_id=uid("ada"), name="Ada", email="ada@example.com"),
                customer_row(customer_id=uid("bob"), name="Bob", email="bob@example.com"),
            ],
        ),
    )
    load(
        tenant,
        ndjson(
            "products_1.ndjson",
            [
                product_row(product_id=uid("pen"), sku="PEN", name="Pen", price="2.50"),
                product_row(product_id=uid("ink"), sku="INK", name="Ink", price="10.00"),
            ],
        ),
    )
    orders = [
        ("o1", "ada", "EUR", "25.00", "2024-03-01T10:00:00Z"),
        ("o2", "bob", "EUR", "10.01", "2024-03-01T23:30:00Z"),
        ("o3", "ada", "USD", "5.00", "2024-03-05T12:00:00Z"),
    ]
    load(
        tenant,
        ndjson(
            "orders_1.ndjson",
            [
                order_row(
                    order_id=uid(o),
                    customer_id=uid(c),
                    currency=cur,
                    total_amount=total,
                    order_date=when,
                )
                for o, c, cur, total, when in orders
            ],
        ),
    )
    items = [
        ("i1", "o1", "pen", 2, "2.50"),
        ("i2", "o1", "ink", 2, "10.00"),
        ("i3", "o2", "ink", 1, "10.01"),
        ("i4", "o3", "pen", 2, "2.50"),
    ]
    load(
        tenant,
        ndjson(
            "order_items_1.ndjson",
            [
                order_item_row(
                    order_item_id=uid(i),
                    order_id=uid(o),
                    product_id=uid(p),
                    quantity=q,
                    unit_price=price,
                    line_total=str(q * Decimal(price)),
                )
                for i, o, p, q, price in items
            ],
        ),
    )
    return tenant
