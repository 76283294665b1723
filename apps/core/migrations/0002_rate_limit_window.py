"""Rate-limit counters in PostgreSQL (apps.core.ratelimit, when no Redis is configured)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("core", "0001_cache_table")]

    operations = [
        migrations.CreateModel(
            name="RateLimitWindow",
            fields=[
                ("key", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("hits", models.IntegerField()),
                ("resets_at", models.DateTimeField()),
            ],
            options={"db_table": "core_rate_limit_window"},
        ),
        # Counts written on every request: no WAL for them. A crash empties the table,
        # which only starts every key's window afresh.
        migrations.RunSQL(
            "ALTER TABLE core_rate_limit_window SET UNLOGGED",
            "ALTER TABLE core_rate_limit_window SET LOGGED",
        ),
    ]
