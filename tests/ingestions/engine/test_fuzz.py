"""Fuzzing the engine through its entry point (the service the `load` fixture calls):
generated NDJSON (random bytes, random JSON, valid rows with fields dropped, of the wrong
type, huge numbers, odd unicode, NULs, very long strings, repeated ids) checked against a
small model of what every line must become (SPEC 4 and 5).

Every example creates a tenant of its own inside the test instead of taking the `tenant`
fixture: a function-scoped fixture would be shared by all examples of a test (Hypothesis'
`function_scoped_fixture` health check), so examples would see each other's rows. And each
runs in a savepoint rolled back at its end (`_example`): the test's one transaction
(`django_db`) would otherwise pile up every example's locks (a staging table each).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from django.db import transaction
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from apps.ingestions.engine import RECORDS, check_line, line_of
from apps.ingestions.engine.testing import ROW_FACTORIES, customer_row, order_row, product_row, uid
from apps.ingestions.models import Customer, Product, Reject, Upload
from apps.ingestions.services import upload_ingest_path
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db

MAX_LINE_BYTES = 1024 * 1024  # the default line limit (settings.INGEST_MAX_LINE_BYTES)
MAX_PLACES = 16383  # the most decimal places a decimal may be written with
# database=None: nothing written under the repository; a failure prints its example.
FUZZ = settings(max_examples=100, deadline=None, database=None)
BOM = b"\xef\xbb\xbf"
_MAGICS = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd")  # gzip, zstd
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}").fullmatch


# --- the model ------------------------------------------------------------------------------


class Spec(NamedTuple):
    name: str
    kind: str
    required: bool = True
    limit: int = 0  # characters, for text


FIELDS: dict[str, tuple[Spec, ...]] = {
    "customers": (
        Spec("customer_id", "uuid"),
        Spec("name", "text", limit=255),
        Spec("email", "email"),
        Spec("metadata", "object", required=False),
        Spec("created_at", "timestamp"),
    ),
    "products": (
        Spec("product_id", "uuid"),
        Spec("sku", "text", limit=64),
        Spec("name", "text", limit=255),
        Spec("price", "decimal"),
        Spec("category_id", "uuid", required=False),
        Spec("active", "bool"),
        Spec("created_at", "timestamp"),
    ),
    "orders": (
        Spec("order_id", "uuid"),
        Spec("external_order_id", "text", limit=128),
        Spec("customer_id", "uuid"),
        Spec("customer_name_snapshot", "text", limit=255),
        Spec("customer_email_snapshot", "email"),
        Spec("total_amount", "decimal"),
        Spec("currency", "currency"),
        Spec("order_status", "text", limit=32),
        Spec("order_date", "timestamp"),
        Spec("raw_payload", "object", required=False),
        Spec("created_at", "timestamp"),
    ),
    "order_items": (
        Spec("order_item_id", "uuid"),
        Spec("order_id", "uuid"),
        Spec("product_id", "uuid"),
        Spec("quantity", "quantity"),
        Spec("unit_price", "decimal"),
        Spec("line_total", "decimal"),
    ),
}
TYPES = tuple(FIELDS)

VALID = ("valid",)  # the line loads: inserted, updated, unchanged, pending or a duplicate
UNKNOWN = ("unknown",)  # the model cannot tell; only the invariants are checked


class Raw(NamedTuple):
    """A value written verbatim as JSON text (a number json.dumps cannot write, a raw NUL)."""

    text: str


DROP = object()  # the field is left out


class Change(NamedTuple):
    """A field's new value and what it must cause: a reject code (for the field, or "" for
    the whole line), or None when the value is valid. `number` is a valid quantity, or a
    valid decimal in cents, for the line_total check."""

    value: Any
    code: str | None
    number: int | None = None


def _walk(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _has_surrogate(value: Any) -> bool:
    return any(
        isinstance(s, str) and any("\ud800" <= c <= "\udfff" for c in s) for s in _walk(value)
    )


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _outcome_of_object(record_type: str, obj: Any) -> tuple:
    """What a decoded line must become, as far as the model can tell without its values."""
    if not isinstance(obj, dict):
        return ("", "not_an_object")
    for spec in FIELDS[record_type]:
        if obj.get(spec.name) is None:
            if spec.required:
                return (spec.name, "missing_field")
            continue
        return UNKNOWN  # a field with some value: could be anything
    return UNKNOWN


def _outcome_of_bytes(record_type: str, data: bytes) -> tuple:
    """The model for an arbitrary line: not UTF-8 or not JSON (the standard library's strict
    reading, which like the engine refuses NaN and lone surrogates) is `invalid_json`."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_refuse)
    except (ValueError, RecursionError):
        return ("", "invalid_json")
    if _has_surrogate(obj):
        return ("", "invalid_json")
    return _outcome_of_object(record_type, obj)


