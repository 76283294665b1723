"""The two indexes analytics reads the final tables by (this app has no tables of its own).

- `orders_analytics_date`: a tenant's orders by order_date, carrying what the order-level
  figures need (customer, currency, total), so a range is read from the index alone.
- `order_items_analytics_order`: an order's items, carrying product, quantity and line
  total, so the items of the orders in a range are found without reading every item of
  the tenant.

Both are paid for on every row a bulk load inserts: `make bench` shows the engine with and
without them (its analytics phase). Built in the migration's transaction, which holds off
writes to the two tables while it runs."""

from django.db import migrations

INDEXES = {
    "orders_analytics_date": "ON orders (tenant_id, order_date) "
    "INCLUDE (customer_id, currency, total_amount)",
    "order_items_analytics_order": "ON order_items (tenant_id, order_id) "
    "INCLUDE (product_id, quantity, line_total)",
}


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0013_upload_dry_run")]

    operations = [
        migrations.RunSQL(
            [f"CREATE INDEX {name} {definition}" for name, definition in INDEXES.items()],
            [f"DROP INDEX {name}" for name in INDEXES],
        )
    ]
