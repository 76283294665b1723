"""Tenant names become unique, ignoring case. Names that already repeat are made unique
first: the oldest tenant keeps its name and each later one becomes "<name> (2)", "<name> (3)"
and so on (skipping names already taken). Only names change; ids and keys stay, so nothing
that uses a tenant (its key, its id) notices. Each rename is printed."""

import django.db.models.functions.text
from django.db import migrations, models

NAME_MAX = 200


def _taken(cursor, name):
    cursor.execute("SELECT 1 FROM tenants WHERE lower(name) = lower(%s)", [name])
    return cursor.fetchone() is not None


def _free_name(cursor, name):
    number = 2
    while True:
        suffix = f" ({number})"
        candidate = name[: NAME_MAX - len(suffix)] + suffix
        if not _taken(cursor, candidate):
            return candidate
        number += 1


def rename_repeated_names(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        # lower() as the constraint has it (PostgreSQL's, not Python's): the same groups
        cursor.execute(
            "SELECT id, name FROM ("
            "  SELECT id, name, row_number() OVER ("
            "    PARTITION BY lower(name) ORDER BY created_at, id) AS nth FROM tenants"
            ") numbered WHERE nth > 1 ORDER BY lower(name), nth"
        )
        renamed = []
        for tenant_id, name in cursor.fetchall():
            new_name = _free_name(cursor, name)
            cursor.execute("UPDATE tenants SET name = %s WHERE id = %s", [new_name, tenant_id])
            renamed.append(f"  tenant {tenant_id}: {name!r} renamed {new_name!r}")
    if renamed:
        print("\n  tenant names are now unique, ignoring case; renamed:\n" + "\n".join(renamed))


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(name="apikey", options={"verbose_name": "API key"}),
        migrations.RunPython(rename_repeated_names, migrations.RunPython.noop, elidable=False),
        migrations.AddConstraint(
            model_name="tenant",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"),
                name="tenants_name_unique_ci",
                violation_error_message="A tenant with this name exists (names ignore case).",
            ),
        ),
    ]
