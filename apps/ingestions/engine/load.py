"""`load_upload`: one file, read once, validated, staged and merged in one transaction.

Two ways through, same result:

- pipelined (the usual one): the calling thread parses and validates chunk after chunk,
  a staging thread COPYs each into the staging table over a connection of its own
  (`Staging`), and a merge thread merges the staged chunks into the final tables in the
  caller's transaction. Parsing, the server's reading of the COPY and the merge (key
  checks, index inserts) so run at once, and the merge, the slowest, does nothing else; a
  file of one chunk stages on the caller's connection instead (`LocalStaging`). A chunk
  goes in with a plain INSERT, trusting the primary key to refuse an id that exists and
  the foreign keys (checked per chunk by `keys` where allowed, else per row) a parent that
  does not; once one does, chunks are merged carefully (pending hold, upsert) and their
  ids tracked, so the first id that repeats in the file stops this path;
- whole-file (strict uploads, and files that repeat an id): stage everything, then
  deduplicate (last occurrence wins) and merge in one go. A file that turned out to repeat
  an id is rolled back to a savepoint and, once the rest of it is staged, merged this way
  (it is read only once).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import BinaryIO

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.keys import HELD, ParentLocks
from apps.ingestions.engine.merge import (
    MergeCounts,
    chunk_source,
    has_pending,
    ids_reset,
    insert_new,
    lock_tenant,
    merge_rows,
    merge_staged,
    resolve_pending,
    track_ids,
)
from apps.ingestions.engine.reader import ByteStream, read_lines
from apps.ingestions.engine.records import RECORDS, RecordSpec
from apps.ingestions.engine.results import LoadResult, RowCounts
from apps.ingestions.engine.stage import Chunk, LocalStaging, Staging, parse_chunks

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 20 * 1024**3
_SAVEPOINT = sql.Identifier("ingest_pipelined")
_DONE = None  # end of the chunk queue
_Staging = Staging | LocalStaging
_SWITCH_INTERVAL = 0.0005  # seconds (Python's default is 0.005)
_POLL = 0.1  # seconds: how often a waiting worker thread looks whether the load stopped


class _Stopped(Exception):  # noqa: N818 - control flow, not an error
    """The parsing thread gave up; the merge thread stops before its next statement."""


class _RepeatedId(Exception):  # noqa: N818 - control flow, not an error
    """An id occurs twice in the file: the pipelined path cannot keep "last one wins".
    Raised again by the parsing thread once the whole file is staged, with its totals."""

    def __init__(self, source: ByteStream | None = None, totals: _Totals | None = None):
        super().__init__()
        self.source = source
        self.totals = totals


@dataclass(frozen=True)
class _Job:
    """What one `load_upload` call works on."""

    spec: RecordSpec
    stream: BinaryIO
    tenant_id: str
    upload_id: str
    now: datetime
    max_line_bytes: int
    max_decompressed_bytes: int
    progress: Callable[[int, int], None] | None
    setwise_key_checks: bool = True
    parents: ParentLocks | None = None  # set once the tenant's merge lock is held
    held: ParentLocks | None = None  # the same, for the type's pending table
    parents_coming: Callable[[], bool] | None = None

    def read(self) -> tuple[ByteStream, Iterator[Chunk]]:
        """The byte source (for its counters) and the file's chunks of COPY text."""
        source = ByteStream(self.stream, max_bytes=self.max_decompressed_bytes)
        lines = read_lines(source, max_line_bytes=self.max_line_bytes)
        report = None
        if self.progress is not None:
            progress = self.progress

            def report(rows: int) -> None:
                progress(source.bytes_in, rows)

        return source, parse_chunks(self.spec, lines, progress=report)