class Line(NamedTuple):
    data: bytes
    outcome: tuple  # VALID, UNKNOWN or (field, code)
    key: str | None = None  # the record's id, for a valid line
    errors: tuple | None = None  # every (field, code) of a rejected line, when the model knows


def _encode(row: dict[str, Any], *, ascii_only: bool) -> bytes:
    """A row as one JSON line; `Raw` values verbatim."""
    marked, literals = {}, {}
    for name, value in row.items():
        if value is DROP:
            continue
        if isinstance(value, Raw):
            marked[name] = f"\x01{name}\x01"
            literals[json.dumps(marked[name], ensure_ascii=ascii_only)] = value.text
        else:
            marked[name] = value
    text = json.dumps(marked, ensure_ascii=ascii_only)
    for marker, literal in literals.items():
        text = text.replace(marker, literal)
    return text.encode("utf-8", "surrogatepass")


def _row_errors(
    record_type: str, changes: dict[str, Change], numbers: dict[str, int]
) -> tuple[tuple[str, str], ...]:
    """Every (field, code) of a changed row, as its reject lists them: each field's in field
    order, then the row rule's, checked only when the fields it reads are valid. A line that
    does not decode has that one problem; a valid row none."""
    codes = [c for c in changes.values() if c.code is not None and c.code.startswith("line:")]
    if codes:  # the line does not decode: nothing of it is looked at
        return (("", codes[0].code.removeprefix("line:")),)
    found = tuple(
        (spec.name, change.code)
        for spec in FIELDS[record_type]
        if (change := changes.get(spec.name)) is not None and change.code is not None
    )
    # line_total within a cent of quantity x unit_price (all in cents here)
    mismatch = abs(numbers["quantity"] * numbers["unit_price"] - numbers["line_total"]) > 1
    inputs_valid = not {name for name, _ in found} & set(_BASE_NUMBERS)
    if record_type == "order_items" and inputs_valid and mismatch:
        found += (("line_total", "line_total_mismatch"),)
    return found


# --- strategies -----------------------------------------------------------------------------

_ODD = [
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\ufeff",  # BOM inside a string
    "e\u0301",  # combining accent
    "\U0001f680",
    "\u2028",
    "\x00",
    "\\",
    "\\N",
    "\t",
    "\n",
    "\\u0000",  # a backslash and "u0000": text, not a NUL
    "\x7f",
    "\ufffd",
]
odd_text = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(_ODD)), max_size=300
).map("".join)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)


def _wrong(*values: Any) -> st.SearchStrategy[Change]:
    return st.sampled_from(values).map(lambda v: Change(v, "invalid_type"))


_NOT_A_STRING = (0, 7, Raw("1.5"), True, False, [], ["x"], {}, {"a": 1})


def _positional(coefficient: int, exponent: int) -> str:
    """coefficient x 10^exponent written without an exponent: 150, -2 -> "1.50"."""
    digits = str(coefficient)
    if exponent >= 0:
        return digits + "0" * exponent if coefficient else "0"  # "00" is no JSON number
    digits = digits.rjust(-exponent + 1, "0")
    return f"{digits[:exponent]}.{digits[exponent:]}"


