"""`load_parts`: many small parts of one record type (the parts of live record batches),
loaded as one, each with its own counts, holds and rejects, exactly as if each had been
loaded on its own, one after another, in the order given.

One `load_upload` per part pays a fixed price (a staging table, a handful of statements,
the pending check) that a part of a hundred rows does not amortise. Here the parts are
read as one stream, staged once, and merged with one set of statements per *segment*: a
run of consecutive parts no two of which share an id. Within a segment, loading the parts
together gives each part what loading them in turn would, since no row of one can meet a
row of another (a part that repeats its own ids is deduplicated, last occurrence winning,
as a file is). An id that a later part repeats starts a new segment, so the later row
finds the earlier one stored and counts as an update (or unchanged), not as a duplicate.

Each staged line knows its part: the parts' first lines, in order, make `width_bucket`'s
thresholds. Held rows and rejects carry their part's upload id and their line within it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import Cursor, sql

from apps.ingestions.engine.changes import note_changes
from apps.ingestions.engine.job import Job
from apps.ingestions.engine.keys import ParentLocks
from apps.ingestions.engine.load import _check_isolation
from apps.ingestions.engine.merge import _written, chunk_source, lock_tenant
from apps.ingestions.engine.pending import (
    has_pending,
    hold_sql,
    resolve_pending,
    supersede_held,
)
from apps.ingestions.engine.records import RECORDS, RecordSpec
from apps.ingestions.engine.results import LoadResult, RowCounts
from apps.ingestions.engine.stage import STAGED_ERRORS, LocalStaging
from apps.ingestions.engine.statements import insert_sql, select_sql, upsert_sql

_PART = sql.SQL("width_bucket(d.line, %(starts)s::bigint[])")
_SEGMENT = sql.Identifier("pg_temp", "_segment")
_OUTCOME = sql.Identifier("pg_temp", "_part_outcome")


@dataclass(frozen=True, slots=True)
class Part:
    """One part: its upload's id and its NDJSON bytes (each row at its line number)."""

    upload_id: str
    data: bytes


@dataclass
class _Counts:
    rows: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    pending: int = 0
    duplicates: int = 0
    superseded: dict[str, int] = field(default_factory=dict)


def load_parts(
    cursor: Cursor,
    *,
    tenant_id: str,
    record_type: str,
    parts: Sequence[Part],
    now: datetime,
    max_line_bytes: int,
    setwise_key_checks: bool = True,
) -> list[LoadResult]:
    """Load `parts` of `record_type` for one tenant, in the caller's (read committed)
    transaction, under the tenant's merge lock; one `LoadResult` per part, in order. The
    held rows of earlier loads that these rows were the parents of are loaded last, and
    reported (with the older held rows these replaced) on the last part's result."""
    spec = RECORDS[record_type]
    _check_isolation(cursor)
    lock_tenant(cursor, tenant_id)
    starts, stream = _combined(parts)
    job = Job(
        spec=spec,
        stream=stream,
        tenant_id=str(tenant_id),
        upload_id=parts[0].upload_id,
        now=now,
        max_line_bytes=max_line_bytes,
        max_decompressed_bytes=len(stream.getbuffer()) + 1,
        progress=None,
    )
    staging = LocalStaging(cursor, spec, None)
    _, chunks = job.read()
    with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(staging.table)) as copy:
        for chunk in chunks:
            copy.write(chunk.text)
    loader = _Loader(cursor, spec, staging.table, tenant_id, parts, starts, now)
    parents = ParentLocks.prepare(cursor, spec) if setwise_key_checks else None
    counts = loader.totals()
    older_held = has_pending(cursor, spec, tenant_id=str(tenant_id))
    first = 1
    while first <= len(parts):
        last = loader.segment_end(first)
        loader.merge(first, last, counts, parents=parents, older_held=older_held)
        older_held = older_held or any(c.pending for c in counts)
        first = last + 1
    resolved = resolve_pending(
        cursor, tenant_id=str(tenant_id), arrived=spec.name, setwise_key_checks=setwise_key_checks
    )
    staging.drop(cursor)
    return _results(parts, counts, tuple(resolved))


def _combined(parts: Sequence[Part]) -> tuple[list[int], io.BytesIO]:
    """The first line of each part in the combined stream, and the stream."""
    starts, pieces, lines = [], [], 0
    for part in parts:
        data = part.data if part.data.endswith(b"\n") else part.data + b"\n"
        starts.append(lines + 1)
        lines += data.count(b"\n")
        pieces.append(data)
    return starts, io.BytesIO(b"".join(pieces))


