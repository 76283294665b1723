"""The published record contract: one JSON Schema (2020-12) per record type, derived from
the record definition (`records`: fields, required or not, key, parents, row rule) and the
checks' own patterns and limits (`checks`), and the field table of the docs made from it.

`record_schema` describes what `validate_record` accepts, as far as JSON Schema can. What
it cannot say is said in words: in `description`, and in `x-rules` (`{"code", "rule"}`: the
reject code the engine gives and the rule), on the field or, for a row rule, on the schema.
Those are: a row rule across fields (`line_total`), a number's written form (an integer
written `1.0`; a decimal written with more places than PostgreSQL keeps), a numeric string
with an exponent (read by the engine, left out of the pattern: its range is not a regular
language), calendar dates and UTC's year range, and jsonb's number range. Patterns use
only what Python's `re` and ECMA-262 read alike (explicit classes, no `\\d` or `\\s`).
"""

from __future__ import annotations

import copy
import unicodedata
from functools import cache
from typing import Any

from apps.ingestions.engine.checks import (
    CENT,
    CURRENCIES,
    DECIMAL_DIGITS,
    DECIMAL_LIMIT,
    DECIMAL_MAX_PLACES,
    DECIMAL_PLACES,
    EMAIL_MAX_LENGTH,
    EMAIL_PATTERN,
    LINE_TOTAL_TOLERANCE,
    MAX_INT,
    UUID_PATTERN,
    check_bool,
    check_currency,
    check_decimal,
    check_email,
    check_object,
    check_quantity,
    check_timestamp,
    check_uuid,
)
from apps.ingestions.engine.parse import MAX_JSON_DEPTH
from apps.ingestions.engine.records import RECORDS, Field, RecordSpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NO_NUL = r"^[^\u0000]*$"
_ANY = r"[\s\S]"  # any one character, newlines too (ECMA's `.` takes no newline)


def _whole(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _class(chars: list[str]) -> str:
    """A character class of `chars` (sorted), runs as ranges: ASCII as it is, the rest of
    the Basic Multilingual Plane as \\uXXXX, characters above it as themselves."""
    runs: list[list[int]] = []
    for code in map(ord, chars):
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])

    def one(code: int) -> str:
        return chr(code) if code < 0x80 or code > 0xFFFF else f"\\u{code:04x}"

    return "[" + "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in runs) + "]"


def _money_pattern() -> str:
    """The plain numeric strings `check_decimal` takes: at most 10 integer digits (after
    any leading zeros), digits past the cents all zeros, a minus sign only on a zero. A
    digit is any Unicode decimal digit (Python's `\\d`, which Decimal reads: "١٢.٥" is
    12.50), spelt out: ECMA-262's `\\d` is ASCII. The bound on places (`DECIMAL_MAX_PLACES`)
    is left to `x-rules`: those classes repeated 16383 times are more than validators'
    regex engines compile."""
    decimal = [chr(n) for n in range(0x110000) if chr(n).isdecimal()]
    digit, zero = _class(decimal), _class([c for c in decimal if unicodedata.decimal(c) == 0])
    integer = f"{zero}*{digit}{{1,{DECIMAL_DIGITS - DECIMAL_PLACES}}}"
    kept = f"{digit}{{0,{DECIMAL_PLACES}}}{zero}*"  # the cents, then zeros only
    some_kept = f"(?:{digit}{{1,{DECIMAL_PLACES}}}{zero}*|{zero}+)"  # the same, not empty
    negative_zero = f"-(?:{zero}+(?:\\.{zero}*)?|\\.{zero}+)"
    return _whole(f"{integer}(?:\\.{kept})?|\\.{some_kept}|{negative_zero}")


def _clock(hour: str, minute: str, second: str, *, tail: int) -> str:
    """A time as fromisoformat reads it (and an offset's hours, minutes, seconds): hours,
    then minutes and seconds with colons or without; a fraction ("." or ",") after the last;
    after colon-separated seconds ":" too; after seconds without colons, `tail` or more
    digits are a fraction as well (two at the end of the text, one before an offset)."""
    fraction = "[.,][0-9]+"
    extended = f":{minute}(?:{fraction}|:{second}(?:[.,:][0-9]+)?)?"
    basic = f"{minute}(?:{fraction}|{second}(?:{fraction}|[0-9]{{{tail},}})?)?"
    return f"{hour}(?:{fraction}|{extended}|{basic})?"


