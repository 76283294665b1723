"""Staging: COPY the chunks `parse` makes into a staging table, and copy its rejects and
warnings into their tables.

The staging table (`Staging`) is the upload's own, written over a connection of its own
and dropped with the upload's transaction; a file of one chunk is staged on the caller's
connection instead (`LocalStaging`).
"""

from __future__ import annotations

import contextlib
import uuid

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.parse import REJECT_COLUMNS, Chunk
from apps.ingestions.engine.records import RecordSpec

STAGING_PREFIX = "ingest_stage_"
_STAGING_LOCK = "SELECT pg_advisory_lock(hashtextextended('ingest-stage:' || %s, 0))"
# The staging connection's waits (its advisory lock, dropping a failed run's table) are
# short unless something is wrong, such as the same upload loading twice at once; and the
# caller may be the one it waits for, which PostgreSQL cannot see as a deadlock.
_STAGING_LOCK_TIMEOUT = "30s"
_STAGING_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('ingest-stage:' || %s, 0))"


def _columns(spec: RecordSpec) -> sql.Composable:
    columns = [sql.SQL("line bigint")]
    columns += [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in spec.fields
    ]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in REJECT_COLUMNS]
    return sql.SQL(", ").join(columns)


class Staging:
    """A load's staging table, written through a connection of its own.

    Parsing and COPY happen on one side, merging on the other: COPYing a chunk on the
    merging connection would put the server's text parsing of every row on the merge's
    path, which is the slow one (foreign-key checks, index inserts). So chunks go through a
    second connection, in autocommit, into an unlogged table (no WAL; a crash empties it,
    and nothing in it is needed after one); the caller's transaction reads each chunk once
    it is committed there. `drop` removes the table in the caller's transaction, so it goes
    when the upload commits; a table left by a failed or killed load is dropped on its
    next run or by `staging_drop_stale`. The second connection holds an advisory lock on
    the table's name while it lives, which tells `staging_drop_stale` to keep off.
    """

    def __init__(self, cursor: Cursor, spec: RecordSpec, upload_id: str) -> None:
        self.spec = spec
        self.name = staging_name(upload_id)
        self._conn = _sibling(cursor.connection)
        try:
            self._create()
        except BaseException:
            self._conn.close()
            raise
        self.table = sql.Identifier(self._schema, self.name)

    def _create(self) -> None:
        conn = self._conn
        try:
            conn.execute(_STAGING_LOCK, (self.name,))  # held until this connection closes
        except psycopg.errors.LockNotAvailable:
            raise RuntimeError(
                f"another load of upload {self.name.removeprefix(STAGING_PREFIX)} is running"
            ) from None
        self._schema = conn.execute("SELECT current_schema()").fetchone()[0]
        if self._schema is None:
            raise RuntimeError("no schema to create the staging table in (see search_path)")
        table = sql.Identifier(self._schema, self.name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))  # a failed run's
        conn.execute(
            sql.SQL("CREATE UNLOGGED TABLE {} ({}) WITH (autovacuum_enabled = off)").format(
                table, _columns(self.spec)
            )
        )
        # chunks are read back by line range, while later ones are still being written
        conn.execute(sql.SQL("CREATE INDEX ON {} (line)").format(table))

    def write(self, chunk: Chunk) -> None:
        """COPY one chunk; it is committed (visible to the merge) when this returns."""
        copy_sql = sql.SQL("COPY {} FROM STDIN").format(self.table)
        with self._conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.write(chunk.text)

    def analyze(self) -> None:
        """Give the planner the table's statistics (never auto-analyzed: autovacuum is off
        for it, and a short-lived table would be too late anyway)."""
        self._conn.execute(sql.SQL("ANALYZE {}").format(self.table))

    def cancel(self) -> None:
        """Cancel the statement running on the staging connection, if any."""
        with contextlib.suppress(Exception):
            self._conn.cancel_safe(timeout=5)

    def close(self) -> None:
        self._conn.close()

    def drop(self, cursor: Cursor) -> None:
        """Drop the table in the caller's transaction (the merge has locked it there)."""
        cursor.execute(sql.SQL("DROP TABLE {}").format(self.table))


class LocalStaging:
    """Staging for a file of one chunk (or none): nothing to overlap, so no second
    connection, and no table to create for one, which costs more than such a file's merge.
    A temporary table on the caller's connection, in the caller's transaction.

    The chunk is staged here, at once: before any savepoint the load may roll back to, so
    it survives that as rows staged over the second connection do; `write` has nothing
    left to do."""

    def __init__(self, cursor: Cursor, spec: RecordSpec, chunk: Chunk | None) -> None:
        self._cursor = cursor
        self.table = sql.Identifier("pg_temp", f"_stage_{spec.name}")
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(self.table, _columns(spec))
        )
        if chunk is not None:
            copy_sql = sql.SQL("COPY {} FROM STDIN").format(self.table)
            with cursor.copy(copy_sql) as copy:
                copy.write(chunk.text)

    def write(self, chunk: Chunk) -> None:
        pass  # staged at creation

    def analyze(self) -> None:
        self._cursor.execute(sql.SQL("ANALYZE {}").format(self.table))

    def cancel(self) -> None:
        pass  # its only statements run on the caller's connection, cancelled with it

    def close(self) -> None:
        pass

    def drop(self, cursor: Cursor) -> None:
        cursor.execute(sql.SQL("DROP TABLE {}").format(self.table))


