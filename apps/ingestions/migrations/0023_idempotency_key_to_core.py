"""The Idempotency-Key model moved to the core app (`apps.core.idempotency`, shared by every
app's endpoints): this app's state lets go of it; its table stays as it is, the core app's
model now (core 0003)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("ingestions", "0022_exact_metadata_numbers"),
        ("core", "0003_idempotency_key"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IdempotencyKey")],
            database_operations=[],
        ),
    ]
