"""Tenant-scoped composite foreign keys, which Django models cannot declare."""

from django.db import migrations

FOREIGN_KEYS = [
    ("orders", "orders_customer_fk", "(tenant_id, customer_id)", "customers (tenant_id, customer_id)"),
    ("order_items", "order_items_order_fk", "(tenant_id, order_id)", "orders (tenant_id, order_id)"),
    (
        "order_items",
        "order_items_product_fk",
        "(tenant_id, product_id)",
        "products (tenant_id, product_id)",
    ),
]


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0001_initial")]

    operations = [
        migrations.RunSQL(
            sql=f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY {cols} REFERENCES {ref}",
            reverse_sql=f"ALTER TABLE {table} DROP CONSTRAINT {name}",
        )
        for table, name, cols, ref in FOREIGN_KEYS
    ]
