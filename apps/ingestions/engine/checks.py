"""Field checks: one function per kind of value, from a decoded JSON value to COPY text.

A check takes the field's name and its decoded value and returns the value as COPY text
(escaped; the staging table's column type reads it), or raises `Invalid` with the reject
code, field and message (codes are those of SPEC section 5). Numbers are exact: JSON
numbers reach a check as Decimal or int, never through float. Also here: the row rule
`LineTotal`, which checks fields of one row against each other. Which field gets which
check is the record definition's business (`records`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

import msgspec
import pycountry

# "XXX" (no currency) and "XTS" (testing) are codes, but never a price's currency.
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies) - {"XXX", "XTS"}
MAX_INT = 2**31 - 1  # PostgreSQL integer
# Python reads an integer of at most this many digits (sys.get_int_max_str_digits); the
# line's decoder reads a longer one as a Decimal of the same value (`parse.long_integers`)
_LONGEST_INT = sys.get_int_max_str_digits()
EMAIL_MAX_LENGTH = 254  # RFC 5321's limit on a whole address
# Money is numeric(DECIMAL_DIGITS, DECIMAL_PLACES): at most 10 integer digits, 2 places.
DECIMAL_DIGITS = 12
DECIMAL_PLACES = 2
_INTEGER_DIGITS = DECIMAL_DIGITS - DECIMAL_PLACES
DECIMAL_LIMIT = 10**_INTEGER_DIGITS
# The most decimal places a decimal may be written with (trailing zeros: "1.500" is 1.50),
# PostgreSQL numeric's own limit. Past it ("0e-99999999999") a value is out of range,
# decided from its exponent: written out in full, that zero alone takes 100 GB.
DECIMAL_MAX_PLACES = 16383
CENT = Decimal(1).scaleb(-DECIMAL_PLACES)  # 0.01
# Quantizing to cents: a value with nonzero digits past the cents raises Inexact.
_CENTS = Context(prec=28, traps=[Inexact, InvalidOperation])
LINE_TOTAL_TOLERANCE = Decimal("0.01")

# The patterns of uuids and emails, written in the part of regular expressions that Python
# and ECMA-262 (JSON Schema's `pattern`) read alike, so that `contract` publishes them as they
# are: whole-string matches, explicit character classes (`\s` and `\d` differ between them).
UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The characters Python's `\s` matches in text (tests/ingestions/engine/test_contract.py).
SPACE = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_PATTERN = rf"[^@{SPACE}]+@[^@{SPACE}.]+(?:\.[^@{SPACE}.]+)+"
_uuid = re.compile(UUID_PATTERN).fullmatch
_email = re.compile(EMAIL_PATTERN).fullmatch
# Possessive: a long run of digits that does not match is refused in linear time (an
# ordinary `\d+\.?\d*` tries every split of the run: quadratic). `\d` is any Unicode
# decimal digit, as Decimal reads them ("١٢" is 12).
_numeric = re.compile(r"-?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][-+]?\d++)?").fullmatch
# Fast paths for the usual forms, taken only when the value is certainly valid as it is:
# a plain decimal within numeric(12, 2), and a UTC timestamp PostgreSQL reads unchanged.
_plain_decimal = re.compile(
    rf"[0-9]{{1,{_INTEGER_DIGITS}}}(?:\.[0-9]{{1,{DECIMAL_PLACES}}})?"
).fullmatch
_utc_timestamp = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z"
).fullmatch
_json_encode = msgspec.json.Encoder(decimal_format="number").encode
# The escape of a NUL in encoded JSON: a \u0000 after an even number of backslashes (after
# an odd number it is the text "\u0000", a backslash and five characters).
_nul_escape = re.compile(r"(?<!\\)(?:\\\\)*\\u0000").search
_needs_escape = re.compile(r"[\\\t\n\r]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"  # COPY text for NULL


def copy_text(value: str) -> str:
    """`value` as a field of COPY's text format."""
    return value.translate(_ESCAPES) if _needs_escape(value) else value


class OutOfRangeNumber(str):
    """A JSON number too large (or too small) for any Decimal; its text is kept."""


def exact_number(text: str) -> Decimal | OutOfRangeNumber:
    """The decoder's hook for JSON numbers with a fraction or exponent: exact, never float."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return OutOfRangeNumber(text)


class Invalid(Exception):  # noqa: N818 - a reject, not a program error
    """A field (or the row) breaks a rule; becomes a reject."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message


Check = Callable[[str, Any], str]  # (field name, decoded value) -> COPY text