@dataclass
class _Totals:
    rows: int = 0
    rejected: int = 0


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
    """
    job = _Job(
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
    )
    started = time.perf_counter()
    cursor.execute("SELECT current_setting('transaction_isolation')")
    isolation = cursor.fetchone()[0]
    if isolation != "read committed":
        # a snapshot taken once would never see the chunks the staging connection commits
        raise ValueError(f"load_upload needs a read committed transaction, not {isolation}")
    staging = None
    try:
        lock_tenant(cursor, job.tenant_id)  # before any merge; tenants still run in parallel
        if setwise_key_checks:
            job = replace(job, parents=ParentLocks.prepare(cursor, job.spec))
            if job.spec.parents:
                table = job.spec.pending_table
                held = ParentLocks.prepare(cursor, job.spec, table=table, constants=HELD)
                job = replace(job, held=held)
        source, chunks = job.read()
        first = next(chunks, None)
        if first is None or first.last:
            staging = LocalStaging(cursor, job.spec, first)  # one chunk: nothing to overlap
        else:
            staging = Staging(cursor, job.spec, job.upload_id)
        if first is not None:
            chunks = itertools.chain([first], chunks)
            first = None  # the chain has it: its text goes once it is staged
        if strict:
            result = _load_whole(cursor, job, staging, source, chunks)
            mode = "whole-file"
        else:
            cursor.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
            try:
                result = _load_pipelined(cursor, job, staging, source, chunks)
                mode = "pipelined"
            except _RepeatedId as repeated:
                # everything is staged by now: undo the chunks merged so far, merge it whole
                cursor.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
                result = _merge_whole(cursor, job, staging, repeated.source, repeated.totals)
                mode = "whole-file after a repeated id"
            cursor.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
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


def _store_rejects(
    cursor: Cursor, stage: sql.Composable, upload_id: str, lines: tuple[int, int] | None = None
) -> None:
    where = sql.SQL("")
    if lines is not None:
        where = sql.SQL("AND line BETWEEN {} AND {}").format(
            sql.Literal(lines[0]), sql.Literal(lines[1])
        )
    cursor.execute(
        sql.SQL(
            "INSERT INTO rejects (upload_id, line, field, code, message, raw) "
            "SELECT %s, line, r_field, r_code, r_message, r_raw FROM {} "
            "WHERE r_code IS NOT NULL {} ORDER BY line"
        ).format(stage, where),
        (upload_id,),
    )


def _load_whole(
    cursor: Cursor, job: _Job, staging: _Staging, source: ByteStream, chunks: Iterator[Chunk]
) -> LoadResult:
    """Strict: stage the whole file, then merge it only if no row was rejected."""
    totals = _Totals()
    for chunk in chunks:
        staging.write(chunk)
        totals.rows += chunk.rows
        totals.rejected += chunk.rejected
    if totals.rejected:
        _store_rejects(cursor, staging.table, job.upload_id)
        counts = RowCounts(total=totals.rows, rejected=totals.rejected)
        return LoadResult(rows=counts, merged=False, bytes_read=source.bytes_out)
    return _merge_whole(cursor, job, staging, source, totals)


def _merge_whole(
    cursor: Cursor, job: _Job, staging: _Staging, source: ByteStream, totals: _Totals
) -> LoadResult:
    """Merge the whole staged file at once (its rejects stored too)."""
    # Without statistics the planner takes a big staging table for a few rows and picks
    # nested loops over it.
    staging.analyze()
    if totals.rejected:
        _store_rejects(cursor, staging.table, job.upload_id)
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
    return _result(cursor, job, source, totals.rows, totals.rejected, [merged])


def _load_pipelined(
    cursor: Cursor, job: _Job, staging: _Staging, source: ByteStream, parsed: Iterator[Chunk]
) -> LoadResult:
    spec, tenant_id, upload_id, now = job.spec, job.tenant_id, job.upload_id, job.now
    stage = staging.table
    staged = _Totals()
    merged: list[MergeCounts] = []
    # Three threads, one chunk at a time each: this one parses, the staging thread COPYs
    # (waiting on the server's parsing of the text, which then overlaps ours), the merge
    # thread merges. Chunks wait in the staging table; the merge queue only says which
    # lines are ready. Short queues bound memory (a parsed chunk is ~8 MB of text at most)
    # and keep the progress reported (rows parsed) close to the rows merged.
    to_stage: queue.Queue[Chunk | None] = queue.Queue(maxsize=1)
    chunks: queue.Queue[Chunk | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    # Fast way (plain INSERT, see `insert_new`) until a chunk needs the careful one; then
    # careful for the rest of the file, which likely looks the same.
    older_held = careful = has_pending(cursor, spec, tenant_id=tenant_id)
    ids_reset(cursor)
    stop = threading.Event()  # set when the parsing thread gives up: no new statement

    def take(source: queue.Queue) -> Chunk | None:
        """The next item, or the end once the load is being stopped (nothing more comes)."""
        while True:
            try:
                return source.get(timeout=_POLL)
            except queue.Empty:
                if stop.is_set():
                    return _DONE

    def hand(target: queue.Queue, item: Chunk | None) -> None:
        """Queue an item, unless the load is being stopped (nobody would take it)."""
        while not stop.is_set():
            try:
                target.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def stage_worker() -> None:
        analyzed = False
        try:
            while (chunk := take(to_stage)) is not _DONE:
                if stop.is_set():
                    raise _Stopped
                staging.write(chunk)
                if not analyzed and chunk.rows > chunk.rejected:
                    staging.analyze()  # one chunk of rows tells the planner enough
                    analyzed = True
                staged.rows += chunk.rows
                staged.rejected += chunk.rejected
                ready = replace(chunk, text="")
                chunk = None  # staged: its text goes now, not after the merge takes it
                hand(chunks, ready)
        except BaseException as exc:  # handed to the parsing thread, which re-raises it
            failure.append(exc)
            while take(to_stage) is not _DONE:  # drain, so the parser never blocks forever
                pass
        finally:
            hand(chunks, _DONE)  # the merge thread takes chunks until this, whatever happens

    def merge_worker() -> None:
        nonlocal careful
        try:
            while (chunk := take(chunks)) is not _DONE:
                if stop.is_set():
                    raise _Stopped
                if chunk.rejected:
                    _store_rejects(cursor, stage, upload_id, (chunk.first_line, chunk.last_line))
                valid = chunk.rows - chunk.rejected
                if not valid:
                    continue
                rows = chunk_source(spec, stage, chunk.first_line, chunk.last_line)
                inserted = (
                    None
                    if careful
                    else insert_new(
                        cursor, spec, rows, rows=valid, tenant_id=tenant_id, parents=job.parents
                    )
                )
                if inserted is not None:
                    merged.append(MergeCounts(inserted, 0, valid - inserted, 0, 0, ()))
                    continue
                if not careful:  # from here on, ids are tracked: the fast way no longer
                    careful = True  # proves them new (seed with what it already loaded)
                    track_ids(cursor, spec, chunk_source(spec, stage, 1, chunk.first_line - 1))
                if not track_ids(cursor, spec, rows, rows=valid):
                    raise _RepeatedId
                merged.append(
                    merge_rows(
                        cursor,
                        spec,
                        rows,
                        rows=valid,
                        tenant_id=tenant_id,
                        upload_id=upload_id,
                        now=now,
                        parents=job.parents,
                        held=job.held,
                        parents_coming=job.parents_coming,
                        older_held=older_held,
                    )
                )
        except BaseException as exc:  # handed to the parsing thread, which re-raises it
            failure.append(exc)
            while take(chunks) is not _DONE:  # drain, so the stager never blocks forever
                pass

    workers = _Workers(
        threading.Thread(target=stage_worker, name=f"stage-{upload_id}", daemon=True),
        threading.Thread(target=merge_worker, name=f"merge-{upload_id}", daemon=True),
        to_stage,
        cursor,
        staging,
        stop,
    )
    with _short_switch_interval():
        try:
            workers.start()
            for chunk in parsed:
                if _fatal(failure):
                    break  # a repeated id needs the whole file staged; other failures nothing
                to_stage.put(chunk)
            workers.finish()
        except BaseException:
            # A bad file, or a signal (Ctrl-C, Celery's soft time limit), even one that came
            # while the workers were finishing: stop them and cancel their statements, so
            # nothing runs once the caller has the connection.
            workers.abort()
            raise
    if (fatal := _fatal(failure)) is not None:
        raise fatal
    if failure:  # a repeated id, and the whole file staged
        raise _RepeatedId(source, staged)
    return _result(cursor, job, source, staged.rows, staged.rejected, merged)


def _fatal(failure: list[BaseException]) -> BaseException | None:
    """The first failure of a worker that is not a repeated id."""
    return next((f for f in failure if not isinstance(f, _RepeatedId)), None)


_switch = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


@contextlib.contextmanager
def _short_switch_interval() -> Iterator[None]:
    """Python's switch interval at `_SWITCH_INTERVAL` while any pipelined load of this
    process runs. The merge thread needs the GIL for a moment per statement while the
    parsing thread holds it; each handover waits up to the interval, on the merge's path."""
    global _switch_users, _switch_saved
    with _switch:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, _SWITCH_INTERVAL))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


