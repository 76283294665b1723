"""The one index analytics reads the final tables by (this app has no tables of its own):
`orders_analytics_date`, a tenant's orders by order_date carrying what the order-level
figures need (customer, currency, total), so the orders of a range are read from the index
alone.

Order items get no index: one on (tenant_id, order_id), even carrying product, quantity
and line total, made bulk loads of items about 30% slower in `make bench` and made no long
range faster (a year of orders joins their items by hashing either way). Every index is
paid for on every row a bulk load inserts: `make bench` shows the engine with and without
this one (its analytics phase). Built in the migration's transaction, which holds off
writes to `orders` while it runs."""

from django.db import migrations

INDEXES = {
    "orders_analytics_date": "ON orders (tenant_id, order_date) "
    "INCLUDE (customer_id, currency, total_amount)",
}


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0013_upload_dry_run")]

    operations = [
        migrations.RunSQL(
            [f"CREATE INDEX {name} {definition}" for name, definition in INDEXES.items()],
            [f"DROP INDEX {name}" for name in INDEXES],
        )
    ]
