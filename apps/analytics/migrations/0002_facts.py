"""The copies analytics reads (`models`), filled from the final tables as they are, in
the migration's transaction (on a big database it takes a while: a few seconds a million
order items); the index 0001 made on `orders` is dropped."""

import django.db.models.deletion
from django.db import migrations, models


FILL = [
    "INSERT INTO analytics_lines (tenant_id, order_item_id, order_id, product_id, order_date, "
    "currency, quantity, line_total) "
    "SELECT i.tenant_id, i.order_item_id, i.order_id, i.product_id, o.order_date, o.currency, "
    "i.quantity, i.line_total FROM order_items i "
    "JOIN orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id",
    "INSERT INTO analytics_orders (tenant_id, order_id, order_date, customer_id, currency, "
    "total, items, units, prev_order_date, prev_in_currency) "
    "SELECT o.tenant_id, o.order_id, o.order_date, o.customer_id, o.currency, o.total_amount, "
    "coalesce(l.items, 0), coalesce(l.units, 0), lag(o.order_date) OVER ("
    "PARTITION BY o.tenant_id, o.customer_id ORDER BY o.order_date, o.order_id), "
    "lag(o.order_date) OVER (PARTITION BY o.tenant_id, o.customer_id, o.currency "
    "ORDER BY o.order_date, o.order_id) "
    "FROM orders o LEFT JOIN (SELECT tenant_id, order_id, count(*) AS items, "
    "sum(quantity) AS units FROM analytics_lines GROUP BY 1, 2) l "
    "ON l.tenant_id = o.tenant_id AND l.order_id = o.order_id",
    "ANALYZE analytics_lines, analytics_orders",
]


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_indexes"),
        ("ingestions", "0016_final_changes"),
        ("tenants", "0003_tenant_rules_serial"),
    ]

    operations = [
        migrations.CreateModel(
            name="LineFact",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "order_item_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("order_item_id", models.UUIDField()),
                ("order_id", models.UUIDField()),
                ("product_id", models.UUIDField()),
                ("order_date", models.DateTimeField()),
                ("currency", models.CharField(max_length=3)),
                ("quantity", models.IntegerField()),
                ("line_total", models.DecimalField(decimal_places=2, max_digits=12)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "db_table": "analytics_lines",
                "indexes": [
                    models.Index(
                        fields=["tenant", "order_date"],
                        include=("product_id", "currency", "quantity", "line_total"),
                        name="analytics_lines_date",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="OrderFact",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "order_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("order_id", models.UUIDField()),
                ("order_date", models.DateTimeField()),
                ("customer_id", models.UUIDField()),
                ("currency", models.CharField(max_length=3)),
                ("total", models.DecimalField(decimal_places=2, max_digits=12)),
                ("items", models.IntegerField()),
                ("units", models.BigIntegerField()),
                ("prev_order_date", models.DateTimeField(null=True)),
                ("prev_in_currency", models.DateTimeField(null=True)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "db_table": "analytics_orders",
                "indexes": [
                    models.Index(
                        fields=["tenant", "order_date"],
                        include=(
                            "customer_id",
                            "currency",
                            "total",
                            "items",
                            "units",
                            "prev_order_date",
                            "prev_in_currency",
                        ),
                        name="analytics_orders_date",
                    ),
                    models.Index(
                        fields=["tenant", "customer_id", "order_date"],
                        name="analytics_orders_customer",
                    ),
                ],
            },
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    # Analytics reads the copies only: the final tables' index goes, and with it its cost
    # to every order a bulk load inserts.
    migrations.RunSQL(
        "DROP INDEX orders_analytics_date",
        "CREATE INDEX orders_analytics_date ON orders (tenant_id, order_date) "
        "INCLUDE (customer_id, currency, total_amount)",
    ),
    ]
