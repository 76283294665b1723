"""Foreign keys checked per chunk by the engine, instead of per row by PostgreSQL.

PostgreSQL checks a foreign key with one trigger call per inserted row: an executor start
and end around one index probe and one row lock. On order_items (two keys) that is about
70% of a bulk INSERT's time. The same check for a whole chunk is one statement per key: lock
the chunk's distinct parents `FOR KEY SHARE` (the lock the per-row check takes) and count
them. When every parent is there and locked, the chunk is inserted with
`session_replication_role = replica` for that one statement, which skips the per-row checks.

The guarantee is the per-row check's: a parent found and locked can be neither deleted nor
given another key until the upload commits, and then the parent side's checks (which run,
as always, for every other writer) see the new rows. A parent missing from the chunk's
count sends the chunk the careful way, which holds such rows as pending.

Used only where that is exactly what PostgreSQL would have done (`ParentLocks.prepare`):
the role may set `session_replication_role` (a superuser, or `GRANT SET ON PARAMETER` on
PostgreSQL 15 and newer), the session runs it as `origin`, the table is not partitioned,
every foreign key of the table has a shape this module checks, its parents are plain
tables (no inheritance children, no row security) the role may lock, and no trigger or
rule at all fires on INSERT besides those keys' own checks (one that fires "always" would
run in replica mode, where the keys of whatever it writes go unchecked). Otherwise, or
when the caller turns it off, every row is checked by PostgreSQL as before; the result is
the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.checks import NULL
from apps.ingestions.engine.records import RecordSpec

# Sources of at most this many rows lock their parents through one array of ids; bigger
# ones (a whole file) through a tuplestore, which needs no array in memory.
ARRAY_ROWS = 100_000

# One row per foreign key of the table: whether its parent is a plain table the role may
# lock `FOR KEY SHARE` (which needs UPDATE) and sees whole (no row security, no inheritance
# children: PostgreSQL checks `ONLY` the parent), the parent, and the child and parent
# columns in order.
_FOREIGN_KEYS = """
SELECT
  p.relkind = 'r' AND NOT p.relrowsecurity
    AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = p.oid)
    AND has_table_privilege(p.oid, 'SELECT') AND has_any_column_privilege(p.oid, 'UPDATE'),
  c.confrelid::regclass::text, c.confmatchtype,
  array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
  array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint c JOIN pg_class p ON p.oid = c.confrelid
WHERE c.conrelid = %(table)s::regclass AND c.contype = 'f'
ORDER BY c.conname
"""

# What replica mode would change for an INSERT into the table, besides its foreign keys'
# own checks: any trigger or rule on INSERT that is not disabled ('D'). One enabled in
# `origin` mode ('O') would be skipped, one in `replica` mode ('R') started; one that
# fires always ('A') would run in replica mode, where the foreign keys of whatever it
# writes go unchecked. 4 is TRIGGER_TYPE_INSERT.
_OTHERS = """
SELECT
  has_parameter_privilege('session_replication_role', 'SET')
    AND current_setting('session_replication_role') = 'origin',
  (SELECT relkind = 'p' FROM pg_class WHERE oid = %(table)s::regclass),
  EXISTS (SELECT 1 FROM pg_trigger t
          WHERE t.tgrelid = %(table)s::regclass AND t.tgenabled <> 'D'
            AND t.tgtype & 4 <> 0
            AND NOT (t.tgisinternal AND t.tgconstraint IN (
              SELECT oid FROM pg_constraint
              WHERE conrelid = %(table)s::regclass AND contype = 'f'))),
  EXISTS (SELECT 1 FROM pg_rewrite r
          WHERE r.ev_class = %(table)s::regclass AND r.ev_type = '3'
            AND r.ev_enabled <> 'D')
