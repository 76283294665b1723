"""Store uploaded chunks uncompressed: compressing every byte on the way in (and
decompressing it again for the worker) costs more than the disk it saves, and files that
arrive gzip- or zstd-compressed would not shrink anyway."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0004_immediate_tenant_keys")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
            "ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTENDED",
        )
    ]