def _timestamp_pattern() -> str:
    """The forms `datetime.fromisoformat` reads: a calendar or week date, with or without
    dashes; then, after any one character, a time and an offset (`Z`, or hours [minutes
    [seconds]]). After a dashed week date with its day (2024-W01-1) the separator is not a
    digit: fromisoformat reads 2024-W01-15 as 2024-W01, "-", 15h."""
    year = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # not 0000
    month, day = "(?:0[1-9]|1[0-2])", "(?:0[1-9]|[12][0-9]|3[01])"
    week = "W(?:0[1-9]|[1-4][0-9]|5[0-3])"
    date = f"{year}(?:-{month}-{day}|{month}{day}|-{week}|{week}[1-7]?)"
    week_day = f"{year}-{week}-[1-7]"
    hour, minute = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
    # an offset's minutes and seconds are any two digits (+01:99 is +02:39)
    offset = f"(?:Z|[-+]{_clock(hour, '[0-9]{2}', '[0-9]{2}', tail=2)})"
    time = (
        f"(?:{_clock(hour, minute, minute, tail=2)}|{_clock(hour, minute, minute, tail=1)}{offset})"
    )
    return f"^(?:{date}(?:{_ANY}{time})?|{week_day}(?:[^0-9]{time})?)$"


def _rule(code: str, rule: str) -> dict[str, str]:
    return {"code": code, "rule": rule}


def _text(field: Field) -> dict[str, Any]:
    return {
        "type": "string",
        "maxLength": field.max_length,
        "pattern": _NO_NUL,
        "description": f"Text of at most {field.max_length} characters (not bytes), no NUL.",
    }


_JSONB_REF = "#/$defs/jsonb"
_JSONB = {
    "description": "Any JSON; no NUL in its strings or keys.",
    "pattern": _NO_NUL,
    "propertyNames": {"pattern": _NO_NUL},
    "additionalProperties": {"$ref": _JSONB_REF},
    "items": {"$ref": _JSONB_REF},
}
_LIMIT = f"{DECIMAL_DIGITS - DECIMAL_PLACES} integer digits and {DECIMAL_PLACES} places"


@cache
def _kinds() -> dict[Any, dict[str, Any]]:
    """Each check's schema, from the field (text's limit) and the check's constants; made
    once, on first use (the digit classes take a pass over Unicode)."""
    # long: one table, a schema and its words per check, read best in one place
    return {
        check_uuid: {
            "type": "string",
            "format": "uuid",
            "pattern": _whole(UUID_PATTERN),
            "description": "A UUID: 32 hex digits (either case) grouped 8-4-4-4-12.",
        },
        check_email: {
            "type": "string",
            "maxLength": EMAIL_MAX_LENGTH,
            "allOf": [{"pattern": _NO_NUL}, {"pattern": _whole(EMAIL_PATTERN)}],
            "description": f"An email address: local@domain.tld, no spaces, at most "
            f"{EMAIL_MAX_LENGTH} characters.",
        },
        check_decimal: {
            "anyOf": [
                {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMaximum": DECIMAL_LIMIT,
                    "multipleOf": float(CENT),
                },
                {"type": "string", "pattern": _money_pattern()},
            ],
            "description": f"An exact decimal >= 0 with at most {_LIMIT} (trailing zeros are "
            'fine): a JSON number or a numeric string ("12.50").',
            "x-rules": [
                _rule(
                    "out_of_range",
                    f"written with at most {DECIMAL_MAX_PLACES} decimal places (PostgreSQL's "
                    "limit), as a number or a string",
                ),
                _rule(
                    "invalid_type",
                    'a numeric string may also have an exponent ("1.25e2"), within the same '
                    "bounds; the pattern lists the plain forms only",
                ),
            ],
        },
        check_quantity: {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_INT,
            "description": f"A whole number from 1 to {MAX_INT}, written without a fraction or "
            "exponent.",
            "x-rules": [_rule("invalid_type", "written as an integer: 1.0 or 1e0 is refused")],
        },
        check_bool: {"type": "boolean", "description": "true or false."},
        check_timestamp: {
            "type": "string",
            "pattern": _timestamp_pattern(),
            "description": "An ISO 8601 date and time, as Python's datetime.fromisoformat reads "
            '(e.g. "2024-06-01T12:30:00Z", "2024-06-01 12:30:00.5+02:00", "2024-06-01"); '
            "without an offset it is UTC. Digits past the microsecond are dropped, not "
            "rounded.",
            "x-rules": [
                _rule(
                    "invalid_timestamp",
                    "the date exists (no 30 February; week 53 only in a year that has one), the "
                    "offset is under 24 hours, and the time in UTC is within years 1 to 9999",
                )
            ],
        },
        check_object: {
            "type": "object",
            "$ref": _JSONB_REF,
            "description": "A JSON object, stored as jsonb.",
            "x-rules": [
                _rule(
                    "out_of_range",
                    "its numbers fit PostgreSQL jsonb (at most 131072 digits before the point "
                    "and 16383 after it; 2^20 digits printed in all)",
                )
            ],
        },
        check_currency: {
            "type": "string",
            "enum": sorted(CURRENCIES),
            "description": "An active ISO 4217 alpha-3 code, upper case (not XXX or XTS).",
        },
    }


