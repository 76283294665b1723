"""The products' month totals become year-to-date rows (`ProductYearToDate`): each month's
row of a group is added to its own month and to every later month of its year."""

import django.db.models.deletion
from django.db import migrations, models

FILL = (
    "INSERT INTO analytics_product_ytd (tenant_id, month, currency, product_id, lines, units, "
    "revenue) SELECT m.tenant_id, g.at AT TIME ZONE 'UTC', m.currency, m.product_id, "
    "sum(m.lines), sum(m.units), sum(m.revenue) FROM analytics_product_months m, "
    "generate_series(m.month AT TIME ZONE 'UTC', date_trunc('year', m.month AT TIME ZONE 'UTC') "
    "+ interval '11 months', interval '1 month') AS g(at) GROUP BY 1, 2, 3, 4",
    "ANALYZE analytics_product_ytd",
)
# back: each month's row is its year-to-date row less the one before it that year
UNFILL = (
    "INSERT INTO analytics_product_months (tenant_id, month, currency, product_id, lines, "
    "units, revenue) SELECT * FROM (SELECT tenant_id, month, currency, product_id, "
    "lines - coalesce(lag(lines) OVER w, 0) AS lines, units - coalesce(lag(units) OVER w, 0) "
    "AS units, revenue - coalesce(lag(revenue) OVER w, 0) AS revenue FROM analytics_product_ytd "
    "WINDOW w AS (PARTITION BY tenant_id, currency, product_id, "
    "date_trunc('year', month AT TIME ZONE 'UTC') ORDER BY month)) m "
    "WHERE (lines, units, revenue) <> (0, 0, 0)",
)


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0004_customer_totals_top"),
        ("tenants", "0003_tenant_rules_serial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProductYearToDate",
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
                "db_table": "analytics_product_ytd",
            },
        ),
        migrations.RunSQL(FILL, UNFILL),
        migrations.DeleteModel(name="ProductMonth"),
    ]
