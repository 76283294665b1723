"""SQL for the final tables, composed from a record type's definition: column lists, the
rows of a source in the final table's order, INSERT, upsert, the parents-exist test, and the
probe for ids already stored. Shared by the merge (`merge`) and the pending hold
(`pending`); nothing here runs a statement but `any_stored`.

A source is a table or a parenthesised subquery with `line` and the type's columns; it is
aliased `d` in the statements built here. `%(tenant)s` is the statements' tenant parameter.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import Cursor, sql

from apps.ingestions.engine.records import RecordSpec


def columns_sql(names: Iterable[str]) -> sql.Composable:
    """`a, b, c` as identifiers."""
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def prefixed_sql(alias: str, names: Iterable[str]) -> sql.Composable:
    """`x.a, x.b, x.c` as identifiers."""
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def parents_exist_sql(spec: RecordSpec, alias: str) -> sql.Composable:
    """`EXISTS (parent) AND ...` for a row aliased `alias`; TRUE for a type without parents.

    `OFFSET 0` keeps each EXISTS a per-row primary-key probe: turned into a join, the
    planner may hash the tenant's whole parent table for every chunk, and a wrong row
    estimate then makes a load quadratic.
    """
    if not spec.parents:
        return sql.SQL("TRUE")
    return sql.SQL(" AND ").join(
        sql.SQL(
            "EXISTS (SELECT 1 FROM {table} p WHERE p.tenant_id = %(tenant)s AND p.{col} = {ref} "
            "OFFSET 0)"
        ).format(
            table=sql.Identifier(parent.table),
            col=sql.Identifier(parent.column),
            ref=sql.Identifier(alias, parent.column),
        )
        for parent in spec.parents
    )


def select_sql(
    spec: RecordSpec, source: sql.Composable, where: sql.Composable | None = None
) -> sql.Composable:
    """The tenant's rows of `source` (aliased `d`) in the final table's column order, in
    the order of its primary key: each row's index entry then goes in next to the one
    before, on a page just read, not on a page anywhere in the index (ids are usually
    random)."""
    query = sql.SQL("SELECT %(tenant)s, {dcols} FROM {source} d").format(
        dcols=prefixed_sql("d", spec.columns), source=source
    )
    if where is not None:
        query = sql.SQL("{} WHERE {}").format(query, where)
    return sql.SQL("{} ORDER BY d.{}").format(query, sql.Identifier(spec.key))


def insert_sql(spec: RecordSpec, select: sql.Composable) -> sql.Composable:
    """A plain INSERT of `select` (see `select_sql`) into the final table."""
    return sql.SQL("INSERT INTO {final} (tenant_id, {cols}) {select}").format(
        final=sql.Identifier(spec.table), cols=columns_sql(spec.columns), select=select
    )


def upsert_sql(spec: RecordSpec, select: sql.Composable) -> sql.Composable:
    """INSERT ... ON CONFLICT DO UPDATE only when something differs; returns `inserted`."""
    data = [c for c in spec.columns if c != spec.key]
    return sql.SQL(
        "INSERT INTO {table} (tenant_id, {cols}) {select} "
        "ON CONFLICT (tenant_id, {key}) DO UPDATE SET ({data}) = ROW({excluded}) "
        "WHERE ({current}) IS DISTINCT FROM ({excluded}) "
        "RETURNING {key}, (xmax = 0) AS inserted"
    ).format(
        table=sql.Identifier(spec.table),
        cols=columns_sql(spec.columns),
        select=select,
        key=sql.Identifier(spec.key),
        data=columns_sql(data),
        excluded=prefixed_sql("excluded", data),
        current=prefixed_sql(spec.table, data),
    )


def any_stored(cursor: Cursor, spec: RecordSpec, source: sql.Composable, tenant_id: str) -> bool:
    """Is the id of any row of `source` in the tenant's final table already?"""
    cursor.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {source} d WHERE EXISTS (SELECT 1 FROM {final} f "
            "WHERE f.tenant_id = %(tenant)s AND f.{key} = d.{key} OFFSET 0))"
        ).format(source=source, final=sql.Identifier(spec.table), key=sql.Identifier(spec.key)),
        {"tenant": tenant_id},
    )
    return cursor.fetchone()[0]