def _decimal_code(negative: bool, coefficient: int, exponent: int) -> tuple[str | None, int | None]:
    """(code, cents) of the decimal -coefficient x 10^exponent (negative) or + ..., from
    integer arithmetic only."""
    if coefficient == 0:
        return (None, 0) if exponent >= -MAX_PLACES else ("out_of_range", None)
    if negative:
        return "out_of_range", None
    if exponent + len(str(coefficient)) - 1 >= 10 or exponent < -MAX_PLACES:
        return "out_of_range", None
    if exponent >= -2:
        return None, coefficient * 10 ** (exponent + 2)
    scale = 10 ** (-2 - exponent)
    if coefficient % scale:
        return "out_of_range", None
    return None, coefficient // scale


@st.composite
def decimal_literal(draw) -> Change:
    """A decimal as a string or a JSON number, positional or with an exponent, in range or
    not (huge exponents both ways, too many places, negative, too many digits)."""
    negative = draw(st.integers(0, 9)) == 0
    coefficient = draw(
        st.one_of(
            st.integers(0, 10**12),
            st.sampled_from([0, 1, 5, 150, 1999, 999999999999]),
            st.builds(lambda c, z: c * 10**z, st.integers(1, 9999), st.integers(0, 30)),
        )
    )
    exponent = draw(
        st.one_of(
            st.integers(-20, 12),
            st.integers(-MAX_PLACES - 100, -MAX_PLACES + 100),
            st.sampled_from([-99999999999, -30000000, 999999999, 400, -400]),
        )
    )
    code, cents = _decimal_code(negative, coefficient, exponent)
    sign = "-" if negative else ""
    if -60 <= exponent <= 30 and draw(st.booleans()):
        text = sign + _positional(coefficient, exponent)
    else:
        marker = draw(st.sampled_from(["e", "E", "e+", "E+"])) if exponent >= 0 else "e"
        text = f"{sign}{coefficient}{marker}{exponent}"
    if draw(st.booleans()):
        return Change(text, code, cents)  # a numeric string
    return Change(Raw(text), code, cents)  # a JSON number


def _arabic(text: str) -> str:
    return text.translate({ord(d): 0x0660 + int(d) for d in "0123456789"})


def _ones(n: int) -> Change:
    """A numeric string of n ones: valid up to 10 digits (none is not a number)."""
    if n == 0:
        return Change("", "invalid_type")
    return Change("1" * n, None, int("1" * n) * 100) if n <= 10 else Change("1" * n, "out_of_range")


def decimal_change() -> st.SearchStrategy[Change]:
    return st.one_of(
        decimal_literal(),
        decimal_literal(),
        decimal_literal()
        .filter(lambda c: c.code is None and isinstance(c.value, str) and "e" not in c.value)
        .map(lambda c: Change(_arabic(c.value), None, c.number)),
        st.integers(11, 4300).map(lambda n: Change(Raw("9" * n), "out_of_range")),
        st.integers(0, 200_000).map(_ones),
        st.integers(0, 200_000).map(lambda n: Change("1" * n + "x", "invalid_type")),
        st.just(Change(Raw("9" * 4301), "out_of_range")),  # past Python's int digits
        st.just(Change(Raw("NaN"), "line:invalid_json")),
        _wrong(True, False, [], ["1"], {}, "abc", "19,99", " 1", "NaN", "Infinity", "1_0", ""),
    )


def quantity_change() -> st.SearchStrategy[Change]:
    def of(n: int) -> Change:
        return Change(n, None, n) if 1 <= n <= 2**31 - 1 else Change(n, "out_of_range")

    return st.one_of(
        st.integers(-5, 2**31 + 5).map(of),
        st.integers(2**31 - 3, 2**31 + 3).map(of),
        st.integers(2**31, 10**4000).map(of),
        st.just(Change(Raw("9" * 4301), "out_of_range")),
        _wrong("3", True, [], {}, Raw("3.0"), Raw("2e0"), Raw("1e999999999"), Raw("-0.0")),
    )


def _text_code(text: str, limit: int) -> str | None:
    if len(text) > limit:
        return "too_long"
    return "invalid_type" if "\x00" in text else None


