"""Staging: parse and validate lines, and stream every row into a temporary table with COPY.

Valid rows and rejects travel in the same COPY stream (rejects carry `r_code` and the
data columns stay NULL), so neither is ever held in memory and a file of any size needs
one pass. The staging table lives until the end of the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
from psycopg import Cursor, sql

from apps.ingestions.engine.reader import Line
from apps.ingestions.engine.records import Invalid, RecordSpec, exact_number, validate_record

PROGRESS_EVERY = 50_000  # lines between progress reports

_decode = msgspec.json.Decoder(float_hook=exact_number).decode  # numbers stay exact
_REJECT_COLUMNS = ("r_field", "r_code", "r_message", "r_raw")

Progress = Callable[[int], None]  # rows done so far


@dataclass(frozen=True, slots=True)
class StageCounts:
    total: int  # non-blank lines
    valid: int
    rejected: int


def staging_table(spec: RecordSpec) -> sql.Identifier:
    return sql.Identifier(f"_stage_{spec.name}")


def create_staging(cursor: Cursor, spec: RecordSpec) -> None:
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


def _json_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"the line is not valid UTF-8 (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc)


def _raw_text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def stage_lines(
    cursor: Cursor,
    spec: RecordSpec,
    lines: Iterable[Line],
    *,
    progress: Progress | None = None,
) -> StageCounts:
    """Validate every line and COPY the outcome into the staging table."""
    create_staging(cursor, spec)
    width = len(spec.fields)
    blanks = (None,) * width
    valid_tail = (None,) * len(_REJECT_COLUMNS)
    total = rejected = 0
    next_report = PROGRESS_EVERY
    copy_sql = sql.SQL("COPY {} FROM STDIN").format(staging_table(spec))
    decode = _decode
    with cursor.copy(copy_sql) as copy:
        write_row = copy.write_row
        for number, data, too_long in lines:
            if too_long:
                total += 1
                rejected += 1
                write_row(
                    (
                        number,
                        *blanks,
                        "",
                        "line_too_long",
                        "the line is longer than the line limit",
                        _raw_text(data),
                    )
                )
                continue
            if not data or data.isspace():
                continue  # blank lines count as lines, not rows
            total += 1
            try:
                values = validate_record(spec, decode(data), number)
            except Invalid as exc:
                rejected += 1
                write_row((number, *blanks, exc.field, exc.code, exc.message, _raw_text(data)))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                # not UTF-8, or nested deeper than any record needs, is not JSON we accept
                rejected += 1
                write_row((number, *blanks, "", "invalid_json", _json_error(exc), _raw_text(data)))
            else:
                write_row((*values, *valid_tail))
            if progress is not None and total >= next_report:
                next_report += PROGRESS_EVERY
                progress(total)
    if progress is not None:
        progress(total)
    # Temp tables are never auto-analyzed; without statistics the planner takes a big
    # staging table for a few rows and picks nested loops over it.
    cursor.execute(sql.SQL("ANALYZE {}").format(staging_table(spec)))
    return StageCounts(total=total, valid=total - rejected, rejected=rejected)
