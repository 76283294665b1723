"""The record types: one table of fields and rules per type, declared once.

Each `Field` names its JSON key, its kind and its limits. `validate_record` applies a
type's table to one decoded object and returns the values to stage, already as COPY text
(escaped, `\\N` for NULL, in the order of `RecordSpec.columns`), or raises `Invalid` with the
reject code, field and message. Codes are those of SPEC section 5.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

import msgspec
import pycountry

# "XXX" (no currency) and "XTS" (testing) are codes, but never a price's currency.
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies) - {"XXX", "XTS"}
MAX_INT = 2**31 - 1
DECIMAL_LIMIT = 10**10  # numeric(12, 2): at most 10 integer digits
# The most decimal places a decimal may be written with (trailing zeros: "1.500" is 1.50),
# PostgreSQL numeric's own limit. Past it ("0e-99999999999") a value is out of range,
# decided from its exponent: written out in full, that zero alone takes 100 GB.
DECIMAL_MAX_PLACES = 16383
CENT = Decimal("0.01")
# Quantizing to cents: a value with nonzero digits past the cents raises Inexact.
_CENTS = Context(prec=28, traps=[Inexact, InvalidOperation])
LINE_TOTAL_TOLERANCE = Decimal("0.01")

_uuid = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).fullmatch
_email = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+").fullmatch
# Possessive: a long run of digits that does not match is refused in linear time (an
# ordinary `\d+\.?\d*` tries every split of the run: quadratic).
_numeric = re.compile(r"-?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][-+]?\d++)?").fullmatch
# Fast paths for the usual forms, taken only when the value is certainly valid as it is:
# a plain decimal within numeric(12, 2), and a UTC timestamp PostgreSQL reads unchanged.
_plain_decimal = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,2})?").fullmatch
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


Check = Callable[[str, Any], Any]


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number"
    )


def _wrong(name: str, value: Any, expected: str) -> Invalid:
    return Invalid(name, "invalid_type", f"{name} must be {expected}, got {_type_name(value)}")


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
    text = _check_str_254(name, value)
    if not _email(value):
        raise Invalid(name, "invalid_email", f"{name} is not a valid email address: {value!r}")
    return text


_check_str_254 = check_str(254)


def _shown(value: Any) -> str:
    """A value as a reject's message quotes it: its first 64 characters."""
    text = str(value)
    return text if len(text) <= 64 else f"{text[:64]}..."