@dataclass
class _Workers:
    """The staging and merge threads of a pipelined load, and how to end them. Every wait
    of theirs gives up within `_POLL` once `stop` is set, so ending them never depends on
    a message getting through."""

    stager: threading.Thread
    merger: threading.Thread
    to_stage: queue.Queue
    cursor: Cursor  # the merge thread's
    staging: _Staging
    stop: threading.Event

    def start(self) -> None:
        self.merger.start()
        self.stager.start()

    def finish(self) -> None:
        """The file is read: let the threads do what is queued, then end (the end goes
        through the staging thread to the merge thread), and wait for them."""
        while self.stager.is_alive():
            try:
                self.to_stage.put(_DONE, timeout=_POLL)
                break
            except queue.Full:
                continue
        self._join()

    def abort(self) -> None:
        """Stop both threads now, cancel their statements and wait for them. A further
        signal meanwhile does not cut this short (the caller then raises the first)."""
        self.stop.set()
        for cancel in (self._cancel_merge, self.staging.cancel):
            try:
                cancel()
            except BaseException:  # a second signal: the threads are stopped first
                continue
        while True:
            try:
                self._join()
                return
            except BaseException:
                continue

    def _cancel_merge(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.connection.cancel_safe(timeout=5)

    def _join(self) -> None:
        for thread in (self.stager, self.merger):
            if thread.ident is not None:  # started
                thread.join()


def _result(cursor, job: _Job, source, rows, rejected, merged: list[MergeCounts]) -> LoadResult:
    resolved = resolve_pending(
        cursor,
        tenant_id=job.tenant_id,
        arrived=job.spec.name,
        setwise_key_checks=job.setwise_key_checks,
    )
    counts = RowCounts(
        total=rows,
        inserted=sum(m.inserted for m in merged),
        updated=sum(m.updated for m in merged),
        unchanged=sum(m.unchanged for m in merged),
        rejected=rejected,
        pending=sum(m.pending for m in merged),
        duplicates=sum(m.duplicates for m in merged),
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
