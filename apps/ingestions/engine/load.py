"""`load_upload`: one file, read once, validated, staged and merged in one transaction.

Two ways through, same result:

- pipelined (the usual one, `pipeline`): the calling thread parses and validates chunk
  after chunk, a staging thread COPYs each into the staging table over a connection of its
  own (`Staging`), and a merge thread merges the staged chunks into the final tables in the
  caller's transaction; a file of one chunk stages on the caller's connection instead
  (`LocalStaging`). A chunk goes in with a plain INSERT, trusting the primary key to refuse
  an id that exists and the foreign keys (checked per chunk by `keys` where allowed, else
  per row) a parent that does not; once one does, chunks are merged carefully (pending
  hold, upsert) and their ids tracked, so the first id that repeats in the file stops this
  path;
- whole-file (strict uploads, and files that repeat an id): stage everything, then
  deduplicate (last occurrence wins) and merge in one go. A file that turned out to repeat
  an id is rolled back to a savepoint and, once the rest of it is staged, merged this way
  (it is read only once).

Either way, held rows of earlier uploads whose parents have now arrived are loaded last
(`resolve_pending`), in the same transaction.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import BinaryIO

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.job import Job, Totals
from apps.ingestions.engine.keys import HELD, ParentLocks
from apps.ingestions.engine.merge import MergeCounts, lock_tenant, merge_staged
from apps.ingestions.engine.parse import Chunk
from apps.ingestions.engine.pending import resolve_pending
from apps.ingestions.engine.pipeline import Pipeline
from apps.ingestions.engine.reader import ByteStream
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.results import LoadResult, RowCounts
from apps.ingestions.engine.rules import Rules
from apps.ingestions.engine.stage import LocalStaging, Staging, store_rejects, store_warnings

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 20 * 1024**3
_SAVEPOINT = sql.Identifier("ingest_pipelined")
_Staging = Staging | LocalStaging


def load_upload(
    cursor: Cursor,
    *,
    tenant_id: str,
    upload_id: str,
    record_type: str,
    stream: BinaryIO,
    strict: bool = False,
    now: datetime,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    progress: Callable[[int, int], None] | None = None,
    setwise_key_checks: bool = True,
    parents_coming: Callable[[], bool] | None = None,
    rules: Rules | None = None,
) -> LoadResult:
    """Load one file of one record type for one tenant, inside the caller's transaction.

    Rejects are written to the `rejects` table under `upload_id`. With `strict`, any reject
    means nothing is merged. Raises `FileError` when the file as a whole cannot be read;
    the caller then rolls back, so nothing of it is loaded. Opens a second connection to
    the same database for the staging table (see `Staging`) and closes it before returning;
    the caller's transaction must be READ COMMITTED to see what that one commits.

    With `setwise_key_checks` (and where the database allows it, see `keys`), the engine
    checks the foreign keys of new rows one chunk at a time instead of PostgreSQL row by
    row; off, or not allowed, PostgreSQL checks each row. The outcome is the same.

    With `parents_coming`, rows about to be held for missing parents are first asked about:
    when it returns True, nothing is merged and `ParentsComing` is raised (the caller rolls
    back and loads the file after the parents' upload).

    With `rules` (the tenant's, compiled once for the load), rows the contract takes are
    checked against them too: rejected (`rule_violation`, `unknown_field`) or loaded with
    warnings, written to `row_warnings` under `upload_id` and counted in `rows.warned`.
    """
    # long: the entry point; its signature and docstring are half of it, the rest is one
    # sequence of steps under one cancel-on-interrupt and one close of the staging.
    job = Job(
        spec=RECORDS[record_type],
        stream=stream,
        tenant_id=str(tenant_id),
        upload_id=str(upload_id),
        now=now,
        max_line_bytes=max_line_bytes,
        max_decompressed_bytes=max_decompressed_bytes,
        progress=progress,
        setwise_key_checks=setwise_key_checks,
        parents_coming=parents_coming,
        rules=rules,
    )
    started = time.perf_counter()
    _check_isolation(cursor)
    staging = None
    try:
        lock_tenant(cursor, job.tenant_id)  # before any merge; tenants still run in parallel
        job = _with_key_checks(cursor, job)
        source, chunks = job.read()
        staging, chunks = _open_staging(cursor, job, chunks)
        result, mode = _load(cursor, job, staging, source, chunks, strict=strict)
        staging.drop(cursor)
    except BaseException as exc:
        if not isinstance(exc, psycopg.Error):
            # An interrupt (Celery's soft time limit, Ctrl-C) may have come in the middle
            # of a statement of this thread: do not leave it running on the server.
            with contextlib.suppress(Exception):
                cursor.connection.cancel_safe(timeout=5)
        raise
    finally:
        if staging is not None:
            staging.close()
    logger.debug(
        "loaded %s rows of %s (%s) in %.2fs",
        result.rows.total,
        record_type,
        mode,
        time.perf_counter() - started,
    )
    return result


def _check_isolation(cursor: Cursor) -> None:
    cursor.execute("SELECT current_setting('transaction_isolation')")
    isolation = cursor.fetchone()[0]
    if isolation != "read committed":
        # a snapshot taken once would never see the chunks the staging connection commits
        raise ValueError(f"load_upload needs a read committed transaction, not {isolation}")


def _with_key_checks(cursor: Cursor, job: Job) -> Job:
    """`job` with the foreign keys the engine checks per chunk, of the final table and of
    the pending one, where allowed (see `keys`). Needs the tenant's merge lock."""
    if not job.setwise_key_checks:
        return job
    job = replace(job, parents=ParentLocks.prepare(cursor, job.spec))
    if job.spec.holds_pending:
        table = job.spec.pending_table
        held = ParentLocks.prepare(cursor, job.spec, table=table, constants=HELD)
        job = replace(job, held=held)
    return job


def _open_staging(
    cursor: Cursor, job: Job, chunks: Iterator[Chunk]
) -> tuple[_Staging, Iterator[Chunk]]:
    """The staging table for the file, and its chunks. A file that ends within its first
    chunk has nothing to overlap: it is staged at once on the caller's connection."""
    first = next(chunks, None)
    if first is None or first.last:
        staging = LocalStaging(cursor, job.spec, first)
    else:
        staging = Staging(cursor, job.spec, job.upload_id)
    if first is None:
        return staging, chunks
    return staging, itertools.chain([first], chunks)


def _load(
    cursor: Cursor,
    job: Job,
    staging: _Staging,
    source: ByteStream,
    chunks: Iterator[Chunk],
    *,
    strict: bool,
) -> tuple[LoadResult, str]:
    """Stage and merge the file, the whole-file way or pipelined; the result, and the way
    it went (for the log)."""
    if strict:
        return _load_whole(cursor, job, staging, source, chunks), "whole-file"
    cursor.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
    piped = Pipeline(cursor, job, staging).run(chunks)
    if piped.repeated_id:
        # everything is staged by now: undo the chunks merged so far, merge it whole
        cursor.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
        result = _merge_whole(cursor, job, staging, source, piped.staged)
        mode = "whole-file after a repeated id"
    else:
        result = _result(cursor, job, source, piped.staged, piped.merged)
        mode = "pipelined"
    cursor.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
    return result, mode


def _load_whole(
    cursor: Cursor, job: Job, staging: _Staging, source: ByteStream, chunks: Iterator[Chunk]
) -> LoadResult:
    """Strict: stage the whole file, then merge it only if no row was rejected."""
    totals = Totals()
    for chunk in chunks:
        staging.write(chunk)
        totals.rows += chunk.rows
        totals.rejected += chunk.rejected
        totals.warned += chunk.warned
    if totals.rejected:
        store_rejects(cursor, staging.table, job.upload_id)
        counts = RowCounts(total=totals.rows, rejected=totals.rejected)
        return LoadResult(rows=counts, merged=False, bytes_read=source.bytes_out)
    return _merge_whole(cursor, job, staging, source, totals)


def _merge_whole(
    cursor: Cursor, job: Job, staging: _Staging, source: ByteStream, totals: Totals
) -> LoadResult:
    """Merge the whole staged file at once (its rejects stored too)."""
    # Without statistics the planner takes a big staging table for a few rows and picks
    # nested loops over it.
    staging.analyze()
    if totals.rejected:
        store_rejects(cursor, staging.table, job.upload_id)
    if totals.warned:
        store_warnings(cursor, staging.table, job.upload_id)
    merged = merge_staged(
        cursor,
        job.spec,
        staging.table,
        tenant_id=job.tenant_id,
        upload_id=job.upload_id,
        valid=totals.rows - totals.rejected,
        now=job.now,
        parents=job.parents,
        held=job.held,
        parents_coming=job.parents_coming,
    )
    return _result(cursor, job, source, totals, [merged])


def _result(
    cursor: Cursor, job: Job, source: ByteStream, totals: Totals, merged: Sequence[MergeCounts]
) -> LoadResult:
    """Load the held rows the file's rows were the missing parents of, and add up."""
    resolved = resolve_pending(
        cursor,
        tenant_id=job.tenant_id,
        arrived=job.spec.name,
        setwise_key_checks=job.setwise_key_checks,
    )
    counts = RowCounts(
        total=totals.rows,
        inserted=sum(m.inserted for m in merged),
        updated=sum(m.updated for m in merged),
        unchanged=sum(m.unchanged for m in merged),
        rejected=totals.rejected,
        pending=sum(m.pending for m in merged),
        duplicates=sum(m.duplicates for m in merged),
        warned=totals.warned,
    )
    superseded: dict[str, int] = {}
    for m in merged:
        for upload, n in m.superseded:
            superseded[upload] = superseded.get(upload, 0) + n
    return LoadResult(
        rows=counts,
        merged=True,
        bytes_read=source.bytes_out,
        resolved=tuple(resolved),
        superseded=tuple(superseded.items()),
    )
