"""The record definition (`engine/records.py`) and the Django models describe the same
tables: names, columns, limits, nullability, keys and foreign keys agree, type by type."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection

from apps.ingestions.engine import RECORDS
from apps.ingestions.engine.records import NULL, Field, RecordSpec
from apps.ingestions.models import RecordType


def model_of(table: str):
    """The Django model of a table, or None."""
    found = [m for m in apps.get_models() if m._meta.db_table == table]
    assert len(found) <= 1, found
    return found[0] if found else None


def columns_of(model) -> dict[str, object]:
    """A model's columns but the tenant, in the model's order: {column: Django field}."""
    return {
        f.column: f
        for f in model._meta.concrete_fields
        if f.column is not None and f.column != "tenant_id"
    }


def column_type(field: Field) -> str:
    """The column type PostgreSQL has for a field of the definition, as Django writes it."""
    if field.max_length is not None:
        return f"varchar({field.max_length})"
    if field.digits is not None:
        return "numeric({}, {})".format(*field.digits)
    return {"timestamptz": "timestamp with time zone"}.get(field.sql_type, field.sql_type)


def foreign_keys(table: str) -> set[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """The table's foreign keys in the catalog: (columns, parent table, parent columns)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                         ORDER BY k.i),
                   c.confrelid::regclass::text,
                   array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                         ORDER BY k.i)
            FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'f'
            """,
            [table],
        )
        return {(tuple(cols), parent, tuple(refs)) for cols, parent, refs in cursor.fetchall()}


def test_the_record_types_are_the_models_record_type_choices():
    """`RecordType` (the uploads' type column) offers exactly the defined record types."""
    assert list(RecordType.values) == list(RECORDS)


@pytest.mark.parametrize("spec", RECORDS.values(), ids=list(RECORDS))
def test_a_final_table_has_the_columns_and_limits_of_its_definition(spec: RecordSpec):
    """Same table name, same columns in the same order, same types and limits (max_length,
    digits and places), same nullability, and the key `(tenant_id, <key>)`."""
    model = model_of(spec.table)
    assert model is not None, f"no model for table {spec.table}"
    columns = columns_of(model)
    assert list(columns) == list(spec.columns)
    for field in spec.fields:
        column = columns[field.name]
        assert column.db_type(connection) == column_type(field), field.name
        assert column.null == field.nullable, field.name
        text = column.get_internal_type() == "CharField"  # (a UUIDField has one too: 32)
        assert (column.max_length if text else None) == field.max_length, field.name
        digits = getattr(column, "max_digits", None), getattr(column, "decimal_places", None)
        assert digits == (field.digits or (None, None)), field.name
        assert field.required or field.default == NULL or column.has_default(), field.name
    assert tuple(f.column for f in model._meta.pk_fields) == ("tenant_id", spec.key)


@pytest.mark.parametrize("spec", RECORDS.values(), ids=list(RECORDS))
def test_a_pending_table_exists_exactly_for_a_type_with_parents(spec: RecordSpec):
    """A type with parents holds its rows in `pending_<type>`, with the final table's
    columns (and the hold's own); a type without parents has no pending table."""
    model = model_of(spec.pending_table)
    if not spec.holds_pending:
        assert model is None
        return
    assert model is not None, f"no model for table {spec.pending_table}"
    final = columns_of(model_of(spec.table))
    held = columns_of(model)
    assert [c for c in held if c in final] == list(spec.columns)
    for name in spec.columns:
        assert held[name].db_type(connection) == final[name].db_type(connection), name
        assert held[name].null == final[name].null, name
    assert tuple(f.column for f in model._meta.pk_fields) == ("tenant_id", spec.key)


@pytest.mark.django_db
@pytest.mark.parametrize("spec", RECORDS.values(), ids=list(RECORDS))
def test_the_foreign_keys_of_a_final_table_are_its_parents(spec: RecordSpec):
    """Every parent of the definition is a composite foreign key `(tenant_id, column) ->
    parent (tenant_id, column)` in the database, and there is no other but the tenant's."""
    expected = {
        (("tenant_id", p.column), RECORDS[p.record_type].table, ("tenant_id", p.column))
        for p in spec.parents
    }
    found = foreign_keys(spec.table)
    assert {key for key in found if key[1] != "tenants"} == expected
    assert {key for key in found if key[1] == "tenants"} <= {(("tenant_id",), "tenants", ("id",))}
