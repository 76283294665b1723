"""The final tables' change feed (`engine.changes`). Its id arrays are stored as they
are: random ids do not compress, and trying costs the merge time for nothing."""

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingestions", "0015_live_backlog_totals"),
        ("tenants", "0003_tenant_rules_serial"),
    ]

    operations = [
        migrations.CreateModel(
            name="FinalChangeWake",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        serialize=False,
                        to="tenants.tenant",
                    ),
                ),
                ("sent_at", models.DateTimeField()),
            ],
            options={
                "db_table": "final_change_wakes",
            },
        ),
        migrations.CreateModel(
            name="FinalChange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("record_type", models.CharField(max_length=16)),
                (
                    "keys",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.UUIDField(), size=None
                    ),
                ),
                ("created_at", models.DateTimeField()),
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
                "db_table": "final_changes",
                "indexes": [models.Index(fields=["tenant", "id"], name="final_changes_tenant")],
            },
        ),
        migrations.RunSQL(
            "ALTER TABLE final_changes ALTER COLUMN keys SET STORAGE EXTERNAL",
            migrations.RunSQL.noop,
        ),
    ]
