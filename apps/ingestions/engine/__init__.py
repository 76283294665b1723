"""The ingestion engine: plain Python, no HTTP, no settings. This package is its public
surface (`__all__`); its modules are private, but `testing` (helpers for tests and sample
data).

`load_upload` takes a byte stream, a psycopg cursor (inside the caller's transaction) and
plain values; it reads, validates, stages with COPY and merges, and returns a `LoadResult`.
Modules: `load` (the entry point: whole-file, or pipelined through `pipeline`; `job`, what
one load works on), `reader` (bytes to lines), `records` (the one record definition and the
graph of types derived from it), `checks` (one check per kind of value), `parse` (lines to
chunks of COPY text), `stage` (COPY into a staging table), `keys` (foreign keys checked per chunk),
`merge` (the plain INSERT and the upsert), `pending` (the hold of rows with missing
parents: hold, resolve, expire), `statements` (SQL built from a record type), `results`
(dataclasses and errors), `lines` (one record checked at a time, for live records),
`parts` (many small parts of one type loaded as one, each counted as if alone: live records),
`contract` (the published JSON Schema of each type, and the docs' field tables, derived from
`records` and `checks`), `rules` (a tenant's JSON Schema rules for a type, compiled once per
load), `dry_run` (a load rolled back but for its report).
"""

from __future__ import annotations

import io
from typing import BinaryIO

import msgspec

from apps.ingestions.engine.changes import changes_unnoted
from apps.ingestions.engine.contract import contract_markdown, record_schema
from apps.ingestions.engine.dry_run import dry_run_upload
from apps.ingestions.engine.lines import check_line, decompressed, line_of, split_lines
from apps.ingestions.engine.load import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    load_upload,
)
from apps.ingestions.engine.merge import (
    lock_tenant,
    refresh_statistics,
    tenant_looks_empty,
    tenant_rows_estimate,
    try_lock_tenant,
)
from apps.ingestions.engine.parts import Part, load_parts
from apps.ingestions.engine.pending import expire_pending, pending_tenants, restore_reject_lines
from apps.ingestions.engine.pipeline import SWITCH_INTERVAL
from apps.ingestions.engine.reader import ByteStream, Line, decompress_prefix, read_lines
from apps.ingestions.engine.records import (
    RECORD_ORDER,
    RECORD_STAGES,
    RECORDS,
    RecordSpec,
    type_from_filename,
    type_from_keys,
)
from apps.ingestions.engine.results import (
    FileError,
    LoadResult,
    ParentsComing,
    RowCounts,
    RowError,
    RowReject,
    RowWarning,
)
from apps.ingestions.engine.rules import (
    RULE_ACTIONS,
    UNKNOWN_FIELDS,
    RuleError,
    Rules,
    compile_rules,
)
from apps.ingestions.engine.stage import StagingUnavailable, staging_drop_stale

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "RECORDS",
    "RECORD_ORDER",
    "RECORD_STAGES",
    "RULE_ACTIONS",
    "SWITCH_INTERVAL",
    "UNKNOWN_FIELDS",
    "RecordSpec",
    "FileError",
    "Line",
    "LoadResult",
    "ParentsComing",
    "Part",
    "RowCounts",
    "RowError",
    "RowReject",
    "RowWarning",
    "RuleError",
    "Rules",
    "StagingUnavailable",
    "changes_unnoted",
    "check_line",
    "compile_rules",
    "contract_markdown",
    "decompress_prefix",
    "decompressed",
    "detect_record_type",
    "dry_run_upload",
    "expire_pending",
    "line_of",
    "load_parts",
    "load_upload",
    "lock_tenant",
    "pending_tenants",
    "record_schema",
    "refresh_statistics",
    "restore_reject_lines",
    "split_lines",
    "staging_drop_stale",
    "tenant_looks_empty",
    "tenant_rows_estimate",
    "try_lock_tenant",
]


# How much of a file the type is told from: its first bytes (compressed, at most), and what
# they decompress to (at most): room for the first rows at the default line limit.
_DETECT_BYTES = 2 * DEFAULT_MAX_LINE_BYTES
_DETECT_TEXT_BYTES = 8 * DEFAULT_MAX_LINE_BYTES


def detect_record_type(*, filename: str, explicit: str | None, stream: BinaryIO) -> str | None:
    """The record type of a file: the explicit type wins, then the file name prefix (longest
    match), then the keys of its first rows. None when nothing decides it."""
    if explicit:
        return explicit if explicit in RECORDS else None
    by_name = type_from_filename(filename)
    if by_name is not None:
        return by_name
    # Its first bytes only, which may be a blob's head, cut anywhere: a compressed one is
    # read as far as it goes. A row longer than the line limit decides nothing.
    head = decompress_prefix(stream.read(_DETECT_BYTES), max_bytes=_DETECT_TEXT_BYTES)
    source = ByteStream(io.BytesIO(head), max_bytes=_DETECT_TEXT_BYTES)
    seen = 0
    try:
        for line in read_lines(source, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
            if line.too_long or not line.data.strip():
                continue
            seen += 1
            try:
                obj = msgspec.json.decode(line.data)
            except (ValueError, RecursionError):  # not JSON (not UTF-8, or cut): look further
                obj = None
            if isinstance(obj, dict) and (found := type_from_keys(set(obj))) is not None:
                return found
            if seen >= 5:
                break
    except FileError:  # compressed twice
        return None
    return None
