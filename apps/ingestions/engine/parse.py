"""Parsing: lines to chunks of COPY text for the staging table, each line validated against
its type's contract (and the tenant's rules, when given) once.

Valid rows and rejects travel in the same COPY text (rejects carry `r_code` and the data
columns stay NULL), so neither is ever held in memory beyond one chunk, and a file of any
size needs one pass. Rows are formatted here, in Python, so that a chunk is one string,
written to the server in one call (`stage`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec

from apps.core.jsontext import decode_error_message
from apps.ingestions.engine.checks import NULL, Invalid, copy_text, exact_number
from apps.ingestions.engine.reader import Line
from apps.ingestions.engine.records import RecordSpec, record_errors
from apps.ingestions.engine.results import RowError
from apps.ingestions.engine.rules import Rules

# Rows per chunk: the unit of COPY and of merging. A chunk also ends once its text reaches
# CHUNK_CHARS, whatever the rows' width: memory is bounded by the few chunks a load holds
# at once (being built, queued, being COPYed); once staged, a chunk is only its line range.
CHUNK_ROWS = 20_000
CHUNK_CHARS = 8 << 20
# The first chunk is short, so the merge starts early instead of waiting for a full one.
FIRST_CHUNK_ROWS = 2_000

_decode = msgspec.json.Decoder(float_hook=exact_number).decode  # numbers stay exact
# An integer longer than Python's limit for reading one (`sys.get_int_max_str_digits`,
# 4300) is refused by the decoder; outside a string, it is read again as a number with an
# exponent of 0: the same value, exact (a Decimal), as `1e4400` is read.
_LONG_INTEGER = re.compile(
    rb'"(?:[^"\\]|\\.)*+"|-?[1-9][0-9]{%d,}+(?![.eE])' % sys.get_int_max_str_digits(),
    re.DOTALL,
)
_encode = msgspec.json.encode

# r_errors: every problem of a row that has more than one, as a JSON list; NULL when the
# reject's field, code and message are its only problem (as `rejects.errors` stores them).
# r_warnings: a valid row's warnings (from rules that warn), as a JSON list; else NULL.
REJECT_COLUMNS = ("r_field", "r_code", "r_message", "r_raw", "r_errors", "r_warnings")

Progress = Callable[[int], None]  # rows done so far


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive lines of a file as COPY text for the staging table."""

    first_line: int
    last_line: int
    text: str
    rows: int  # non-blank lines
    rejected: int
    last: bool = False  # known to end the file (a full chunk at the very end is not marked)
    warned: int = 0  # valid rows with warnings
    # the ids its valid rows name, per parent column named again (`Parent.named_again`)
    parent_ids: dict[str, set[str]] | None = None


# Objects and arrays one line may nest, its row's own object counting as one. The decoder
# recurses, and Python's recursion limit counts the frames it was called from: without a
# limit of its own, a line nested 940 deep was refused by the web server (a deep stack of
# middleware) and loaded by a worker. Far below that, and far above what a record needs.
MAX_JSON_DEPTH = 512
# A line this long or shorter cannot nest deeper (each level takes two bytes): not looked at
DEEP_LINE_BYTES = 2 * MAX_JSON_DEPTH


def too_deep(data: bytes, obj: object) -> bool:
    """Whether the decoded line `data` nests more than `MAX_JSON_DEPTH` objects and arrays
    (call it for lines longer than `DEEP_LINE_BYTES` only). Its brackets are counted first:
    the structure is walked only when there are more of them than the limit."""
    if data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
        return False
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if type(item) is dict:
            stack.extend((value, depth + 1) for value in item.values() if _nests(value))
        elif type(item) is list:
            stack.extend((value, depth + 1) for value in item if _nests(value))
    return False


def _nests(value: object) -> bool:
    return type(value) is dict or type(value) is list


def decode_row(data: bytes) -> object:
    """One line decoded as `parse_chunks` decodes it (numbers exact), or `RecursionError`
    when it nests deeper than `MAX_JSON_DEPTH` (as the decoder raises for deeper still).
    `parse_chunks` does the same inline: a call per line is paid on its hot path."""
    try:
        obj = _decode(data)
    except msgspec.ValidationError as exc:
        obj = long_integers(data, exc)
    if len(data) > DEEP_LINE_BYTES and too_deep(data, obj):
        raise RecursionError
    return obj


def long_integers(data: bytes, exc: msgspec.ValidationError) -> object:
    """A line the decoder refused (`exc`) decoded again with its integers too long for it
    read as numbers with an exponent of 0 (`_LONG_INTEGER`); `exc` again when that was not
    what it refused."""
    if "Integer value out of range" not in str(exc):
        raise exc

    def exponent(found: re.Match) -> bytes:
        token = found.group()
        return token if token.startswith(b'"') else token + b"e0"

    marked = _LONG_INTEGER.sub(exponent, data)
    if marked == data:
        raise exc
    return _decode(marked)


def json_error(exc: Exception, data: bytes) -> str:
    """The message of an `invalid_json` reject."""
    if isinstance(exc, UnicodeDecodeError):
        return _utf8_error(data)
    if isinstance(exc, RecursionError):  # by the decoder, or by `too_deep`
        return f"JSON nested too deeply (more than {MAX_JSON_DEPTH} objects and arrays)"
    return decode_error_message(str(exc), data)