def type_name(value: Any) -> str:
    """A decoded JSON value's type as JSON names it."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _wrong(name: str, value: Any, expected: str) -> Invalid:
    return Invalid(name, "invalid_type", f"{name} must be {expected}, got {type_name(value)}")


def check_uuid(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _wrong(name, value, "a UUID string")
    if not _uuid(value):
        raise Invalid(name, "invalid_uuid", f"{name} is not a valid UUID: {value[:64]!r}")
    return value


def check_str(max_length: int) -> Check:
    def check(name: str, value: Any) -> str:
        if type(value) is not str:
            raise _wrong(name, value, "a string")
        if len(value) > max_length:
            raise Invalid(
                name, "too_long", f"{name} is {len(value)} characters; the limit is {max_length}"
            )
        if "\x00" in value:
            raise Invalid(name, "invalid_type", f"{name} contains a NUL character")
        return copy_text(value)

    return check


def check_email(name: str, value: Any) -> str:
    text = _check_email_length(name, value)
    if not _email(value):
        raise Invalid(name, "invalid_email", f"{name} is not a valid email address: {value!r}")
    return text


_check_email_length = check_str(EMAIL_MAX_LENGTH)


def _shown(value: Any) -> str:
    """A value as a reject's message quotes it: its first 64 characters."""
    text = str(value)
    return text if len(text) <= 64 else f"{text[:64]}..."


def check_decimal(name: str, value: Any) -> str:
    """A number or numeric string, >= 0, within numeric(DECIMAL_DIGITS, DECIMAL_PLACES):
    at most 10 integer digits and 2 decimal places.

    The decoder hands JSON numbers over as Decimal (or int), never as float, so no value
    is ever rounded through binary floating point. The usual forms are taken as they come;
    the rest go through `_cents`.
    """
    kind = type(value)
    if kind is str:
        if _plain_decimal(value):
            return value
        if not _numeric(value):
            raise Invalid(
                name, "invalid_type", f"{name} must be a decimal number, got {_shown(value)!r}"
            )
        value = exact_number(value)
    elif kind is Decimal:
        text = str(value)  # scientific (so never plain) for a large or very small exponent
        if _plain_decimal(text):
            return text
    elif kind is int:
        if 0 <= value < DECIMAL_LIMIT:
            return str(value)
        value = Decimal(value)  # at most 4300 digits: the decoder makes no longer int
    elif kind is not OutOfRangeNumber:
        raise _wrong(name, value, "a decimal number or numeric string")
    return _cents(name, value)


def _cents(name: str, value: Decimal | OutOfRangeNumber) -> str:
    """`value` as COPY text with two decimal places, or `Invalid`.

    The bounds come from the sign, `adjusted()` and the exponent of `as_tuple()` first: only
    a value within them reaches arithmetic (the quantize), so none ever works on an exponent
    such as -99999999999 (formatting that zero takes 100 GB). The text staged always has
    two decimal places, never the digits the value was written with.
    """
    if type(value) is OutOfRangeNumber or not value.is_finite():
        raise Invalid(name, "out_of_range", f"{name} is out of range: {_shown(value)}")
    if value.is_zero():
        if value.adjusted() < -DECIMAL_MAX_PLACES:  # adjusted() of zero: its exponent
            raise _decimal_out_of_range(name, value)
        return "0.00"  # -0 and 0E+999999999 too
    if value.is_signed():
        raise Invalid(name, "out_of_range", f"{name} must be >= 0, got {_shown(value)}")
    # adjusted(): the exponent of the leading digit; as_tuple() only once that is bounded
    if value.adjusted() >= _INTEGER_DIGITS or value.as_tuple().exponent < -DECIMAL_MAX_PLACES:
        raise _decimal_out_of_range(name, value)
    try:
        return format(value.quantize(CENT, context=_CENTS), "f")
    except Inexact:  # nonzero digits past the cents
        raise _decimal_out_of_range(name, value) from None


def _decimal_out_of_range(name: str, value: Decimal) -> Invalid:
    return Invalid(
        name,
        "out_of_range",
        f"{name} allows {_INTEGER_DIGITS} integer digits and {DECIMAL_PLACES} "
        f"decimal places, got {_shown(value)}",
    )


def check_quantity(name: str, value: Any) -> str:
    if type(value) is not int:
        if _long_integer(value):
            raise Invalid(name, "out_of_range", f"{name} must be between 1 and {MAX_INT}")
        raise _wrong(name, value, "an integer")
    if not 1 <= value <= MAX_INT:
        raise Invalid(
            name, "out_of_range", f"{name} must be between 1 and {MAX_INT}, got {_shown(value)}"
        )
    return str(value)


def _long_integer(value: Any) -> bool:
    """An integer written with more digits than Python reads (`parse.long_integers`)."""
    return (
        type(value) is Decimal
        and value.adjusted() >= _LONGEST_INT
        and value.as_tuple().exponent == 0
    )


def check_bool(name: str, value: Any) -> str:
    if type(value) is not bool:
        raise _wrong(name, value, "true or false")
    return "t" if value else "f"


