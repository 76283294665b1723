"""The Idempotency-Key table, kept by `apps.core.idempotency` for every app's endpoints,
now a model of this app. Its table is the one the ingestions app made (0003): only Django's
state moves here (that app's 0023 lets go of it); the database is not touched."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_rate_limit_window"),
        ("tenants", "0001_initial"),
        ("ingestions", "0003_blobs_idempotency"),  # the table itself
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyKey",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("key", models.CharField(max_length=255)),
                        ("fingerprint", models.CharField(max_length=64)),
                        ("status_code", models.IntegerField(blank=True, null=True)),
                        ("body", models.JSONField(blank=True, null=True)),
                        ("headers", models.JSONField(default=dict)),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "idempotency_keys",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("tenant", "key"), name="idempotency_unique_key"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
