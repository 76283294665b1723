"""The published contract (`engine.record_schema`) and the engine agree: on a large seeded
sample of valid and invalid rows of every type, a row the JSON Schema accepts is one the
engine takes (or rejects only for its row rule), and a row it refuses the engine rejects;
the disagreements that remain are the ones each schema documents in `x-rules`, checked here
one by one. Also: the schemas are valid 2020-12 and follow the definition; the docs' field
tables are what the generator makes now."""

from __future__ import annotations

import json
import random
import re
import uuid
from decimal import Decimal
from pathlib import Path

import jsonschema_rs
import pytest

from apps.ingestions import engine
from apps.ingestions.engine import RECORDS, check_line, line_of, record_schema
from apps.ingestions.engine import checks as c
from apps.ingestions.management.commands.contract_docs import DOCS, contract_docs

# Not a contract matter, so never compared: a line over the line limit (line_too_long) or
# that is not JSON (invalid_json) is not a row the schema could be asked about.
MAX_LINE = 10**7
ROWS_PER_TYPE = 4000
VALIDATORS = {name: jsonschema_rs.validator_for(record_schema(name)) for name in RECORDS}


class Raw(str):
    """A JSON number as written (`1e2`, `12.50`), put in the line as it is."""


def encode(value, *, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (
            f"{encode(k, ascii_only=ascii_only)}:{encode(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def engine_code(record_type: str, data: bytes) -> str | None:
    reject = check_line(record_type, line_of(1, data, max_line_bytes=MAX_LINE))
    return None if reject is None else reject.code


def schema_accepts(record_type: str, data: bytes) -> bool:
    return VALIDATORS[record_type].is_valid(json.loads(data, parse_float=Decimal))


# Values per kind of check: (valid, invalid), each a function of a seeded Random.
def _text(rng: random.Random, length: int) -> str:
    alphabet = "abcXYZ 019_-\"\\/\n\t\r\u00e9\u00df\u4e2d\U0001f600\u200b\ufeff\x7f\x1f'"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _uuid(rng: random.Random) -> str:
    text = str(uuid.UUID(int=rng.getrandbits(128)))
    return text.upper() if rng.random() < 0.3 else text


UUID_BAD = ["", "not-a-uuid", "0" * 32, "{" + "0" * 8 + "-0000-0000-0000-" + "0" * 12 + "}",
            "g" * 8 + "-0000-0000-0000-" + "0" * 12, "0" * 8 + "-0000-0000-0000-" + "0" * 13,
            " 00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000\n",
            "\u0660" * 8 + "-0000-0000-0000-" + "0" * 12, 7, True, [], {}]  # fmt: skip
EMAIL_GOOD = ["a@b.co", "first.last+tag@mail.example.org", "\u00e9l\u00e8ve@\u00e9cole.fr",
              "x@y.z.w", "a\ufeffb@c.de", "q\"uote@x.io", "a" * 240 + "@example.com"]  # fmt: skip
EMAIL_BAD = ["", "plain", "a@b", "a@@b.co", "a b@c.de", "a@b.co\n", "a@.b.co", "a@b..co",
             "a@b.co.", "a\xa0b@c.de", "a\u2003b@c.de", "a\x1cb@c.de", "a\x00b@c.de",
             "a" * 250 + "@example.com", 5, ["a@b.co"]]  # fmt: skip
MONEY_GOOD = [Raw("0"), Raw("12.5"), Raw("12.50"), Raw("12.500"), Raw("1e2"), Raw("1E+2"),
              Raw("0.1e1"), Raw("-0"), Raw("-0.0"), Raw("9999999999.99"), Raw("0e-5"),
              Raw("1.25E-0"), Raw("0.0000"), "12.5", "0012.50", ".5", "5.", "-0", "-0.00",
              "-.0", "9999999999.99", "0000000009999999999", "1.5" + "0" * 200,
              "1.5" + "0" * 16382, "0." + "0" * 16383, "7", "\u0661\u0662.\u0665",
              "\u0669" * 10 + ".\u0669\u0669", "\U0001d7cf\U0001d7d0", "\u0660\u0660\u0661",
              "-\u0660.\u0660"]  # fmt: skip
MONEY_BAD = [Raw("-1"), Raw("-0.01"), Raw("1.001"), Raw("10000000000"), Raw("1e10"),
             Raw("9999999999.995"), Raw("1e-3"), Raw("1e400"), "-1", "1.001", "10000000000",
             "12345678901.5", "1e20", "abc", "", " 1", "1 ", "+1", "1,5", "1.5\n",
             "\u0661" * 11, "\u0661.\u0661\u0661\u0661", "Infinity", "NaN", "0x10", "1e", ".",
             "-", "\u00bd", "\u00b2",
             True, [], {}]  # fmt: skip
QUANTITY_BAD = [0, -1, c.MAX_INT + 1, 10**20, "1", Raw("1.5"), True, [], {}]
TIMESTAMP_BAD = ["", "yesterday", "2024-13-01", "2024-00-10", "2024-01-32", "2024-1-1",
                 "2024/01/01", "0000-01-01", "2024-01-01T24:00", "2024-01-01T10:60",
                 "2024-01-01T10:30:60", "2024-01-01T10:30z", "2024-01-01 ", "2024-01-01T",
                 "2024-01-01T10:30:00Z\n", "2024-01-01T10:30+24:00", "2024-01-01T10:30+1:00",
                 "2024-01-01T10:30+01:0", "\u0662\u0660\u0662\u0664-01-01", "2024-0101",
                 "2024-W011", "2024-W54", "2024W01-1", "2024-01-01T10:3000", "2024-01-01T10:30:00.",
                 "2024-01-01T10:30:00.5a", "2024-01-01T10:30:00Z+01", "2024-01-01T1516182",
                 "2024-01-01T10:30:00:", "2024-01-01T103.5", "2024-01-01T10:30:5",
                 "2024-01-01T15161825.5", "2024-01-01T10:00+0130152", "3269-W48-1516182",
                 "2024-01-01T10:30:00.5:5", "2024-01-01T10:30:00x", 20240101, True]  # fmt: skip
OBJECT_BAD = ["{}", [], 1, True, {"a": "x\x00"}, {"\x00": 1}, {"a": [["\x00"]]}]
CURRENCY_BAD = ["usd", "XXX", "XTS", "US", "USDD", "", "USD\n", " USD", 840, []]


OFFSETS = ["", "Z", "+00:00", "-00:00", "+05:30", "-0800", "+01", "+01:30:15.5", "+0130",
           "-23:59", "+02:99", "+01301525", "+01:30:15:5", "+0130.5"]  # fmt: skip


def _timestamp(rng: random.Random) -> str:
    # years 1000 to 9998, days to the 28th, weeks to 52: no calendar or UTC range gap
    year, month, day = rng.randint(1000, 9998), rng.randint(1, 12), rng.randint(1, 28)
    dash = rng.random() < 0.8
    if rng.random() < 0.15:
        week = f"W{rng.randint(1, 52):02d}"
        date = f"{year}{'-' if dash else ''}{week}"
        if rng.random() < 0.5:
            date += f"{'-' if dash else ''}{rng.randint(1, 7)}"
    else:
        date = f"{year:04d}-{month:02d}-{day:02d}" if dash else f"{year:04d}{month:02d}{day:02d}"
    if rng.random() < 0.1:
        return date
    colon = ":" if rng.random() < 0.8 else ""
    parts = [f"{rng.randint(0, 23):02d}", f"{rng.randint(0, 59):02d}", f"{rng.randint(0, 59):02d}"]
    count = rng.choice((1, 2, 3, 3, 3))
    time = colon.join(parts[:count])
    if rng.random() < 0.3:  # a fraction: ".5", ",5"; ":5" after hh:mm:ss; "25" after hhmmss
        marks = ".,:" if colon and count == 3 else ".," if colon or count < 3 else ".,,,"
        mark = rng.choice(marks) if not (count == 3 and not colon and rng.random() < 0.5) else ""
        time += mark + str(rng.randint(0, 10 ** rng.randint(1, 9)))
    offset = rng.choice(OFFSETS)
    return date + rng.choice("T Tt_x\n5") + time + offset


def _object(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return _text(rng, rng.randint(0, 8))
    if kind == 1:
        return Raw(rng.choice(["0", "-12", "3.25", "1e5", "-2.5E-3", "123456789012345678901234"]))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "back\\u0000slash"  # the text \u0000, not a NUL: taken
    if kind in (4, 5):
        return {_text(rng, rng.randint(0, 5)): _object(rng, depth + 1) for _ in range(3)}
    return [_object(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def _kind(field) -> str:
    kinds = {c.check_uuid: "uuid", c.check_email: "email", c.check_decimal: "money",
             c.check_quantity: "quantity", c.check_bool: "bool", c.check_timestamp: "timestamp",
             c.check_object: "object", c.check_currency: "currency"}  # fmt: skip
    return kinds.get(field.check, "text")


def good_value(rng: random.Random, field):
    kind = _kind(field)
    if kind == "uuid":
        return _uuid(rng)
    if kind == "text":
        return _text(rng, rng.choice([0, 1, 5, field.max_length, rng.randint(0, field.max_length)]))
    if kind == "email":
        return rng.choice(EMAIL_GOOD)
    if kind == "money":
        return (
            rng.choice(MONEY_GOOD)
            if rng.random() < 0.5
            else Raw(f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}")
        )
    if kind == "quantity":
        return rng.choice([1, 2, 17, c.MAX_INT, rng.randint(1, c.MAX_INT)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "timestamp":
        return _timestamp(rng)
    if kind == "object":
        return {"k": _object(rng)} if rng.random() < 0.8 else {}
    return rng.choice(sorted(c.CURRENCIES))


def bad_value(rng: random.Random, field):
    kind = _kind(field)
    if kind == "text":
        return rng.choice([_text(rng, field.max_length + 1), "a\x00b", 5, True, [], {"a": 1}])
    table = {"uuid": UUID_BAD, "email": EMAIL_BAD, "money": MONEY_BAD, "quantity": QUANTITY_BAD,
             "bool": [0, 1, "true", "false", [], {}], "timestamp": TIMESTAMP_BAD,
             "object": OBJECT_BAD, "currency": CURRENCY_BAD}  # fmt: skip
    return rng.choice(table[kind])


def valid_row(rng: random.Random, record_type: str) -> dict:
    spec = RECORDS[record_type]
    row = {f.name: good_value(rng, f) for f in spec.fields if f.required or rng.random() < 0.7}
    if spec.row_rule is not None:  # a row the rule takes: line_total = quantity x unit_price
        rule = spec.row_rule
        quantity, cents = rng.randint(1, 999), rng.randint(0, 10**6)
        row[rule.quantity], row[rule.unit_price] = quantity, Raw(f"{cents / 100:.2f}")
        row[rule.line_total] = str(Decimal(cents) / 100 * quantity)
    return row


def mutate(rng: random.Random, record_type: str, row: dict) -> dict:
    fields = RECORDS[record_type].fields
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        field = rng.choice(fields)
        action = rng.random()
        if action < 0.35:
            row[field.name] = bad_value(rng, field)
        elif action < 0.65:
            row[field.name] = good_value(rng, field)
        elif action < 0.8:
            row.pop(field.name, None)
        elif action < 0.9:
            row[field.name] = None
        else:
            row[rng.choice(["extra", "categoryid", "", "\u00e9"])] = _object(rng)
    return row


def sample(record_type: str):
    rng = random.Random(f"contract-{record_type}")
    for _ in range(ROWS_PER_TYPE):
        roll = rng.random()
        if roll < 0.01:
            value = rng.choice([[], "row", 1, None, [valid_row(rng, record_type)]])
        else:
            value = mutate(rng, record_type, valid_row(rng, record_type))
        yield encode(value, ascii_only=rng.random() < 0.3).encode()


@pytest.mark.parametrize("record_type", list(RECORDS))
def test_schema_and_engine_agree_on_a_large_sample(record_type):
    """Seeded rows, valid and broken every way the checks know: the schema accepts a row
    exactly when the engine takes it, but for the row rule, which only a valid row reaches."""
    outcomes: dict[tuple[bool, str | None], int] = {}
    for data in sample(record_type):
        code, accepted = engine_code(record_type, data), schema_accepts(record_type, data)
        outcomes[(accepted, code)] = outcomes.get((accepted, code), 0) + 1
        if code == "line_total_mismatch":  # x-rules: JSON Schema cannot multiply
            assert accepted, data[:300]
            continue
        assert accepted == (code is None), (code, data[:300])
    assert outcomes.get((True, None), 0) > ROWS_PER_TYPE // 5, outcomes  # both sides seen
    assert sum(n for (ok, _), n in outcomes.items() if not ok) > ROWS_PER_TYPE // 5, outcomes


# Where the two part, as each schema says in `x-rules` (type, field, JSON value, the
# engine's reject code or None, whether the schema accepts).
DOCUMENTED_GAPS = [
    # the exponent form of a numeric string: read by the engine, not in the pattern
    ("products", "price", '"1.25e2"', None, False),
    ("products", "price", '"5E-1"', None, False),
    # a number written with more places than PostgreSQL keeps
    ("products", "price", "1." + "0" * 16384, "out_of_range", True),
    ("products", "price", "0e-16384", "out_of_range", True),
    ("products", "price", '"1.5' + "0" * 16383 + '"', "out_of_range", True),
    ("products", "price", '"0.' + "0" * 16384 + '"', "out_of_range", True),
    # JSON Schema's integer is a value, not a spelling
    ("order_items", "quantity", "1.0", "invalid_type", True),
    ("order_items", "quantity", "1e0", "invalid_type", True),
    # calendar dates, offsets of a day or more, years out of range once in UTC
    ("orders", "order_date", '"2023-02-29"', "invalid_timestamp", True),
    ("orders", "order_date", '"2024-04-31T10:00:00Z"', "invalid_timestamp", True),
    ("orders", "order_date", '"2023-W53"', "invalid_timestamp", True),
    ("orders", "order_date", '"2024-01-01T10:30+23:60"', "invalid_timestamp", True),
    ("orders", "order_date", '"0001-01-01T00:00+01:00"', "invalid_timestamp", True),
    # numbers jsonb cannot hold
    ("customers", "metadata", '{"n": 1e131072}', "out_of_range", True),
    ("customers", "metadata", '{"n": 1e-16384}', "out_of_range", True),
]


@pytest.mark.parametrize(("record_type", "name", "value", "code", "accepted"), DOCUMENTED_GAPS)
def test_where_json_schema_cannot_follow_the_engine_is_documented(
    record_type, name, value, code, accepted
):
    """Each remaining disagreement is one a schema's `x-rules` names, with its code."""
    row = valid_row(random.Random(0), record_type)
    row[name] = Raw(value)
    if record_type == "order_items":  # the row rule holds for quantity 1
        row["line_total"] = row["unit_price"]
    data = encode(row, ascii_only=False).encode()
    assert (engine_code(record_type, data), schema_accepts(record_type, data)) == (code, accepted)
    field = record_schema(record_type)["properties"][name]
    assert any(rule["code"] == (code or "invalid_type") for rule in field["x-rules"])


def test_a_row_that_breaks_only_the_row_rule_is_valid_json_schema():
    """line_total = quantity x unit_price is said in x-rules; the schema alone takes it."""
    row = valid_row(random.Random(1), "order_items")
    row["line_total"] = "0.00" if row["unit_price"] != "0.00" else "1.00"
    row["quantity"], row["unit_price"] = 3, Raw("2.50")
    data = encode(row, ascii_only=True).encode()
    assert (engine_code("order_items", data), schema_accepts("order_items", data)) == (
        "line_total_mismatch",
        True,
    )
    rules = record_schema("order_items")["x-rules"]
    assert rules == [
        {"code": "line_total_mismatch", "rule": "line_total = quantity x unit_price, within 0.01"}
    ]


@pytest.mark.parametrize("record_type", list(RECORDS))
def test_each_schema_is_valid_2020_12_and_follows_the_definition(record_type):
    """Fields, required ones and parents come from RECORDS; the dialect is 2020-12."""
    schema, spec = record_schema(record_type), RECORDS[record_type]
    jsonschema_rs.meta.validate(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert list(schema["properties"]) == [f.name for f in spec.fields]
    assert schema["required"] == [f.name for f in spec.fields if f.required]
    assert schema["x-key"] == spec.key
    assert schema["x-parents"] == [{"type": p.record_type, "field": p.column} for p in spec.parents]


def test_record_schema_is_exported_and_unknown_types_are_a_key_error():
    assert "record_schema" in engine.__all__
    with pytest.raises(KeyError):
        record_schema("invoices")


def test_the_published_space_class_is_pythons_whitespace():
    """The email pattern's explicit class is exactly what `\\s` matched in the engine."""
    python = [chr(n) for n in range(0x110000) if re.match(r"\s", chr(n))]
    published = [chr(n) for n in range(0x110000) if re.match(f"[{c.SPACE}]", chr(n))]
    assert published == python


def test_every_unicode_decimal_digit_is_a_digit_to_both():
    """The engine reads prices in any script's digits (Decimal does); the schema's digit
    classes spell out the same characters."""
    digits = [chr(n) for n in range(0x110000) if re.match(r"\d", chr(n))]
    row = valid_row(random.Random(2), "products")
    for digit in digits:
        row["price"] = f"{digit}{digit}.{digit}"
        data = encode(row, ascii_only=False).encode()
        assert engine_code("products", data) is None, digit
        assert schema_accepts("products", data), digit


def test_the_committed_field_tables_are_what_the_generator_makes():
    """docs/contract.md is generated (manage.py contract_docs); run it after a change."""
    assert Path(__file__).resolve().parents[3] / "docs" / "contract.md" == DOCS
    assert DOCS.read_text() == contract_docs()
