"""Totals analytics ranks from, filled from the copies as they are: products per month
and over all months, customers over all their orders (see `models`)."""

import django.db.models.deletion
from django.db import migrations, models


FILL = [
    "INSERT INTO analytics_product_months (tenant_id, month, currency, product_id, lines, "
    "units, revenue) SELECT tenant_id, date_trunc('month', order_date AT TIME ZONE 'UTC') "
    "AT TIME ZONE 'UTC', currency, product_id, count(*), sum(quantity), sum(line_total) "
    "FROM analytics_lines GROUP BY 1, 2, 3, 4",
    "INSERT INTO analytics_product_totals (tenant_id, currency, product_id, lines, units, "
    "revenue) SELECT tenant_id, currency, product_id, sum(lines), sum(units), sum(revenue) "
    "FROM analytics_product_months GROUP BY 1, 2, 3",
    "INSERT INTO analytics_customer_totals (tenant_id, customer_id, currency, orders, revenue) "
    "SELECT tenant_id, customer_id, currency, count(*), sum(total) FROM analytics_orders "
    "GROUP BY 1, 2, 3",
    "ANALYZE analytics_product_months, analytics_product_totals, analytics_customer_totals",
]


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_facts"),
        ("tenants", "0003_tenant_rules_serial"),
    ]

    operations = [
        migrations.CreateModel(
            name="CustomerTotal",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "customer_id",
                        "currency",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("customer_id", models.UUIDField()),
                ("currency", models.CharField(max_length=3)),
                ("orders", models.IntegerField()),
                ("revenue", models.DecimalField(decimal_places=2, max_digits=20)),
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
                "db_table": "analytics_customer_totals",
            },
        ),
        migrations.CreateModel(
            name="ProductMonth",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "month",
                        "currency",
                        "product_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("month", models.DateTimeField()),
                ("currency", models.CharField(max_length=3)),
                ("product_id", models.UUIDField()),
                ("lines", models.IntegerField()),
                ("units", models.BigIntegerField()),
                ("revenue", models.DecimalField(decimal_places=2, max_digits=20)),
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
                "db_table": "analytics_product_months",
            },
        ),
        migrations.CreateModel(
            name="ProductTotal",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "tenant_id",
                        "currency",
                        "product_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("currency", models.CharField(max_length=3)),
                ("product_id", models.UUIDField()),
                ("lines", models.IntegerField()),
                ("units", models.BigIntegerField()),
                ("revenue", models.DecimalField(decimal_places=2, max_digits=20)),
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
                "db_table": "analytics_product_totals",
            },
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    ]