def check_decimal(name: str, value: Any) -> str:
    """A number or numeric string, >= 0, at most 10 integer digits and 2 decimal places.

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
    if value.adjusted() >= 10 or value.as_tuple().exponent < -DECIMAL_MAX_PLACES:
        raise _decimal_out_of_range(name, value)
    try:
        return format(value.quantize(CENT, context=_CENTS), "f")
    except Inexact:  # nonzero digits past the cents
        raise _decimal_out_of_range(name, value) from None


def _decimal_out_of_range(name: str, value: Decimal) -> Invalid:
    return Invalid(
        name,
        "out_of_range",
        f"{name} allows 10 integer digits and 2 decimal places, got {_shown(value)}",
    )


def check_quantity(name: str, value: Any) -> str:
    if type(value) is not int:
        raise _wrong(name, value, "an integer")
    if not 1 <= value <= MAX_INT:
        raise Invalid(
            name, "out_of_range", f"{name} must be between 1 and {MAX_INT}, got {_shown(value)}"
        )
    return str(value)


def check_bool(name: str, value: Any) -> bool:
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


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    check: Check
    sql_type: str
    required: bool = True
    default: str = NULL  # staged (as COPY text) when an optional field is absent or null


@dataclass(frozen=True, slots=True)
class Parent:
    """A tenant-scoped parent a row needs before it can be merged."""

    column: str  # the column of this row that references the parent
    table: str  # the parent's final table, keyed by (tenant_id, column)


@dataclass(frozen=True, slots=True)
class RecordSpec:
    name: str
    key: str
    fields: tuple[Field, ...]
    parents: tuple[Parent, ...] = ()
    row_check: Callable[[list[Any]], None] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def table(self) -> str:
        return self.name

    @property
    def pending_table(self) -> str:
        return f"pending_{self.name}"


def _check_line_total(values: list[Any]) -> None:
    # values: [line, order_item_id, order_id, product_id, quantity, unit_price, line_total]
    quantity, unit_price, line_total = int(values[4]), Decimal(values[5]), Decimal(values[6])
    expected = quantity * unit_price
    if abs(expected - line_total) > LINE_TOTAL_TOLERANCE:
        raise Invalid(
            "line_total",
            "line_total_mismatch",
            f"line_total {line_total} differs from quantity x unit_price = {expected}",
        )


UUID, TS, DEC = "uuid", "timestamptz", "numeric(12,2)"

RECORDS: dict[str, RecordSpec] = {
    spec.name: spec
    for spec in (
        RecordSpec(
            "customers",
            key="customer_id",
            fields=(
                Field("customer_id", check_uuid, UUID),
                Field("name", check_str(255), "text"),
                Field("email", check_email, "text"),
                Field("metadata", check_object, "jsonb", required=False, default="{}"),
                Field("created_at", check_timestamp, TS),
            ),
        ),
        RecordSpec(
            "products",
            key="product_id",
            fields=(
                Field("product_id", check_uuid, UUID),
                Field("sku", check_str(64), "text"),
                Field("name", check_str(255), "text"),
                Field("price", check_decimal, DEC),
                Field("category_id", check_uuid, UUID, required=False),
                Field("active", check_bool, "boolean"),
                Field("created_at", check_timestamp, TS),
            ),
        ),
        RecordSpec(
            "orders",
            key="order_id",
            fields=(
                Field("order_id", check_uuid, UUID),
                Field("external_order_id", check_str(128), "text"),
                Field("customer_id", check_uuid, UUID),
                Field("customer_name_snapshot", check_str(255), "text"),
                Field("customer_email_snapshot", check_email, "text"),
                Field("total_amount", check_decimal, DEC),
                Field("currency", check_currency, "text"),
                Field("order_status", check_str(32), "text"),
                Field("order_date", check_timestamp, TS),
                Field("raw_payload", check_object, "jsonb", required=False),
                Field("created_at", check_timestamp, TS),
            ),
            parents=(Parent("customer_id", "customers"),),
        ),
        RecordSpec(
            "order_items",
            key="order_item_id",
            fields=(
                Field("order_item_id", check_uuid, UUID),
                Field("order_id", check_uuid, UUID),
                Field("product_id", check_uuid, UUID),
                Field("quantity", check_quantity, "integer"),
                Field("unit_price", check_decimal, DEC),
                Field("line_total", check_decimal, DEC),
            ),
            parents=(Parent("order_id", "orders"), Parent("product_id", "products")),
            row_check=_check_line_total,
        ),
    )
}

# Merge order: parents before children.
DEPENDENCY_ORDER = ("customers", "products", "orders", "order_items")
# For each type, the pending types that may resolve once rows of it arrive.
CHILDREN = {
    "customers": ("orders",),
    "products": ("order_items",),
    "orders": ("order_items",),
    "order_items": (),
}


def validate_record(spec: RecordSpec, obj: Any, line: int) -> list[str]:
    """Return `[line, *values]` as COPY text for a decoded row, or raise `Invalid`."""
    if type(obj) is not dict:
        raise Invalid("", "not_an_object", f"the line is a JSON {_type_name(obj)}, not an object")
    values: list[str] = [str(line)]
    get = obj.get
    for field in spec.fields:
        value = get(field.name)
        if value is None:
            if field.required:
                raise Invalid(field.name, "missing_field", f"{field.name} is required")
            values.append(field.default)
        else:
            values.append(field.check(field.name, value))
    if spec.row_check is not None:
        spec.row_check(values)
    return values


_PREFIXES = sorted(RECORDS, key=len, reverse=True)  # longest match first


def type_from_filename(filename: str) -> str | None:
    """`order_items_2024.ndjson.gz` -> "order_items"; None when the name does not tell."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    for name in _PREFIXES:
        if base.startswith(name) and base[len(name) : len(name) + 1] in ("_", ".", "-", ""):
            return name
    return None


def type_from_keys(keys: set[str]) -> str | None:
    """Guess a record type from the keys of a decoded row."""
    if "order_item_id" in keys:
        return "order_items"
    if "order_id" in keys and ("external_order_id" in keys or "currency" in keys):
        return "orders"
    if "product_id" in keys and "sku" in keys:
        return "products"
    if "customer_id" in keys and "email" in keys:
        return "customers"
    return None
