"""The pipelined load: parsing, staging and merging one file at once, a chunk each.

Three threads, one chunk at a time each. The calling thread parses and validates
(`Pipeline._parse`); the staging thread COPYs each chunk into the staging table over a
connection of its own (`_stage`), waiting on the server's parsing of the text, which so
overlaps ours; the merge thread merges the staged chunks into the final tables in the
caller's transaction (`_merge`). The merge, the slowest (key checks, index inserts), does
nothing else. Chunks wait in the staging table; the merge queue only says which lines are
in. Short queues bound memory (a parsed chunk is ~8 MB of text at most) and keep the
progress reported (rows parsed) close to the rows merged.

A chunk goes in the fast way, a plain INSERT (`insert_new`), until one needs the careful
way (pending hold, upsert: `merge_rows`); then the rest of the file, which likely looks the
same, goes the careful way with its ids tracked. The first id that repeats in the file
stops the merge: the outcome (`Piped.repeated_id`) tells the caller to undo the chunks
merged and merge the file whole, once all of it is staged.

The workers never end by an exception of their own: an error is recorded and raised in the
calling thread once both have ended (`run`); a stop (`_abort`) makes every wait of theirs
give up within `_POLL`, so ending them never depends on a message getting through.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from psycopg import Cursor

from apps.ingestions.engine.job import Job, Totals
from apps.ingestions.engine.keys import Locked
from apps.ingestions.engine.merge import (
    MergeCounts,
    chunk_source,
    ids_reset,
    insert_new,
    merge_rows,
    track_ids,
)
from apps.ingestions.engine.parse import Chunk
from apps.ingestions.engine.pending import has_pending
from apps.ingestions.engine.stage import LocalStaging, Staging, store_rejects, store_warnings

_DONE = None  # the end of a queue
_POLL = 0.1  # seconds: how often a waiting worker thread looks whether the load stopped

# The switch interval (seconds) for a process that runs pipelined loads, to set once at
# its start-up: the merge thread needs the GIL for a moment per statement while the parsing
# thread holds it, and each handover waits up to the interval (Python's default is 5 ms),
# on the merge's path. The engine never sets it itself: it is the whole interpreter's.
SWITCH_INTERVAL = 0.0005


@dataclass(frozen=True, slots=True)
class Piped:
    """The outcome of a pipelined load that ran to its end.

    `staged`: the rows of the whole file. `merged`: the counts of each chunk merged. With
    `repeated_id`, an id occurs twice in the file: the whole file is staged, but the chunks
    merged so far must be undone and the file merged whole (last occurrence wins)."""

    staged: Totals
    merged: tuple[MergeCounts, ...]
    repeated_id: bool


class Pipeline:
    """One pipelined load of `job`'s file, staged through `staging`, merged on `cursor` (in
    the caller's transaction). Use once: `run`."""

    def __init__(self, cursor: Cursor, job: Job, staging: Staging | LocalStaging) -> None:
        self._cursor = cursor
        self._job = job
        self._staging = staging
        self._to_stage: queue.Queue[Chunk | None] = queue.Queue(maxsize=1)
        self._to_merge: queue.Queue[Chunk | None] = queue.Queue(maxsize=2)  # staged chunks
        self._stop = threading.Event()  # set when the calling thread gives up: no new statement
        self._staged = Totals()  # written by the staging thread
        self._merged: list[MergeCounts] = []  # written by the merge thread
        self._errors: list[BaseException] = []  # the workers' errors, the first first
        self._repeated_id = False  # the merge thread met an id it had merged before
        self._careful = False  # chunks go the careful way, their ids tracked
        self._older_held = False  # the tenant held rows of this type when the load began
        self._locked: Locked = {}  # parents locked by the fast way so far (`keys.lock_ids`)
        name = job.upload_id
        self._stager = threading.Thread(target=self._stage, name=f"stage-{name}", daemon=True)
        self._merger = threading.Thread(target=self._merge, name=f"merge-{name}", daemon=True)

    def run(self, chunks: Iterator[Chunk]) -> Piped:
        """Parse `chunks` in this thread while the workers stage and merge them. Raises the
        first error of a worker (also `ParentsComing`); on any exception here (a bad file, a
        signal such as Ctrl-C or Celery's soft time limit, even one that comes while the
        workers finish) it stops them and cancels their statements first, so nothing of
        the load runs once the caller has the connection."""
        job = self._job
        self._older_held = self._careful = has_pending(
            self._cursor, job.spec, tenant_id=job.tenant_id
        )
        ids_reset(self._cursor)
        try:
            self._merger.start()
            self._stager.start()
            self._parse(chunks)
            self._finish()
        except BaseException:
            self._abort()
            raise
        if self._errors:
            raise self._errors[0]
        return Piped(self._staged, tuple(self._merged), self._repeated_id)

    # --- the calling thread ---------------------------------------------------------------

    def _parse(self, chunks: Iterator[Chunk]) -> None:
        """Hand the chunks to the staging thread as they are parsed, until a worker fails
        (a repeated id is no failure: the whole-file merge needs the whole file staged)."""
        for chunk in chunks:
            if self._errors:
                break
            self._to_stage.put(chunk)

    def _finish(self) -> None:
        """The file is read: let the workers do what is queued, then end (the end goes
        through the staging thread to the merge thread), and wait for them."""
        while self._stager.is_alive():
            try:
                self._to_stage.put(_DONE, timeout=_POLL)
                break
            except queue.Full:
                continue
        self._join()

    def _abort(self) -> None:
        """Stop both workers now, cancel their statements and wait for them. A further
        signal meanwhile does not cut this short (the caller then raises the first)."""
        self._stop.set()
        for cancel in (self._cancel_merge, self._staging.cancel):
            try:
                cancel()
            except BaseException:  # a second signal: the workers are stopped first
                continue
        while True:
            try:
                self._join()
                return
            except BaseException:
                continue

    def _cancel_merge(self) -> None:
        with contextlib.suppress(Exception):
            self._cursor.connection.cancel_safe(timeout=5)

    def _join(self) -> None:
        for thread in (self._stager, self._merger):
            if thread.ident is not None:  # started
                thread.join()

    # --- the staging thread ---------------------------------------------------------------

    def _stage(self) -> None:
        """COPY the chunks the parser hands over and pass their line ranges on to the merge
        thread; then, however it ended, tell the merge thread the end."""
        try:
            if not self._stage_each():
                self._drain(self._to_stage)  # so the parser never blocks for ever
        finally:
            self._hand(self._to_merge, _DONE)

    def _stage_each(self) -> bool:
        """True once the parser's end came; False when stopped, or failed (recorded)."""
        analyzed = False
        try:
            while (chunk := self._take(self._to_stage)) is not _DONE:
                if self._stop.is_set():
                    return False
                self._staging.write(chunk)
                if not analyzed and chunk.rows > chunk.rejected:
                    self._staging.analyze()  # one chunk of rows tells the planner enough
                    analyzed = True
                self._staged.rows += chunk.rows
                self._staged.rejected += chunk.rejected
                self._staged.warned += chunk.warned
                ready = replace(chunk, text="")
                chunk = None  # staged: its text goes now, not after the merge takes it
                self._hand(self._to_merge, ready)
        except BaseException as exc:  # raised in the calling thread by `run`
            self._errors.append(exc)
            return False
        return True

    # --- the merge thread -----------------------------------------------------------------

    def _merge(self) -> None:
        """Merge the staged chunks in turn until the end, a stop, an error (recorded) or a
        repeated id; then take what is still queued, so the stager never blocks for ever."""
        try:
            ended = self._merge_each()
        except BaseException as exc:  # raised in the calling thread by `run`
            self._errors.append(exc)
            ended = False
        if not ended:
            self._drain(self._to_merge)

    def _merge_each(self) -> bool:
        """True once the end came; False when stopped or at a repeated id."""
        while (chunk := self._take(self._to_merge)) is not _DONE:
            if self._stop.is_set():
                return False
            if not self._merge_chunk(chunk):
                self._repeated_id = True
                return False
        return True

    def _merge_chunk(self, chunk: Chunk) -> bool:
        """Store the chunk's rejects and merge its valid rows: the fast way until a chunk
        needs the careful one, then carefully. False (nothing merged) when one of its ids
        was merged before in this file."""
        cursor, job = self._cursor, self._job
        spec, stage = job.spec, self._staging.table
        lines = (chunk.first_line, chunk.last_line)
        if chunk.rejected:
            store_rejects(cursor, stage, job.upload_id, lines)
        if chunk.warned:
            store_warnings(cursor, stage, job.upload_id, lines)
        valid = chunk.rows - chunk.rejected
        if not valid:
            return True
        rows = chunk_source(spec, stage, chunk.first_line, chunk.last_line)
        if not self._careful:
            inserted = insert_new(
                cursor,
                spec,
                rows,
                rows=valid,
                tenant_id=job.tenant_id,
                parents=job.parents,
                named=chunk.parent_ids,
                locked=self._locked,
            )
            if inserted is not None:
                self._merged.append(MergeCounts(inserted, 0, valid - inserted, 0, 0, ()))
                return True
            # from here on, ids are tracked: the fast way no longer proves them new (seed
            # the record with what it already loaded)
            self._careful = True
            track_ids(cursor, spec, chunk_source(spec, stage, 1, chunk.first_line - 1))
        if not track_ids(cursor, spec, rows, rows=valid):
            return False
        self._merged.append(
            merge_rows(
                cursor,
                spec,
                rows,
                rows=valid,
                tenant_id=job.tenant_id,
                upload_id=job.upload_id,
                now=job.now,
                parents=job.parents,
                held=job.held,
                parents_coming=job.parents_coming,
                older_held=self._older_held,
            )
        )
        return True

    # --- the queues, for the workers ------------------------------------------------------

    def _take(self, source: queue.Queue) -> Chunk | None:
        """The next item, or the end once the load is being stopped (nothing more comes)."""
        while True:
            try:
                return source.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return _DONE

    def _hand(self, target: queue.Queue, item: Chunk | None) -> None:
        """Queue an item, unless the load is being stopped (nobody would take it)."""
        while not self._stop.is_set():
            try:
                target.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _drain(self, source: queue.Queue) -> None:
        """Take items until the end (which a stop makes come at once)."""
        while self._take(source) is not _DONE:
            pass