"""


@dataclass(frozen=True, slots=True)
class _Key:
    parent: str  # the parent table, as PostgreSQL names it (schema-qualified if needed)
    column: str | None  # the row's column that references the parent; None: constants only
    match: tuple[tuple[str, str], ...]  # (parent column, the row's column), in key order


# The columns an INSERT fills with one value for all its rows, and the statement
# parameters that carry it: the tenant on every table, and the upload on the pending ones.
FINAL = (("tenant_id", "tenant"),)
HELD = (("tenant_id", "tenant"), ("upload_id", "upload"))


@dataclass(frozen=True, slots=True)
class ParentLocks:
    """The foreign keys of one table the engine inserts into (a final table, or a pending
    one), in a form it checks per chunk."""

    table: str
    keys: tuple[_Key, ...]
    constants: tuple[tuple[str, str], ...] = FINAL

    @classmethod
    def prepare(
        cls,
        cursor: Cursor,
        spec: RecordSpec,
        *,
        table: str | None = None,
        constants: tuple[tuple[str, str], ...] = FINAL,
    ) -> ParentLocks | None:
        """The keys of `table` (the spec's final table by default) when the engine may
        check them itself, else None. `constants`: see `FINAL` and `HELD`.

        Takes the table's ROW EXCLUSIVE lock first (the one its INSERT takes anyway): no
        trigger, rule or key can then be added or changed until the transaction ends, so
        what is read here stays true for the whole upload.
        """
        table = table or spec.table
        params = {"table": table}
        cursor.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
        cursor.execute(_OTHERS, params)
        allowed, partitioned, triggers, rules = cursor.fetchone()
        if not allowed or partitioned or triggers or rules:
            return None
        cursor.execute(_FOREIGN_KEYS, params)
        keys = []
        fixed = dict(constants)
        for usable, parent, match_type, columns, refs in cursor.fetchall():
            key = _key(spec, fixed, parent, match_type, columns, refs) if usable else None
            if key is None:
                return None
            keys.append(key)
        return cls(table, tuple(keys), constants)

    def lock(self, cursor: Cursor, source: sql.Composable, params: dict, *, rows: int) -> bool:
        """Lock the parents of the `rows` rows of `source` (aliased `d` inside) FOR KEY
        SHARE; True when every one of them exists (and is now locked until the
        transaction ends). `params` has the constants' values."""
        if not self.keys:
            return True
        cursor.execute(self.statement(source, rows=rows), params)
        return bool(cursor.fetchone()[0])

    def lock_ids(
        self,
        cursor: Cursor,
        source: sql.Composable,
        params: dict,
        *,
        rows: int,
        named: dict[str, set[str]],
        locked: Locked,
    ) -> Locked | None:
        """`lock` for a chunk whose parents' ids the parse collected for some columns
        (`named`): of those, it probes only the ids not in `locked` (the ones this
        transaction holds already, see `remember`), sent as an array; the other keys'
        ids it reads from `source`, as `lock` does. The ids of `named` it locked, per
        column, or None when a parent is missing (a savepoint rolled back to then
        releases the locks it took)."""
        fresh: Locked = {}
        checks = []
        values = dict(params)
        fixed = dict(self.constants)
        for number, key in enumerate(self.keys):
            if key.column not in named:
                checks.append(_check(key, source, fixed, many=rows > ARRAY_ROWS))
                continue
            ids = named[key.column] - locked.get(key.column, set())
            ids.discard(NULL)
            if not ids:
                continue
            fresh[key.column] = ids
            name = f"ids_{number}"
            # an array literal: the ids passed the UUID check, so none needs quoting
            values[name] = "{" + ",".join(ids) + "}"
            checks.append(_probe_ids(key, fixed, name, len(ids)))
        if checks:
            cursor.execute(sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(checks)), values)
            if not cursor.fetchone()[0]:
                return None
        return fresh

    def statement(self, source: sql.Composable, *, rows: int) -> sql.Composable:
        """The SELECT `lock` runs: one boolean, every parent there (and locked)."""
        many = rows > ARRAY_ROWS
        fixed = dict(self.constants)
        checks = sql.SQL(" AND ").join(_check(key, source, fixed, many=many) for key in self.keys)
        return sql.SQL("SELECT {}").format(checks)

    def insert(self, cursor: Cursor, statement: sql.Composable, params: dict) -> int:
        """Run an INSERT of rows whose parents `lock` found, without PostgreSQL's per-row
        checks; its row count.

        The setting, the INSERT and the setting back go to the server as one message, so
        no exception on this side (a signal, say) can come between them and leave the
        session in replica mode. An error on the server aborts the transaction (or the
        caller's savepoint), which undoes the setting too.
        """
        # the constants as uuid literals: an untyped one would be text in a SELECT list
        params = {**params, **{name: uuid.UUID(str(params[name])) for _, name in self.constants}}
        text = psycopg.ClientCursor(cursor.connection).mogrify(statement, params)
        cursor.execute(f"{_REPLICA}; {text}; {_ORIGIN}")
        cursor.nextset()
        return cursor.rowcount


# The parents' ids a transaction has locked, per column of the row: `ParentLocks.lock_ids`
# probes none of them again.
Locked = dict[str, set[str]]
# Ids remembered per column at most: a parent named again by later chunks (a product, a
# returning customer) is not probed again; ids that are not (the orders of order items,
# whose rows come together) would otherwise grow the set with the file.
REMEMBERED_IDS = 50_000