def staging_name(upload_id: str) -> str:
    """The name of the staging table of a load of `upload_id` (`Staging`), in the current
    schema of the connections of the load."""
    return f"{STAGING_PREFIX}{uuid.UUID(upload_id).hex}"


def connection_params(conn: psycopg.Connection) -> dict[str, str]:
    """What `psycopg.connect` needs to reach the same database as `conn`, as the same user."""
    params = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    params.setdefault("port", str(conn.info.port))
    return params


def _sibling(conn: psycopg.Connection) -> psycopg.Connection:
    """A new autocommit connection to the same database as `conn`, as the same user."""
    params = connection_params(conn)
    params["application_name"] = "ingest-staging"
    try:
        sibling = psycopg.connect(**params, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StagingUnavailable(f"the staging connection was refused: {exc}") from exc
    try:
        # Its commits need not wait for the disk: a crash empties an unlogged table anyway.
        sibling.execute("SET synchronous_commit = off")
        sibling.execute("SELECT set_config('lock_timeout', %s, false)", (_STAGING_LOCK_TIMEOUT,))
    except BaseException:
        sibling.close()
        raise
    return sibling


class StagingUnavailable(Exception):  # noqa: N818 - reads better at the raise site
    """The server refused the staging connection (too many clients, shutting down): a
    passing condition, not a verdict on the file. Worth running the load again later."""


def staging_drop_stale(cursor: Cursor) -> list[str]:
    """Drop the staging tables that no load uses any more: left by a load that failed or
    was killed. A table whose load is still staging (its advisory lock is held) or still
    merging (its transaction has it locked) is left alone. Run it in a transaction of its
    own: it sets a lock timeout for the rest of it."""
    cursor.execute("SET LOCAL lock_timeout = '100ms'")
    cursor.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND c.relpersistence = 'u' AND c.relname LIKE %s",
        (STAGING_PREFIX.replace("_", r"\_") + "%",),
    )
    dropped = []
    for schema, name in cursor.fetchall():
        cursor.execute(_STAGING_TRY_LOCK, (name,))
        if not cursor.fetchone()[0]:
            continue  # its load is still writing it
        cursor.execute("SAVEPOINT staging_drop")
        try:
            cursor.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, name)))
        except (psycopg.errors.LockNotAvailable, psycopg.errors.UndefinedTable):
            # still in use; or gone meanwhile, with the transaction of the load it was for
            cursor.execute("ROLLBACK TO SAVEPOINT staging_drop")
        else:
            dropped.append(name)
        cursor.execute("RELEASE SAVEPOINT staging_drop")
    return dropped


# The `errors` of a staged reject, as the `rejects` table stores them: an empty list for
# a reject that is its row's only problem.
STAGED_ERRORS = sql.SQL("coalesce(r_errors::jsonb, '[]'::jsonb)")


def store_rejects(
    cursor: Cursor, stage: sql.Composable, upload_id: str, lines: tuple[int, int] | None = None
) -> None:
    """Copy the rejects staged in `stage` (those of `lines`, first and last, when given)
    into the `rejects` table under `upload_id`, in the caller's transaction."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO rejects (upload_id, line, field, code, message, raw, errors) "
            "SELECT %s, line, r_field, r_code, r_message, r_raw, {} FROM {} "
            "WHERE r_code IS NOT NULL {} ORDER BY line"
        ).format(STAGED_ERRORS, stage, _lines(lines)),
        (upload_id,),
    )


def store_warnings(
    cursor: Cursor, stage: sql.Composable, upload_id: str, lines: tuple[int, int] | None = None
) -> None:
    """Copy the warnings staged in `stage` (of `lines`, when given) into `row_warnings`:
    one row a line, its first warning as field, code and message, all of them in `errors`."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO row_warnings (upload_id, line, field, code, message, errors) "
            "SELECT %s, line, w->0->>'field', w->0->>'code', w->0->>'message', w "
            "FROM (SELECT line, r_warnings::jsonb AS w FROM {} "
            "WHERE r_warnings IS NOT NULL {}) staged ORDER BY line"
        ).format(stage, _lines(lines)),
        (upload_id,),
    )


def _lines(lines: tuple[int, int] | None) -> sql.Composable:
    if lines is None:
        return sql.SQL("")
    return sql.SQL("AND line BETWEEN {} AND {}").format(
        sql.Literal(lines[0]), sql.Literal(lines[1])
    )