def text_change(limit: int) -> st.SearchStrategy[Change]:
    long = st.builds(
        lambda c, n: c * n,
        st.sampled_from(["x", "é", "\U0001f680", "\x00", "\\"]),
        st.one_of(st.sampled_from([limit, limit + 1]), st.integers(0, 3000), st.just(300_000)),
    )
    return st.one_of(
        st.one_of(odd_text, long).map(lambda s: Change(s, _text_code(s, limit))),
        _wrong(*_NOT_A_STRING),
    )


def email_change() -> st.SearchStrategy[Change]:
    return st.one_of(
        st.sampled_from(
            ["ada@example.com", "zoë@exämple.de", "x@y.z", "a" * 242 + "@example.com"]
        ).map(lambda s: Change(s, None)),
        st.sampled_from(
            ["ada.example.com", "ada@example", "a@b@example.com", "ada @example.com", "", "a@b..c"]
        ).map(lambda s: Change(s, "invalid_email")),
        st.integers(230, 300).map(
            lambda n: Change("a" * n + "@example.com", "too_long" if n > 242 else None)
        ),
        st.just(Change("ada\x00@example.com", "invalid_type")),
        _wrong(*_NOT_A_STRING),
    )


def uuid_change() -> st.SearchStrategy[Change]:
    bad = ["", "not-a-uuid", uid("x") + "0", uid("x")[:-1], uid("x").replace("-", "")]
    bad += ["{" + uid("x") + "}", uid("x")[:-1] + "\x00", uid("x")[:-1] + "é", " " + uid("x")]
    return st.one_of(
        st.uuids().map(lambda u: Change(str(u), None)),
        st.uuids().map(lambda u: Change(str(u).upper(), None)),
        st.sampled_from(bad).map(lambda s: Change(s, "invalid_uuid")),
        odd_text.filter(lambda s: not _UUID(s)).map(lambda s: Change(s, "invalid_uuid")),
        _wrong(*_NOT_A_STRING),
    )


