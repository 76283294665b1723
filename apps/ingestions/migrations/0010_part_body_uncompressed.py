"""A live part's bytes are stored out of line but not compressed: they are read once, by
the merge, and compressing each of them cost the request more than the space saved."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0009_live_part_bodies")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE uploads ALTER COLUMN body SET STORAGE EXTERNAL",
            "ALTER TABLE uploads ALTER COLUMN body SET STORAGE EXTENDED",
        )
    ]
