from apps.ingestions.engine.testing import customer_row, order_row, uid
from apps.ingestions.models import Customer, Order


def test_order_is_pending_until_its_customer_arrives(tenant, ndjson, load):
    """An order whose customer comes in a later upload is held, then inserted."""
    orders = load(tenant, ndjson("orders_1.ndjson", [order_row(customer_id=uid("c9"))]))
    assert (orders.rows_pending, orders.rows_inserted) == (1, 0)
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("c9"))]))
    orders.refresh_from_db()
    assert (orders.rows_pending, orders.rows_inserted) == (0, 1)
    assert Order.objects.filter(tenant=tenant, customer_id=uid("c9")).count() == 1
    assert Customer.objects.filter(tenant=tenant).count() == 1