_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def timestamp_change() -> st.SearchStrategy[Change]:
    bad = ["yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "", "02/01/2024"]
    bad += ["2024-01-02T03:04:05+25:00", "2024-01-02\x00", "0001-01-01T00:00:00+01:00"]
    return st.one_of(
        st.datetimes(
            min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - the bounds of naive and aware ones
            max_value=datetime(2100, 1, 1),  # noqa: DTZ001
            timezones=st.none() | _offsets,
        ).map(lambda d: Change(d.isoformat(), None)),
        st.sampled_from(bad).map(lambda s: Change(s, "invalid_timestamp")),
        _wrong(1704164645, Raw("1.5"), True, [], {}),
    )


def _object_code(value: dict) -> str | None:
    return "invalid_type" if any(isinstance(s, str) and "\x00" in s for s in _walk(value)) else None


_OUT_OF_RANGE_OBJECTS = [
    '{"n": 1e999999}',
    '{"n": [0e-99999999999]}',
    '{"a": {"b": -1e200000}}',
    '{"n": [' + ", ".join(["1e131071"] * 9) + "]}",  # jsonb would print 1.2 million digits
]


def object_change() -> st.SearchStrategy[Change]:
    return st.one_of(
        st.dictionaries(odd_text, json_value, max_size=5).map(lambda d: Change(d, _object_code(d))),
        st.sampled_from(_OUT_OF_RANGE_OBJECTS).map(lambda s: Change(Raw(s), "out_of_range")),
        st.just(Change(Raw('{"n": 1e-300, "m": [1.5e300, -0e-5]}'), None)),
        st.just(Change({"C:\\u0000": ["\\\\u0000", "\\"]}, None)),  # backslashes, no NUL
        _wrong("tier=gold", 7, [], [1], True),
    )


def currency_change() -> st.SearchStrategy[Change]:
    return st.one_of(
        st.sampled_from(["EUR", "USD", "JPY", "CHF", "GBP", "INR"]).map(lambda s: Change(s, None)),
        st.sampled_from(["eur", "ZZZ", "XXX", "XTS", "HRK", "EURO", "", "E\x00R", "€"]).map(
            lambda s: Change(s, "invalid_currency")
        ),
        _wrong(978, Raw("9.78"), True, [], {}),
    )


def bool_change() -> st.SearchStrategy[Change]:
    return st.one_of(
        st.booleans().map(lambda b: Change(b, None)),
        _wrong("true", "false", 1, 0, Raw("1.0"), [], {}),
    )


_CHANGES = {
    "uuid": uuid_change,
    "email": email_change,
    "decimal": decimal_change,
    "quantity": quantity_change,
    "timestamp": timestamp_change,
    "object": object_change,
    "currency": currency_change,
    "bool": bool_change,
}


def field_change(spec: Spec) -> st.SearchStrategy[Change]:
    """Any change of one field: left out, null, or a value of its kind's strategy."""
    absent = Change(DROP, "missing_field" if spec.required else None)
    null = Change(None, "missing_field" if spec.required else None)
    kind = text_change(spec.limit) if spec.kind == "text" else _CHANGES[spec.kind]()
    raw_nul = Change(Raw('"a\x00b"'), "line:invalid_json")  # a NUL byte, not \u0000
    return st.one_of(st.sampled_from([absent, null, raw_nul]), kind, kind)


_BASE_NUMBERS = {"quantity": 2, "unit_price": 1999, "line_total": 3998}  # order_item_row()
_KEYS = {spec.name: spec.key for spec in RECORDS.values()}  # the id field of each type


@st.composite
def mutated_row(draw, record_type: str) -> Line:
    """A valid row of the testing helpers, its id one of a few (so ids repeat), with up to
    three fields changed and maybe an unknown field added."""
    key = _KEYS[record_type]
    row = ROW_FACTORIES[record_type](**{key: uid(f"fuzz{draw(st.integers(0, 4))}")})
    specs = FIELDS[record_type]
    changes: dict[str, Change] = {}
    for spec in draw(st.lists(st.sampled_from(specs), max_size=3, unique=True)):
        changes[spec.name] = change = draw(field_change(spec))
        row[spec.name] = change.value
    if draw(st.booleans()):
        row["note"] = draw(st.one_of(json_value, st.just(Raw("1e999999999")), st.just("\x00")))
    numbers = dict(_BASE_NUMBERS)
    numbers.update({n: c.number for n, c in changes.items() if c.code is None and n in numbers})
    data = _encode(row, ascii_only=draw(st.booleans()))
    errors = _row_errors(record_type, changes, numbers)
    outcome = errors[0] if errors else VALID
    kept = row[key] if outcome == VALID else None
    return Line(data, outcome, kept.lower() if isinstance(kept, str) else None, errors or None)


def random_bytes(record_type: str) -> st.SearchStrategy[Line]:
    return (
        st.binary(max_size=300)
        .map(lambda b: b.replace(b"\n", b" "))
        .map(lambda b: Line(b, _outcome_of_bytes(record_type, b)))
    )


def random_json(record_type: str) -> st.SearchStrategy[Line]:
    return st.builds(
        lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only).encode(),
        json_value,
        st.booleans(),
    ).map(lambda b: Line(b, _outcome_of_bytes(record_type, b)))


@st.composite
def broken_row(draw, record_type: str) -> Line:
    """A valid row's JSON with a few bytes changed, dropped or inserted."""
    data = bytearray(_encode(ROW_FACTORIES[record_type](), ascii_only=False))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "drop", "insert"]))
        byte = draw(st.integers(0, 255).filter(lambda b: b != 0x0A))
        if action == "insert" or at == len(data):
            data.insert(at, byte)
        elif action == "drop":
            del data[at]
        else:
            data[at] = byte
    return Line(bytes(data), _outcome_of_bytes(record_type, bytes(data)))


def lines(record_type: str) -> st.SearchStrategy[list[Line]]:
    blank = st.sampled_from([b"", b"  ", b"\t", b"\r", b" \x0b\x0c"]).map(lambda b: Line(b, VALID))
    row = mutated_row(record_type)
    return st.lists(
        st.one_of(
            row,
            row,
            row,
            random_bytes(record_type),
            random_json(record_type),
            broken_row(record_type),
            blank,
        ),
        min_size=1,
        max_size=10,
    )


