"""An upload (and the session that becomes one) may be a dry run (`dry_run`).

The columns get a constant default kept in the table (`db_default`): PostgreSQL adds them
without rewriting the table, existing uploads read as real ones, and the live parts'
one-statement insert (`services/record_store.py`), which names its columns, needs no
change. Identical bytes stay one upload among real uploads only: the unique index leaves
dry runs out, so a dry run never stands in for a later real upload of the same bytes, nor
the other way round. The index is built again in this transaction (a partial index, but
over a scan of all of `uploads`, live parts included), which holds off writes to
`uploads` while it runs."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0012_validation_rules")]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="dry_run",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name="uploadsession",
            name="dry_run",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RemoveConstraint(model_name="upload", name="uploads_unique_content"),
        migrations.AddConstraint(
            model_name="upload",
            constraint=models.UniqueConstraint(
                condition=models.Q(("dry_run", False), ("source", "file")),
                fields=("tenant", "record_type", "sha256"),
                name="uploads_unique_content",
            ),
        ),
    ]