def remember(locked: Locked, fresh: Locked) -> None:
    """Add the ids `lock_ids` locked to `locked`, once the chunk they were locked for is
    in (its savepoint released: the locks last until the transaction ends)."""
    for column, ids in fresh.items():
        known = locked.setdefault(column, set())
        if len(known) + len(ids) <= REMEMBERED_IDS:
            known |= ids


_REPLICA = "SELECT set_config('session_replication_role', 'replica', true)"
_ORIGIN = "SELECT set_config('session_replication_role', 'origin', true)"


def _key(spec: RecordSpec, fixed: dict[str, str], parent, match_type, columns, refs) -> _Key | None:
    """A foreign key as `_Key`, or None when its shape is not one this module checks:
    MATCH SIMPLE on constants (`fixed`) and at most one column of the record."""
    if match_type != "s" or len(set(columns)) != len(columns):
        return None
    others = [c for c in columns if c not in fixed]
    if len(others) > 1 or (others and others[0] not in spec.columns):
        return None
    match = tuple(zip(refs, columns, strict=True))
    return _Key(parent=parent, column=others[0] if others else None, match=match)


def _where(key: _Key, fixed: dict[str, str]) -> sql.Composable:
    """A parent row `p` matching the key: the constants' parameters, the probed id `w.id`."""
    return sql.SQL(" AND ").join(
        sql.SQL("p.{} = {}").format(
            sql.Identifier(ref),
            sql.Placeholder(fixed[col]) if col in fixed else sql.SQL("w.id"),
        )
        for ref, col in key.match
    )


def _probe_ids(key: _Key, fixed: dict[str, str], name: str, count: int) -> sql.Composable:
    """TRUE when each of the `count` distinct ids of the array parameter `name` is a
    parent; locks them, probed one by one in key order as `_check` does."""
    where = _where(key, fixed)
    return sql.SQL(
        "((SELECT count(*) FROM (SELECT id FROM unnest({ids}::uuid[]) id ORDER BY 1) w(id), "
        "LATERAL (SELECT 1 FROM ONLY {parent} p WHERE {where} FOR KEY SHARE) x) = {count})"
    ).format(
        ids=sql.Placeholder(name),
        parent=sql.SQL(key.parent),  # regclass text: quoted already
        where=where,
        count=sql.Literal(count),
    )


def _check(
    key: _Key, source: sql.Composable, fixed: dict[str, str], *, many: bool
) -> sql.Composable:
    """TRUE when every distinct parent the rows of `source` name exists; locks them.

    Each distinct id is probed on its own, by the parent's whole key (a LATERAL subquery
    with a row lock is never turned into a join), in key order (the index read in turn).
    Whatever the statistics say: a tenant that is new to them (not analyzed since its
    first load: a table that is large already grows by less than a tenth, so nothing
    analyzes it) looks like no rows to the planner, which then read all of the tenant's
    parents once per chunk and compared each with every id of the chunk. A new tenant's
    first orders loaded at 6,000 rows/s instead of 80,000, its order items slower still.
    """
    where = _where(key, fixed)
    parent = sql.SQL("ONLY {}").format(sql.SQL(key.parent))  # regclass text: quoted already
    if key.column is None:  # constants only: one parent row for every row
        return sql.SQL(
            "((SELECT count(*) FROM (SELECT 1 FROM {parent} p WHERE {where} FOR KEY SHARE) x) = 1)"
        ).format(parent=parent, where=where)
    column = sql.Identifier("d", key.column)
    distinct = sql.SQL(
        "SELECT DISTINCT {column} FROM {source} d WHERE {column} IS NOT NULL ORDER BY 1"
    ).format(column=column, source=source)
    probe = sql.SQL("LATERAL (SELECT 1 FROM {parent} p WHERE {where} FOR KEY SHARE) x").format(
        parent=parent, where=where
    )
    if not many:  # the ids as one array
        return sql.SQL(
            "(WITH a AS MATERIALIZED (SELECT array({distinct}) AS ids) "
            "SELECT (SELECT cardinality(ids) FROM a) = (SELECT count(*) FROM a, "
            "unnest(a.ids) w(id), {probe}))"
        ).format(distinct=distinct, probe=probe)
    # A whole file, once: the ids kept in a tuplestore, which goes to disk rather than
    # grow without bound.
    return sql.SQL(
        "(WITH w AS MATERIALIZED ({distinct}) "
        "SELECT (SELECT count(*) FROM w) = (SELECT count(*) FROM "
        "(SELECT {column} AS id FROM w d) w, {probe}))"
    ).format(distinct=distinct, column=column, probe=probe)
