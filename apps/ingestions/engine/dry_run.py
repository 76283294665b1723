"""`dry_run_upload`: a load that is carried out in full, then undone but for its report.

A dry run must report exactly what a real run would: the same counts, merge outcomes
(inserted, updated, unchanged, duplicates) and pending holds included, and the same
rejects. Only the real load knows them, so the dry run is the real load (`load_upload`),
run inside a savepoint and rolled back to it. What the rollback must spare is the report:
the rows the load wrote under the upload's id in `REPORT_TABLES` are read out first (COPY
into a spooled file, so millions of rejects cost disk, not memory) and written back after.

Two things a savepoint does not undo are seen to here: the staging table, created and
committed over the load's second connection (`Staging`) and dropped in the caller's
transaction, which the rollback undoes, is dropped again; and sequences (the ids of
rejects) keep their advance, which is harmless.
"""

from __future__ import annotations

import tempfile
from typing import Any, BinaryIO

from psycopg import Cursor, sql

from apps.ingestions.engine.load import load_upload
from apps.ingestions.engine.results import LoadResult
from apps.ingestions.engine.stage import staging_name

# The tables in which a load writes its upload's report (rows keyed by `upload_id`), as
# opposed to data: what a dry run keeps. A table added for the report belongs here.
REPORT_TABLES = ("rejects", "row_warnings")

_SAVEPOINT = sql.Identifier("ingest_dry_run")
# Up to this much of the report is held in memory; more goes to a temporary file.
_SPOOL_BYTES = 8 << 20
_COPY_BUFFER = 1 << 20


def dry_run_upload(cursor: Cursor, *, upload_id: str, **options: Any) -> LoadResult:
    """Run `load_upload` with `options` inside the caller's transaction, then roll back all
    it did but its report: the final tables, the pending holds (those it added, replaced or
    let in) and everything else it wrote are as they were, while the rejects it stored
    under `upload_id` stay, as a real run would have stored them.

    Returns the real load's result, `resolved` and `superseded` included: what the load
    would have done to other uploads' held rows, which the caller must not apply. An error
    is raised as `load_upload` raises it; the caller rolls back, as after a real load.
    """
    cursor.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
    result = load_upload(cursor, upload_id=upload_id, **options)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        kept = [_copy_out(cursor, table, upload_id, spool) for table in REPORT_TABLES]
        cursor.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
        cursor.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
        _drop_staging(cursor, upload_id)
        spool.seek(0)
        for table, size in zip(REPORT_TABLES, kept, strict=True):
            _copy_in(cursor, table, upload_id, spool, size)
    return result


def _copy_out(cursor: Cursor, table: str, upload_id: str, spool: BinaryIO) -> int:
    """Append the upload's rows of `table` to `spool` (COPY binary: the same table takes
    them back as they are); the number of bytes written."""
    statement = sql.SQL(
        "COPY (SELECT * FROM {} WHERE upload_id = {}::uuid) TO STDOUT (FORMAT binary)"
    ).format(sql.Identifier(table), sql.Literal(str(upload_id)))
    size = 0
    with cursor.copy(statement) as copy:
        for data in copy:
            spool.write(data)
            size += len(data)
    return size


def _copy_in(cursor: Cursor, table: str, upload_id: str, spool: BinaryIO, size: int) -> None:
    """Put back the upload's rows of `table` as `_copy_out` read them, in place of any
    the rollback left (those stored before the savepoint, which the copy includes)."""
    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE upload_id = %s").format(sql.Identifier(table)),
        (upload_id,),
    )
    statement = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(table))
    with cursor.copy(statement) as copy:
        while size > 0:
            data = spool.read(min(size, _COPY_BUFFER))
            if not data:
                raise RuntimeError(f"the spooled rows of {table} ended early")
            copy.write(data)
            size -= len(data)


def _drop_staging(cursor: Cursor, upload_id: str) -> None:
    """Drop the load's staging table, if it had one of its own (a file of more than one
    chunk): its drop was rolled back with the rest. It goes when the caller commits; if
    the caller rolls back instead, `staging_drop_stale` finds it."""
    cursor.execute("SELECT current_schema()")
    schema = cursor.fetchone()[0]
    table = sql.Identifier(schema, staging_name(upload_id))
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