def _field_schema(field: Field) -> dict[str, Any]:
    kinds = _kinds()
    if field.check in kinds:
        schema = dict(kinds[field.check])
    elif getattr(field.check, "__qualname__", "").startswith("check_str."):
        schema = _text(field)
    else:
        raise ValueError(f"{field.name}: no schema for its check {field.check!r}")
    if not field.required:  # absent or null: the same
        schema["description"] += " Optional: absent or null."
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        else:
            schema["anyOf"] = [{"type": "null"}, *schema["anyOf"]]
    schema["x-column"] = field.sql_type
    return schema


def _row_rules(spec: RecordSpec) -> list[dict[str, str]]:
    if spec.row_rule is None:
        return []
    rule = spec.row_rule
    return [
        _rule(
            "line_total_mismatch",
            f"{rule.line_total} = {rule.quantity} x {rule.unit_price}, within "
            f"{LINE_TOTAL_TOLERANCE}",
        )
    ]


def record_schema(record_type: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one row of `record_type`, from its definition. Raises
    `KeyError` for a type that is not one."""
    spec = RECORDS[record_type]
    properties = {field.name: _field_schema(field) for field in spec.fields}
    rules = _row_rules(spec)
    for rule in rules:
        field = properties[spec.row_rule.line_total]  # type: ignore[union-attr]
        field["description"] += f" Must be {rule['rule']}."
        field["x-rules"] = [*field.get("x-rules", []), rule]
    parents = [f"{p.column} refers to {p.record_type}.{p.column}" for p in spec.parents]
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "title": record_type,
        "description": f"One {record_type} record: a JSON object, one per NDJSON line. Key: "
        f"{spec.key}. "
        + "".join(f"{p} (a row waits for its parent: docs/engine.md). " for p in parents)
        + "A null optional field is as if absent; other fields are ignored.",
        "type": "object",
        "properties": properties,
        "required": [field.name for field in spec.fields if field.required],
        "x-key": spec.key,
        "x-parents": [{"type": p.record_type, "field": p.column} for p in spec.parents],
    }
    if rules:
        schema["x-rules"] = rules
    if any(field.check is check_object for field in spec.fields):
        schema["$defs"] = {"jsonb": _JSONB}
    return copy.deepcopy(schema)  # the caller's own: the kinds' parts are shared


def _type_words(schema: dict[str, Any]) -> str:
    kinds = schema.get("type") or [branch["type"] for branch in schema["anyOf"]]
    return " or ".join([kinds] if isinstance(kinds, str) else kinds)


def contract_markdown(*, url: str) -> str:
    """The docs' field tables (docs/contract.md), one per type, from `record_schema`; `url`
    is where the API serves the schemas (with `{type}`)."""
    out = [
        "# The record contract",
        "",
        "<!-- Generated by `python manage.py contract_docs` from the record definition "
        "(apps/ingestions/engine/records.py); do not edit. -->",
        "",
        "Each record type's JSON Schema (2020-12) is served at "
        f"`GET {url}` (no key needed). It and the tables below are made from the "
        "definition the engine validates with. A field's *Also* column holds what JSON "
        "Schema cannot say, with the reject code the engine gives. A null optional field "
        "is as if absent; fields not listed are ignored. A line nests at most "
        f"{MAX_JSON_DEPTH} objects and arrays, its own object counting (deeper: "
        "`invalid_json`).",
    ]
    for record_type in RECORDS:
        schema = record_schema(record_type)
        out += ["", f"## {record_type}", "", schema["description"], ""]
        out += ["| Field | JSON type | Required | Accepts | Also |", "|---|---|---|---|---|"]
        for name, field in schema["properties"].items():
            also = "; ".join(f"{r['rule']} (`{r['code']}`)" for r in field.get("x-rules", []))
            required = "yes" if name in schema["required"] else "no"
            accepts = field["description"].replace("|", "\\|")
            out.append(f"| `{name}` | {_type_words(field)} | {required} | {accepts} | {also} |")
    return "\n".join(out) + "\n"
