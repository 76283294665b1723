"""The ingestion engine: plain Python, no HTTP, no settings.

`load_upload` takes a byte stream, a psycopg cursor (inside the caller's transaction) and
plain values; it reads, validates, stages with COPY and merges, and returns a `LoadResult`.
Modules: `reader` (bytes to lines), `records` (the field tables), `stage` (COPY into a
temporary table), `merge` (upsert, pending hold, orphan expiry), `results` (dataclasses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import BinaryIO

import msgspec
from psycopg import Cursor, sql

from apps.ingestions.engine.merge import lock_tenant, merge_staged, resolve_pending
from apps.ingestions.engine.reader import ByteStream, read_lines
from apps.ingestions.engine.records import RECORDS, type_from_filename, type_from_keys
from apps.ingestions.engine.results import FileError, LoadResult, Reject, RowCounts
from apps.ingestions.engine.stage import stage_lines, staging_table

__all__ = ["FileError", "LoadResult", "Reject", "RowCounts", "detect_record_type", "load_upload"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 20 * 1024**3


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
) -> LoadResult:
    """Load one file of one record type for one tenant, inside the caller's transaction.

    Rejects are written to the `rejects` table under `upload_id`. With `strict`, any reject
    means nothing is merged. Raises `FileError` when the file as a whole cannot be read;
    the caller then rolls back, so nothing of it is loaded.
    """
    spec = RECORDS[record_type]
    tenant_id, upload_id = str(tenant_id), str(upload_id)
    source = ByteStream(stream, max_bytes=max_decompressed_bytes)
    report = None
    if progress is not None:

        def report(rows: int) -> None:
            progress(source.bytes_in, rows)

    started = time.perf_counter()
    staged = stage_lines(
        cursor, spec, read_lines(source, max_line_bytes=max_line_bytes), progress=report
    )
    staged_at = time.perf_counter()
    if staged.rejected:
        cursor.execute(
            sql.SQL(
                "INSERT INTO rejects (upload_id, line, field, code, message, raw) "
                "SELECT %s, line, r_field, r_code, r_message, r_raw FROM {} "
                "WHERE r_code IS NOT NULL ORDER BY line"
            ).format(staging_table(spec)),
            (upload_id,),
        )
    if strict and staged.rejected:
        rows = RowCounts(total=staged.total, rejected=staged.rejected)
        return LoadResult(rows=rows, merged=False, bytes_read=source.bytes_out)

    lock_tenant(cursor, tenant_id)
    merge_start = time.perf_counter()
    merged = merge_staged(
        cursor, spec, tenant_id=tenant_id, upload_id=upload_id, valid=staged.valid, now=now
    )
    merged_at = time.perf_counter()
    resolved = resolve_pending(cursor, tenant_id=tenant_id)
    logger.debug(
        "loaded %s rows of %s: stage %.2fs, lock wait %.2fs, merge %.2fs, resolve %.2fs",
        staged.total,
        record_type,
        staged_at - started,
        merge_start - staged_at,
        merged_at - merge_start,
        time.perf_counter() - merged_at,
    )
    rows = RowCounts(
        total=staged.total,
        inserted=merged.inserted,
        updated=merged.updated,
        unchanged=merged.unchanged,
        rejected=staged.rejected,
        pending=merged.pending,
        duplicates=merged.duplicates,
    )
    return LoadResult(
        rows=rows,
        merged=True,
        bytes_read=source.bytes_out,
        resolved=tuple(resolved),
        superseded=merged.superseded,
    )


def detect_record_type(*, filename: str, explicit: str | None, stream: BinaryIO) -> str | None:
    """The record type of a file: the explicit type wins, then the file name prefix (longest
    match), then the keys of its first rows. None when nothing decides it."""
    if explicit:
        return explicit if explicit in RECORDS else None
    by_name = type_from_filename(filename)
    if by_name is not None:
        return by_name
    source = ByteStream(stream, max_bytes=DEFAULT_MAX_DECOMPRESSED_BYTES)
    seen = 0
    try:
        for line in read_lines(source, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
            if line.too_long or not line.data.strip():
                continue
            seen += 1
            try:
                obj = msgspec.json.decode(line.data)
            except (ValueError, RecursionError):  # not JSON (or not UTF-8): look further
                obj = None
            if isinstance(obj, dict) and (found := type_from_keys(set(obj))) is not None:
                return found
            if seen >= 5:
                break
    except FileError:
        return None
    return None
