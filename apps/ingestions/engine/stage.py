"""Staging: parse and validate lines into COPY text, chunk by chunk, and COPY the chunks
into a temporary table.

Valid rows and rejects travel in the same COPY stream (rejects carry `r_code` and the
data columns stay NULL), so neither is ever held in memory beyond one chunk, and a file
of any size needs one pass. The staging table lives until the end of the transaction.
Rows are formatted here, in Python, so that a chunk is one string: it can cross a thread
boundary cheaply and be written to the server in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec
from psycopg import Cursor, sql

from apps.ingestions.engine.reader import Line
from apps.ingestions.engine.records import (
    Invalid,
    RecordSpec,
    copy_text,
    exact_number,
    validate_record,
)

# Rows per chunk: the unit of COPY and of merging. Memory is bounded by about four chunks
# alive at once (one being built, one queued, one being merged, one just merged), ~8 MB each.
CHUNK_ROWS = 20_000

_decode = msgspec.json.Decoder(float_hook=exact_number).decode  # numbers stay exact
_REJECT_COLUMNS = ("r_field", "r_code", "r_message", "r_raw")

Progress = Callable[[int], None]  # rows done so far


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive lines of a file as COPY text for the staging table."""

    first_line: int
    last_line: int
    text: str
    rows: int  # non-blank lines
    rejected: int


def staging_table(spec: RecordSpec) -> sql.Identifier:
    return sql.Identifier("pg_temp", f"_stage_{spec.name}")


def create_staging(cursor: Cursor, spec: RecordSpec, *, by_line: bool = False) -> None:
    """Create the staging table; `by_line` indexes it for reading back chunk by chunk."""
    columns = [sql.SQL("line bigint")]
    columns += [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.sql_type)) for f in spec.fields
    ]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in _REJECT_COLUMNS]
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging_table(spec)))
    cursor.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            staging_table(spec), sql.SQL(", ").join(columns)
        )
    )
    if by_line:
        # lines only grow, so a BRIN index finds one chunk's rows for next to nothing
        cursor.execute(sql.SQL("CREATE INDEX ON {} USING brin (line)").format(staging_table(spec)))


def copy_chunk(cursor: Cursor, spec: RecordSpec, chunk: Chunk) -> None:
    with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(staging_table(spec))) as copy:
        copy.write(chunk.text)


def _json_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"the line is not valid UTF-8 (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def raw_text(data: bytes) -> str:
    """A line as a reject's `raw`: UTF-8, undecodable bytes and NULs replaced."""
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _reject_text(number: int, blanks: str, field: str, code: str, message: str, raw: str) -> str:
    return f"{number}\t{blanks}{copy_text(field)}\t{code}\t{copy_text(message)}\t{copy_text(raw)}\n"


def parse_chunks(
    spec: RecordSpec,
    lines: Iterable[Line],
    *,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
) -> Iterator[Chunk]:
    """Validate every line and yield the outcome as COPY text, `chunk_rows` rows at a time
    (default `CHUNK_ROWS`, which bounds the memory a load needs)."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    width = len(spec.fields)
    blanks = "\\N\t" * width
    valid_tail = "\t\\N" * len(_REJECT_COLUMNS) + "\n"
    decode = _decode
    parts: list[str] = []
    rows = rejected = total = 0
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
                values = validate_record(spec, decode(data), number)
            except Invalid as exc:
                rejected += 1
                parts.append(
                    _reject_text(number, blanks, exc.field, exc.code, exc.message, raw_text(data))
                )
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                # not UTF-8, or nested deeper than any record needs, is not JSON we accept
                rejected += 1
                parts.append(
                    _reject_text(
                        number, blanks, "", "invalid_json", _json_error(exc), raw_text(data)
                    )
                )
            else:
                parts.append("\t".join(values) + valid_tail)
        if rows == chunk_rows:
            total += rows
            yield Chunk(first, number, "".join(parts), rows, rejected)
            if progress is not None:
                progress(total)
            parts, rows, rejected, first = [], 0, 0, None
    if rows or parts:
        total += rows
        yield Chunk(first or number, number, "".join(parts), rows, rejected)
    if progress is not None:
        progress(total)