# --- running a file and checking it against the model ---------------------------------------


def _ingest(tenant, record_type: str, data: bytes, *, strict: bool) -> Upload:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"{record_type}_fuzz.ndjson"
        path.write_bytes(data)
        return upload_ingest_path(tenant=tenant, path=path, strict=strict).upload


def _file_of(generated: list[Line]) -> bytes:
    return b"\n".join(line.data for line in generated) + b"\n"


def _as_read(generated: list[Line]) -> list[tuple[int, Line, bool]]:
    """(number, line, is_row) as the reader sees each line: a BOM is dropped from the first,
    a trailing CR from each; blank (whitespace only) lines are lines but not rows."""
    seen = []
    for number, line in enumerate(generated, start=1):
        data = line.data
        if number == 1 and data.startswith(BOM):
            data = data[len(BOM) :]
            line = line._replace(outcome=UNKNOWN, errors=None) if line.outcome != VALID else line
        if data.endswith(b"\r"):
            data = data[:-1]
        if len(data) > MAX_LINE_BYTES:
            seen.append((number, line._replace(outcome=("", "line_too_long"), errors=None), True))
        else:
            seen.append((number, line, bool(data) and not data.isspace()))
    return seen


def _check(upload: Upload, generated: list[Line], *, strict: bool) -> bool:
    """The upload against the model: every row is counted once, the rejects the model
    knows are exactly there, no valid row is rejected, and the upload is finished. False
    when the file was taken for a compressed one (then only its state is checked)."""
    upload.refresh_from_db()
    if _file_of(generated).startswith(_MAGICS):
        # read as compressed (sniffed from the first bytes, whatever the name): refused as a
        # whole, unless the bytes happen to decompress
        assert upload.state in ("completed", "completed_with_errors", "failed")
        if upload.state == "failed":
            assert upload.error_code == "invalid_compression", upload.error_detail
        return False
    # no exception escaped the engine (the service would have failed the upload with it)
    assert upload.error_code in ("", "strict_rejected"), (upload.error_code, upload.error_detail)
    seen = _as_read(generated)
    rows = [(number, line) for number, line, is_row in seen if is_row]
    stored = _rejects(upload)
    rejects = {line: (field, code) for line, field, code, _, _ in stored}
    # every problem of each reject: listed when more than one, the first its own
    problems = {}
    for number, field, code, message, errors in stored:
        listed = [(e["field"], e["code"], e["message"]) for e in errors]
        assert not listed or (len(listed) > 1 and listed[0] == (field, code, message)), listed
        problems[number] = [(f, c) for f, c, _ in listed] or [(field, code)]
    for number, line in rows:
        if line.outcome == VALID:
            assert number not in rejects, (number, rejects[number], line.data[:300])
        elif line.outcome != UNKNOWN:
            assert rejects.get(number) == line.outcome, (number, line.data[:300])
            if line.errors is not None:
                assert problems[number] == list(line.errors), (number, line.data[:300])
    assert set(rejects) <= {number for number, _ in rows}
    assert upload.rows_total == len(rows)
    assert upload.rows_rejected == len(rejects)
    others = (
        upload.rows_inserted,
        upload.rows_updated,
        upload.rows_unchanged,
        upload.rows_pending,
        upload.rows_duplicates,
    )
    if strict and rejects:
        assert (upload.state, upload.error_code) == ("failed", "strict_rejected")
        assert others == (0, 0, 0, 0, 0)
    else:
        expected = "completed_with_errors" if rejects else "completed"
        assert (upload.state, upload.error_code) == (expected, ""), upload.error_detail
        assert upload.rows_total == upload.rows_rejected + sum(others)
    for message in Reject.objects.filter(upload=upload).values_list("message", flat=True):
        assert 0 < len(message) < 500, message[:500]
    return True


def _rejects(upload: Upload) -> list[tuple[int, str, str, str, list]]:
    return list(
        Reject.objects.filter(upload=upload).values_list(
            "line", "field", "code", "message", "errors"
        )
    )


