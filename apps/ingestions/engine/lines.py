"""Checking records one at a time, as a file's lines are checked: for live records, whose
rejects are answered at once, before anything is staged.

`split_lines` cuts a body into lines as `read_lines` cuts a file (`decompressed` reads a
whole one as it does); `check_line` gives the reject `parse_chunks` would stage for the
same line (same code, field, message, errors and raw), the warnings it would stage with a
row it takes, or None for a row taken as it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import msgspec

from apps.ingestions.engine.checks import Invalid
from apps.ingestions.engine.parse import contract_and_rule_errors, decode_row, json_error, raw_text
from apps.ingestions.engine.reader import ByteStream, Line, raw_prefix, read_lines
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.results import RowReject, RowWarning
from apps.ingestions.engine.rules import Rules


def split_lines(body: bytes, *, max_line_bytes: int, max_bytes: int) -> Iterator[Line]:
    """The physical lines of an NDJSON body (plain, gzip or zstd, as a file), numbered
    from 1, blank ones included; a line over `max_line_bytes` comes `too_long`. Raises
    `FileError` for unreadable compression or more than `max_bytes` decompressed."""
    source = ByteStream(io.BytesIO(body), max_bytes=max_bytes)
    return read_lines(source, max_line_bytes=max_line_bytes)


def decompressed(body: bytes, *, max_bytes: int) -> bytes:
    """A whole body as `split_lines` reads it: as sent, or gzip or zstd decompressed (at most
    `max_bytes`, else `FileError`)."""
    source = ByteStream(io.BytesIO(body), max_bytes=max_bytes)
    return body if source.compression is None else b"".join(source.chunks())


def line_of(number: int, data: bytes, *, max_line_bytes: int) -> Line:
    """One record's bytes as line `number`, as `read_lines` would give it."""
    if len(data) > max_line_bytes:
        return Line(number, raw_prefix(data), True)
    return Line(number, data, False)


def check_line(
    record_type: str, line: Line, rules: Rules | None = None
) -> RowReject | RowWarning | None:
    """The reject of one non-blank line of `record_type`, or the warnings of a row taken
    with warnings (by `rules`), or None when it is a valid row."""
    number, data, too_long = line
    if too_long:
        message = "the line is longer than the line limit"
        return RowReject(number, "", "line_too_long", message, raw_text(data))
    spec = RECORDS[record_type]
    try:
        spec.validate(obj := decode_row(data), number)
    except Invalid as exc:
        errors = tuple(contract_and_rule_errors(spec, obj, rules))
        return RowReject(number, exc.field, exc.code, exc.message, raw_text(data), errors)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return RowReject(number, "", "invalid_json", json_error(exc, data), raw_text(data))
    if rules is None or (found := rules.check(obj)) is None:
        return None
    bad, warnings = found
    if bad:
        first = bad[0]
        return RowReject(number, first.field, first.code, first.message, raw_text(data), tuple(bad))
    first = warnings[0]
    return RowWarning(number, first.field, first.code, first.message, tuple(warnings))
