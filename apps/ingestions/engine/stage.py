"""Staging: parse and validate lines into COPY text, chunk by chunk, and COPY the chunks
into a staging table.

Valid rows and rejects travel in the same COPY stream (rejects carry `r_code` and the
data columns stay NULL), so neither is ever held in memory beyond one chunk, and a file
of any size needs one pass. The staging table (`Staging`) is the upload's own, written
over a connection of its own and dropped with the upload's transaction. Rows are
formatted here, in Python, so that a chunk is one string, written to the server in one
call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec
import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.checks import NULL, Invalid, copy_text, exact_number
from apps.ingestions.engine.reader import Line
from apps.ingestions.engine.records import RecordSpec, record_errors, validate_record

# Rows per chunk: the unit of COPY and of merging. A chunk also ends once its text reaches
# CHUNK_CHARS, whatever the rows' width: memory is bounded by the few chunks a load holds
# at once (being built, queued, being COPYed); once staged, a chunk is only its line range.
CHUNK_ROWS = 20_000
CHUNK_CHARS = 8 << 20
# The first chunk is short, so the merge starts early instead of waiting for a full one.
FIRST_CHUNK_ROWS = 2_000

_decode = msgspec.json.Decoder(float_hook=exact_number).decode  # numbers stay exact
_encode = msgspec.json.encode
# r_errors: every problem of a row that has more than one, as a JSON list; NULL when the
# reject's field, code and message are its only problem (as `rejects.errors` stores them).
_REJECT_COLUMNS = ("r_field", "r_code", "r_message", "r_raw", "r_errors")
STAGING_PREFIX = "ingest_stage_"
_STAGING_LOCK = "SELECT pg_advisory_lock(hashtextextended('ingest-stage:' || %s, 0))"
# The staging connection's waits (its advisory lock, dropping a failed run's table) are
# short unless something is wrong, such as the same upload loading twice at once; and the
# caller may be the one it waits for, which PostgreSQL cannot see as a deadlock.
_STAGING_LOCK_TIMEOUT = "30s"
_STAGING_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('ingest-stage:' || %s, 0))"

Progress = Callable[[int], None]  # rows done so far


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive lines of a file as COPY text for the staging table."""

    first_line: int
    last_line: int
    text: str
    rows: int  # non-blank lines
    rejected: int
    last: bool = False  # known to end the file (a full chunk at the very end is not marked)


def _columns(spec: RecordSpec) -> sql.Composable:
    columns = [sql.SQL("line bigint")]
    columns += [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in spec.fields
    ]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in _REJECT_COLUMNS]
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
    where = sql.SQL("")
    if lines is not None:
        where = sql.SQL("AND line BETWEEN {} AND {}").format(
            sql.Literal(lines[0]), sql.Literal(lines[1])
        )
    cursor.execute(
        sql.SQL(
            "INSERT INTO rejects (upload_id, line, field, code, message, raw, errors) "
            "SELECT %s, line, r_field, r_code, r_message, r_raw, {} FROM {} "
            "WHERE r_code IS NOT NULL {} ORDER BY line"
        ).format(STAGED_ERRORS, stage, where),
        (upload_id,),
    )


def json_error(exc: Exception, data: bytes) -> str:
    """The message of an `invalid_json` reject."""
    if isinstance(exc, UnicodeDecodeError):
        return _utf8_error(data)
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def _utf8_error(data: bytes) -> str:
    """Where a line stops being UTF-8. The JSON decoder's error counts from the start of
    the string it was reading, not of the line: decoding the line again tells."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = " ".join(f"0x{byte:02x}" for byte in data[exc.start : exc.end])
        return (
            f"the line is not valid UTF-8 at byte offset {exc.start} "
            f"(the line's first byte is offset 0): {bad}, {exc.reason}"
        )
    return "the line is not valid UTF-8"


def raw_text(data: bytes) -> str:
    """A line as a reject's `raw`: UTF-8, undecodable bytes and NULs replaced."""
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _reject_text(
    number: int, blanks: str, field: str, code: str, message: str, raw: str, errors: str = NULL
) -> str:
    return (
        f"{number}\t{blanks}{copy_text(field)}\t{code}\t{copy_text(message)}\t"
        f"{copy_text(raw)}\t{errors}\n"
    )


def _errors_text(spec: RecordSpec, obj: object) -> str:
    """The `r_errors` of a refused row: every problem of it (`record_errors`) as a JSON
    list, when it has more than one; else NULL."""
    problems = record_errors(spec, obj)
    if len(problems) < 2:
        return NULL
    listed = [{"field": p.field, "code": p.code, "message": p.message} for p in problems]
    return copy_text(_encode(listed).decode())


def parse_chunks(
    spec: RecordSpec,
    lines: Iterable[Line],
    *,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
) -> Iterator[Chunk]:
    """Validate every line and yield the outcome as COPY text, `chunk_rows` rows at a time
    (default `CHUNK_ROWS`; the first chunk is at most `FIRST_CHUNK_ROWS`), or fewer once
    a chunk's text reaches `CHUNK_CHARS`: together they bound the memory a load needs."""
    # long: the per-line loop of every load, kept in one frame with its state in locals: a
    # call per line would be paid on the hot path.
    chunk_rows = chunk_rows or CHUNK_ROWS
    limit = min(chunk_rows, FIRST_CHUNK_ROWS)
    width = len(spec.fields)
    blanks = "\\N\t" * width
    valid_tail = "\t\\N" * len(_REJECT_COLUMNS) + "\n"
    decode = _decode
    parts: list[str] = []
    rows = rejected = total = size = 0
    max_size = CHUNK_CHARS
    first = None
    number = 0
    for number, data, too_long in lines:
        if first is None:
            first = number
        if too_long:
            rows += 1
            rejected += 1
            parts.append(
                _reject_text(
                    number,
                    blanks,
                    "",
                    "line_too_long",
                    "the line is longer than the line limit",
                    raw_text(data),
                )
            )
        elif not data or data.isspace():
            continue  # blank lines count as lines, not rows
        else:
            rows += 1
            try:
                values = validate_record(spec, obj := decode(data), number)
            except Invalid as exc:
                # the rare refused row is looked at again, for every problem it has
                rejected += 1
                errors = _errors_text(spec, obj)
                parts.append(
                    _reject_text(
                        number, blanks, exc.field, exc.code, exc.message, raw_text(data), errors
                    )
                )
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                # not UTF-8, or nested deeper than any record needs, is not JSON we accept
                rejected += 1
                parts.append(
                    _reject_text(
                        number, blanks, "", "invalid_json", json_error(exc, data), raw_text(data)
                    )
                )
            else:
                parts.append("\t".join(values) + valid_tail)
        size += len(parts[-1])
        if rows == limit or size >= max_size:
            total += rows
            yield Chunk(first, number, "".join(parts), rows, rejected)
            if progress is not None:
                progress(total)
            parts, rows, rejected, first, size = [], 0, 0, None, 0
            limit = chunk_rows
    if rows or parts:
        total += rows
        yield Chunk(first or number, number, "".join(parts), rows, rejected, last=True)
    if progress is not None:
        progress(total)
