"""A reject lists every problem of its row (`errors`).

The column is added with a constant default, which PostgreSQL records without rewriting
the table: existing rejects read as an empty list, which the API shows as their one
problem (`field`, `code`, `message`), as it does for any reject whose row had one. A
backfill would rewrite every reject ever stored to repeat what is already in the row."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0010_part_body_uncompressed")]

    operations = [
        migrations.AddField(
            model_name="reject",
            name="errors",
            field=models.JSONField(blank=True, db_default=[], default=list),
        ),
    ]