def _results(parts, counts: list[_Counts], resolved: tuple) -> list[LoadResult]:
    superseded: dict[str, int] = {}
    for c in counts:
        for upload, n in c.superseded.items():
            superseded[upload] = superseded.get(upload, 0) + n
    results = []
    for number, (part, c) in enumerate(zip(parts, counts, strict=True), start=1):
        rows = RowCounts(
            total=c.rows,
            inserted=c.inserted,
            updated=c.updated,
            unchanged=c.unchanged,
            rejected=c.rejected,
            pending=c.pending,
            duplicates=c.duplicates,
        )
        is_last = number == len(parts)
        results.append(
            LoadResult(
                rows=rows,
                merged=True,
                bytes_read=len(part.data),
                resolved=resolved if is_last else (),
                superseded=tuple(superseded.items()) if is_last else (),
            )
        )
    return results


class _Loader:
    """The statements of one `load_parts` call over its staged rows; parts are numbered
    from 1, as `width_bucket` numbers them."""

    def __init__(self, cursor, spec: RecordSpec, stage, tenant_id, parts, starts, now):
        self.cursor = cursor
        self.spec = spec
        self.stage = stage
        self.starts = starts
        self.ends = [s - 1 for s in starts[1:]] + [2**62]
        self.params = {
            "tenant": str(tenant_id),
            "now": now,
            "starts": starts,
            "uploads": [p.upload_id for p in parts],
        }

    def _execute(self, statement: sql.Composable) -> list[tuple]:
        self.cursor.execute(statement, self.params)
        return self.cursor.fetchall() if self.cursor.description else []

    def totals(self) -> list[_Counts]:
        """Rows and rejects per part; the rejects stored under each part's upload."""
        counts = [_Counts() for _ in self.starts]
        for part, rows, rejected in self._execute(
            sql.SQL(
                "SELECT {part}, count(*), count(*) FILTER (WHERE d.r_code IS NOT NULL) "
                "FROM {stage} d GROUP BY 1"
            ).format(part=_PART, stage=self.stage)
        ):
            counts[part - 1].rows, counts[part - 1].rejected = rows, rejected
        if any(c.rejected for c in counts):
            self._execute(
                sql.SQL(
                    "INSERT INTO rejects (upload_id, line, field, code, message, raw, errors) "
                    "SELECT (%(uploads)s::uuid[])[{part}], "
                    "d.line - (%(starts)s::bigint[])[{part}] + 1, "
                    "d.r_field, d.r_code, d.r_message, d.r_raw, {errors} FROM {stage} d "
                    "WHERE d.r_code IS NOT NULL ORDER BY d.line"
                ).format(part=_PART, stage=self.stage, errors=STAGED_ERRORS)
            )
        return counts

    def segment_end(self, first: int) -> int:
        """The last part of the segment that starts at part `first`: the one before the
        first part that repeats an id of an earlier part of the segment."""
        # An id's rows in a part after the first part it is in: the earliest such part.
        # A window, not a self-join: the staging table has no statistics, and a join of
        # it with itself was planned as a nested loop (25 ms for 800 rows).
        key = sql.Identifier(self.spec.key)
        rows = self._execute(
            sql.SQL(
                "SELECT min(v.part) FROM (SELECT {part} AS part, "
                "min({part}) OVER (PARTITION BY d.{key}) AS first FROM {stage} d "
                "WHERE d.r_code IS NULL AND d.line >= {start}) v WHERE v.part > v.first"
            ).format(
                key=key, part=_PART, stage=self.stage, start=sql.Literal(self.starts[first - 1])
            )
        )
        repeat = rows[0][0]
        return len(self.starts) if repeat is None else repeat - 1

    def _source(self, first: int, last: int, counts: list[_Counts]) -> tuple[sql.Composable, int]:
        """The valid rows of parts `first..last`, each id once (the part's last
        occurrence); how many. Sets the parts' duplicates."""
        spec, key = self.spec, sql.Identifier(self.spec.key)
        lines = (self.starts[first - 1], self.ends[last - 1])
        source = chunk_source(spec, self.stage, *lines)
        valid = sum(c.rows - c.rejected for c in counts[first - 1 : last])
        repeated = self._execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} d GROUP BY d.{} HAVING count(*) > 1)").format(
                source, key
            )
        )[0][0]
        if not repeated:
            return source, valid
        self._execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_SEGMENT))
        self._execute(
            sql.SQL(
                "CREATE TEMP TABLE {segment} ON COMMIT DROP AS SELECT DISTINCT ON (d.{key}) "
                "d.* FROM {source} d ORDER BY d.{key}, d.line DESC"
            ).format(segment=_SEGMENT, key=key, source=source)
        )
        for part, distinct in self._per_part(_SEGMENT):
            c = counts[part - 1]
            c.duplicates = c.rows - c.rejected - distinct
        return _SEGMENT, sum(c.rows - c.rejected - c.duplicates for c in counts[first - 1 : last])

    def _per_part(self, source: sql.Composable) -> list[tuple[int, int]]:
        return self._execute(
            sql.SQL("SELECT {part}, count(*) FROM {source} d GROUP BY 1").format(
                part=_PART, source=source
            )
        )

    def merge(self, first, last, counts, *, parents: ParentLocks | None, older_held: bool):
        """Merge parts `first..last` (a segment): hold the rows whose parent is missing,
        write the others, and count per part."""
        spec, cursor, params = self.spec, self.cursor, self.params
        source, rows = self._source(first, last, counts)
        if not rows:
            return
        all_there = parents is not None and parents.lock(cursor, source, params, rows=rows)
        if spec.holds_pending and older_held:
            for upload, n in supersede_held(cursor, spec, source, params):
                at = counts[last - 1].superseded
                at[upload] = at.get(upload, 0) + n
        pending = 0
        if spec.holds_pending and not all_there:
            pending = self._hold(source, counts)
        if pending == rows:
            return
        written = _written(spec, source, pending)
        note_changes(cursor, spec, written, params["tenant"])
        # A segment after the first starts at a part that repeats an id the segment before
        # it wrote: its insert would fail; it is upserted.
        if first > 1 or not self._insert(written, parents, all_there=all_there, rows=rows):
            self._upsert(written, counts)
            return
        for part in range(first, last + 1):
            c = counts[part - 1]
            c.inserted = c.rows - c.rejected - c.duplicates - c.pending

    def _insert(self, written, parents: ParentLocks | None, *, all_there: bool, rows: int) -> bool:
        """Insert `written` when every id in it is new, as a file's fast way does
        (`merge.insert_new`): the primary key checks each row as it goes in, so no probe
        of the final table comes first (one cost as much as the insert). False, with
        nothing written, when an id is stored already: the caller upserts instead. Any
        other error aborts the merge's transaction, savepoint and all."""
        spec, cursor, params = self.spec, self.cursor, self.params
        insert = insert_sql(spec, select_sql(spec, written))
        cursor.execute("SAVEPOINT live_insert")
        try:
            if parents is not None and (
                all_there or parents.lock(cursor, written, params, rows=rows)
            ):
                parents.insert(cursor, insert, params)
            else:
                cursor.execute(insert, params)  # PostgreSQL checks each row
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT live_insert")
            cursor.execute("RELEASE SAVEPOINT live_insert")
            return False
        cursor.execute("RELEASE SAVEPOINT live_insert")
        return True

    def _hold(self, source: sql.Composable, counts: list[_Counts]) -> int:
        """Hold the rows of `source` with a parent missing, each under its part's upload
        and line; how many."""
        hold = hold_sql(
            self.spec,
            source,
            upload=sql.SQL("(%(uploads)s::uuid[])[{}]").format(_PART),
            line=sql.SQL("d.line - (%(starts)s::bigint[])[{}] + 1").format(_PART),
        )
        held = self._execute(
            sql.SQL(
                "WITH h AS ({hold} RETURNING upload_id) "
                "SELECT array_position(%(uploads)s::uuid[], upload_id), count(*) FROM h GROUP BY 1"
            ).format(hold=hold)
        )
        for part, n in held:
            counts[part - 1].pending = n
        return sum(n for _, n in held)

    def _upsert(self, written: sql.Composable, counts: list[_Counts]) -> None:
        """Upsert `written`, counting inserted, updated and unchanged rows per part."""
        spec, key = self.spec, sql.Identifier(self.spec.key)
        self._execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_OUTCOME))
        self._execute(
            sql.SQL(
                "CREATE TEMP TABLE {outcome} ON COMMIT DROP AS WITH ins AS ({upsert}) "
                "SELECT * FROM ins"
            ).format(outcome=_OUTCOME, upsert=upsert_sql(spec, select_sql(spec, written)))
        )
        for part, inserted, updated, distinct in self._execute(
            sql.SQL(
                "SELECT {part}, count(o.inserted) FILTER (WHERE o.inserted), "
                "count(o.inserted) FILTER (WHERE NOT o.inserted), count(*) "
                "FROM {written} d LEFT JOIN {outcome} o ON o.{key} = d.{key} GROUP BY 1"
            ).format(part=_PART, written=written, outcome=_OUTCOME, key=key)
        ):
            c = counts[part - 1]
            c.inserted, c.updated, c.unchanged = inserted, updated, distinct - inserted - updated