def check_timestamp(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _wrong(name, value, "an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            name, "invalid_timestamp", f"{name} is not an ISO 8601 timestamp: {value[:64]!r}"
        ) from None
    if _utc_timestamp(value):
        return value  # parsed, so a real date and time; already UTC
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # no offset means UTC
    try:
        # staged in UTC: PostgreSQL refuses some offsets Python takes (+23:59, seconds)
        return parsed.astimezone(UTC).isoformat()
    except OverflowError:
        raise Invalid(
            name, "invalid_timestamp", f"{name} is out of the supported range: {value[:64]!r}"
        ) from None


# jsonb stores numbers as PostgreSQL numeric: at most 131072 digits before the point and
# 16383 after it.
_JSONB_MAX_ADJUSTED = 131071
_JSONB_MIN_EXPONENT = -16383
# ... and prints them in full, without an exponent: "1e131071" is 8 bytes in and 131072
# digits out each time the row is read. An object's numbers may print to this many at most
# (counted for numbers of 16 digits or more before or after the point; any other prints to
# 32 digits at most).
JSONB_MAX_PRINTED_DIGITS = 1 << 20


def _check_numbers(name: str, value: Any) -> None:
    """Refuse numbers inside an object that jsonb cannot store (the COPY would fail), or
    that would print to more than `JSONB_MAX_PRINTED_DIGITS` digits together."""
    stack = [value]
    printed = 0
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is OutOfRangeNumber:
            raise _number_out_of_range(name, item)
        elif kind is Decimal:
            adjusted = item.adjusted()
            if adjusted > _JSONB_MAX_ADJUSTED:
                raise _number_out_of_range(name, item)
            exponent = item.as_tuple().exponent
            if exponent < _JSONB_MIN_EXPONENT:
                raise _number_out_of_range(name, item)
            if adjusted >= 16 or exponent <= -16:
                printed += max(adjusted, 0) + 1 + max(-exponent, 0)
                if printed > JSONB_MAX_PRINTED_DIGITS:
                    raise Invalid(
                        name,
                        "out_of_range",
                        f"{name} holds numbers that print to more than "
                        f"{JSONB_MAX_PRINTED_DIGITS} digits",
                    )


def _number_out_of_range(name: str, item: Any) -> Invalid:
    return Invalid(name, "out_of_range", f"{name} holds a number out of range: {_shown(item)}")


def check_object(name: str, value: Any) -> str:
    if type(value) is not dict:
        raise _wrong(name, value, "an object")
    _check_numbers(name, value)
    text = _json_encode(value).decode()
    if "\\u0000" in text and _nul_escape(text):
        raise Invalid(name, "invalid_type", f"{name} contains a NUL character")
    return copy_text(text)


def check_currency(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _wrong(name, value, "an ISO 4217 currency code")
    if value not in CURRENCIES:
        raise Invalid(
            name, "invalid_currency", f"{name} is not an active ISO 4217 code: {value[:16]!r}"
        )
    return value


def _in_cents(text: str) -> int:
    """A money value as `check_decimal` stages it (digits, then at most two places: "7",
    "7.5", "7.50") in whole cents. Exact: `LineTotal` compares quantity x price with the
    total within one cent in integers, which is its Decimal test times 100, and cheaper."""
    whole, _, places = text.partition(".")
    return int(whole + places.ljust(2, "0"))


RowCheck = Callable[[list[str]], None]  # `[line, *values]` as COPY text; raises `Invalid`


@dataclass(frozen=True, slots=True)
class LineTotal:
    """The row rule of an order item: `line_total` is `quantity x unit_price`, within
    `LINE_TOTAL_TOLERANCE`. Names the three fields; `bind` finds them in a row."""

    quantity: str
    unit_price: str
    line_total: str

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the rule reads: a row's rule is checked only once they are valid."""
        return (self.quantity, self.unit_price, self.line_total)

    def bind(self, columns: tuple[str, ...]) -> RowCheck:
        """The check of a row whose values come in the order of `columns` (after the line
        number, as `validate_record` builds them)."""
        at_quantity, at_price, at_total = (
            columns.index(name) + 1 for name in (self.quantity, self.unit_price, self.line_total)
        )
        total_name = self.line_total

        def check(values: list[str]) -> None:
            quantity = int(values[at_quantity])
            # in whole cents first: the same test, in integers (see `_in_cents`)
            cents = quantity * _in_cents(values[at_price]) - _in_cents(values[at_total])
            if -1 <= cents <= 1:
                return
            unit_price, line_total = Decimal(values[at_price]), Decimal(values[at_total])
            expected = quantity * unit_price
            if abs(expected - line_total) > LINE_TOTAL_TOLERANCE:
                raise Invalid(
                    total_name,
                    "line_total_mismatch",
                    f"line_total {line_total} differs from quantity x unit_price = {expected}",
                )

        return check