def _utf8_error(data: bytes) -> str:
    """Where a line stops being UTF-8. The JSON decoder's error counts from the start of
    the string it was reading, not of the line: decoding the line again tells."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = " ".join(f"0x{byte:02x}" for byte in data[exc.start : exc.end])
        return (
            f"the line is not valid UTF-8 at byte offset {exc.start} "
            f"(the line's first byte is offset 0): {bad}, {exc.reason}"
        )
    return "the line is not valid UTF-8"


def raw_text(data: bytes) -> str:
    """A line as a reject's `raw`: UTF-8, undecodable bytes and NULs replaced."""
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _reject_text(
    number: int, blanks: str, field: str, code: str, message: str, raw: str, errors: str = NULL
) -> str:
    return (
        f"{number}\t{blanks}{copy_text(field)}\t{code}\t{copy_text(message)}\t"
        f"{copy_text(raw)}\t{errors}\t{NULL}\n"
    )


def contract_and_rule_errors(spec: RecordSpec, obj: object, rules: Rules | None) -> list[RowError]:
    """Every problem of a row the contract refused: the contract's (`record_errors`), then
    those its rules would reject it for."""
    problems = [RowError(p.field, p.code, p.message) for p in record_errors(spec, obj)]
    if rules is not None:
        problems += rules.rejecting(obj)
    return problems


def _errors_text(problems: list[RowError]) -> str:
    """A row's problems as `r_errors` or `r_warnings`: a JSON list; NULL for a reject whose
    field, code and message are its only problem."""
    if len(problems) < 2:
        return NULL
    return _problems_text(problems)


def _problems_text(problems: list[RowError]) -> str:
    listed = [{"field": p.field, "code": p.code, "message": p.message} for p in problems]
    return copy_text(_encode(listed).decode())


def parse_chunks(
    spec: RecordSpec,
    lines: Iterable[Line],
    *,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
    rules: Rules | None = None,
) -> Iterator[Chunk]:
    """Validate every line and yield the outcome as COPY text, `chunk_rows` rows at a time
    (default `CHUNK_ROWS`; the first chunk is at most `FIRST_CHUNK_ROWS`), or fewer once
    a chunk's text reaches `CHUNK_CHARS`: together they bound the memory a load needs.
    With `rules`, a row the contract takes is checked against them too: a rejecting
    problem makes it a reject, a warning is staged with it (`r_warnings`)."""
    # long: the per-line loop of every load, kept in one frame with its state in locals: a
    # call per line would be paid on the hot path.
    chunk_rows = chunk_rows or CHUNK_ROWS
    limit = min(chunk_rows, FIRST_CHUNK_ROWS)
    width = len(spec.fields)
    blanks = "\\N\t" * width
    valid_tail = "\t\\N" * len(REJECT_COLUMNS) + "\n"
    warned_tail = "\t\\N" * (len(REJECT_COLUMNS) - 1) + "\t"
    decode = _decode
    validate = spec.validate
    check = rules.check if rules is not None else None
    # The ids of the parents each chunk's valid rows name again and again (`named_again`),
    # collected as they go by: the merge locks each once (`keys.ParentLocks.lock_ids`).
    parent_at = tuple(
        (p.column, 1 + spec.columns.index(p.column)) for p in spec.parents if p.named_again
    )
    named, collect = _parent_sets(parent_at)
    parts: list[str] = []
    rows = rejected = warned = total = size = 0
    max_size = CHUNK_CHARS
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
                try:
                    obj = decode(data)
                except msgspec.ValidationError as exc:  # (costs nothing unless raised)
                    obj = long_integers(data, exc)
                if len(data) > DEEP_LINE_BYTES and too_deep(data, obj):
                    raise RecursionError  # refused as the decoder refuses deeper lines
                values = validate(obj, number)
            except Invalid as exc:
                # the rare refused row is looked at again, for every problem it has
                rejected += 1
                errors = _errors_text(contract_and_rule_errors(spec, obj, rules))
                parts.append(
                    _reject_text(
                        number, blanks, exc.field, exc.code, exc.message, raw_text(data), errors
                    )
                )
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                # not UTF-8, or nested deeper than any record needs, is not JSON we accept
                rejected += 1
                parts.append(
                    _reject_text(
                        number, blanks, "", "invalid_json", json_error(exc, data), raw_text(data)
                    )
                )
            else:
                if check is None or (found := check(obj)) is None:
                    parts.append("\t".join(values) + valid_tail)
                    for at, add in collect:
                        add(values[at])
                elif found[0]:  # rejected by the tenant's rules
                    rejected += 1
                    bad = found[0][0]
                    errors = _errors_text(found[0])
                    parts.append(
                        _reject_text(
                            number, blanks, bad.field, bad.code, bad.message, raw_text(data), errors
                        )
                    )
                else:  # loaded, with warnings
                    warned += 1
                    parts.append("\t".join(values) + warned_tail + _problems_text(found[1]) + "\n")
                    for at, add in collect:
                        add(values[at])
        size += len(parts[-1])
        if rows == limit or size >= max_size:
            total += rows
            yield Chunk(
                first, number, "".join(parts), rows, rejected, warned=warned, parent_ids=named
            )
            if progress is not None:
                progress(total)
            parts, rows, rejected, warned, first, size = [], 0, 0, 0, None, 0
            named, collect = _parent_sets(parent_at)
            limit = chunk_rows
    if rows or parts:
        total += rows
        yield Chunk(
            first or number,
            number,
            "".join(parts),
            rows,
            rejected,
            last=True,
            warned=warned,
            parent_ids=named,
        )
    if progress is not None:
        progress(total)


def _parent_sets(parent_at: tuple[tuple[str, int], ...]) -> tuple[dict[str, set[str]], list]:
    """Empty sets of ids for one chunk, per parent column, and (value index, the set's add)
    for the loop. A NULL (an optional parent left out) is not a parent: the merge drops it."""
    named: dict[str, set[str]] = {column: set() for column, _ in parent_at}
    return named, [(at, named[column].add) for column, at in parent_at]