@contextlib.contextmanager
def _example() -> Iterator[Tenant]:
    """A new tenant, and a savepoint that undoes the example (and frees its locks) after."""
    with transaction.atomic():
        yield tenant_create(name="Fuzz")[0]
        transaction.set_rollback(True)


# --- the tests ------------------------------------------------------------------------------


def test_the_model_knows_every_field_of_every_record_type():
    """The model's fields are the engine's, in the engine's order (the first bad one wins)."""
    for record_type, specs in FIELDS.items():
        assert tuple(s.name for s in specs) == RECORDS[record_type].columns
        assert tuple(s.required for s in specs) == tuple(
            f.required for f in RECORDS[record_type].fields
        )


@FUZZ
@given(data=st.data(), record_type=st.sampled_from(TYPES), strict=st.booleans())
def test_generated_files_load_as_the_model_says(data, record_type, strict):
    """Any mix of rows (mutated valid rows, random bytes, random JSON, broken JSON, blank
    lines) ends in a finished upload whose counts add up, with exactly the rejects the
    model knows and none for a row it knows is valid."""
    generated = data.draw(lines(record_type))
    with_parents = record_type in ("orders", "order_items") and data.draw(st.booleans())
    with _example() as tenant:
        if with_parents:  # the rows' parents exist: they are inserted, not held
            for parent, row in (
                ("customers", customer_row()),
                ("products", product_row()),
                ("orders", order_row()),
            ):
                _ingest(tenant, parent, json.dumps(row).encode(), strict=False)
        upload = _ingest(tenant, record_type, _file_of(generated), strict=strict)
        checked = _check(upload, generated, strict=strict)
        if checked and record_type in ("customers", "products") and not strict:
            seen = _as_read(generated)
            if all(line.outcome != UNKNOWN for _, line, is_row in seen if is_row):
                # rows without parents are stored: one per id whose row was valid
                keys = {line.key for _, line, is_row in seen if is_row and line.outcome == VALID}
                model = Customer if record_type == "customers" else Product
                assert model.objects.filter(tenant=tenant).count() == len(keys)


@FUZZ
@given(data=st.data(), record_type=st.sampled_from(TYPES))
def test_a_changed_row_lists_every_problem_the_model_knows_in_field_order(data, record_type):
    """A row with up to three fields changed: the line check (as live records and files take
    a line) lists each of its problems in field order, the row rule's last and only over
    valid fields, the first its own field, code and message; a valid row has none."""
    line = data.draw(mutated_row(record_type))
    assume(len(line.data) <= MAX_LINE_BYTES)
    reject = check_line(record_type, line_of(1, line.data, max_line_bytes=MAX_LINE_BYTES))
    if line.outcome == VALID:
        assert reject is None
        return
    assert [(e.field, e.code) for e in reject.errors] == list(line.errors), line.data[:300]
    first = reject.errors[0]
    assert (reject.field, reject.code, reject.message) == (first.field, first.code, first.message)


@FUZZ
@given(prices=st.lists(decimal_literal(), min_size=1, max_size=12), strict=st.booleans())
def test_decimals_are_stored_exactly_or_rejected_out_of_range(prices, strict):
    """Decimals in every form (strings and JSON numbers, huge exponents both ways, too many
    places, negative) are each stored exactly or one `out_of_range` reject of their row."""
    generated = []
    for i, change in enumerate(prices):
        row = product_row(product_id=uid(f"price{i}"), price=change.value)
        outcome = VALID if change.code is None else ("price", change.code)
        generated.append(Line(_encode(row, ascii_only=True), outcome, uid(f"price{i}")))
    with _example() as tenant:
        upload = _ingest(tenant, "products", _file_of(generated), strict=strict)
        _check(upload, generated, strict=strict)
        stored = dict(Product.objects.filter(tenant=tenant).values_list("product_id", "price"))
    if upload.state == "failed":
        assert stored == {}
        return
    for change, line in zip(prices, generated, strict=True):
        if change.code is None:
            assert stored.pop(uuid.UUID(line.key)) == Decimal(change.number) / 100
    assert stored == {}
