"""Tenant rules in the engine (SPEC 10): a schema is compiled once or refused with its
reason; a row the contract takes is checked against it, exactly (numbers are decimals);
what a violation gives (`rule_violation` with the row's path, `unknown_field`), and the
same answer from a file's staging and from the live line check."""

from __future__ import annotations

import json
import re

import pytest

from apps.ingestions.engine import (
    DEFAULT_MAX_LINE_BYTES,
    RowError,
    RowReject,
    RowWarning,
    RuleError,
    check_line,
    compile_rules,
    line_of,
)
from apps.ingestions.engine.parse import parse_chunks
from apps.ingestions.engine.reader import Line
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.testing import order_item_row, product_row


def _line(row, number: int = 1):
    data = row if isinstance(row, bytes) else json.dumps(row).encode()
    return line_of(number, data, max_line_bytes=DEFAULT_MAX_LINE_BYTES)


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "strin"}, "invalid JSON Schema at /type: "),
        ({"minimum": "x"}, 'invalid JSON Schema at /minimum: "x" is not of type "number"'),
        (
            {"$ref": "https://schemas.example.com/sku.json"},
            "the schema refers to https://schemas.example.com/sku.json: remote references are "
            "not allowed",
        ),
        (
            {"properties": {"sku": {"pattern": "^(a+)\\1$"}}},
            'invalid JSON Schema at /properties/sku/pattern: "^(a+)\\\\1$" is not a "regex" '
            "(patterns run on a linear-time engine: no lookaround, no backreferences, and a "
            "limit on a compiled pattern's size, which counted repetitions such as a{1000} reach)",
        ),
        ({"properties": {"sku": {"pattern": "(a{1000}){1000}"}}}, "limit on a compiled pattern"),
        ({"properties": {"sku": {"pattern": "(?=A)"}}}, "no lookaround"),
        ([{"type": "object"}], "the schema must be a JSON object (or a boolean)"),
        ({"$schema": "https://example.com/mine"}, "Unknown meta-schema"),
        ({"enum": ["x" * 70_000]}, "the schema is larger than 65536 bytes"),
    ],
)
def test_a_schema_that_cannot_be_used_is_refused_with_its_reason(schema, reason):
    with pytest.raises(RuleError) as caught:
        compile_rules("products", schema)
    assert reason in str(caught.value)


def test_action_and_unknown_fields_policy_take_their_values_only():
    with pytest.raises(RuleError, match="action must be one of reject, warn"):
        compile_rules("products", {}, action="drop")
    with pytest.raises(RuleError, match="unknown_fields must be one of ignore, reject"):
        compile_rules("products", {}, unknown_fields="warn")


def test_local_references_and_other_drafts_compile():
    local = {"$defs": {"sku": {"pattern": "^SKU-"}}, "properties": {"sku": {"$ref": "#/$defs/sku"}}}
    rules = compile_rules("products", local, version=2)
    assert rules.check(product_row(sku="SKU-9")) is None
    assert rules.check(product_row(sku="X-9")) == (
        [
            RowError(
                "sku",
                "rule_violation",
                '"X-9" does not match "^SKU-" (rules version 2, at /$defs/sku/pattern)',
            )
        ],
        [],
    )
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "required": ["sku"]}
    assert compile_rules("products", draft7).check(product_row()) is None


@pytest.mark.parametrize(
    ("bound", "value", "ok"),
    [
        ({"maximum": 19.99}, "19.99", True),
        ({"maximum": 19.99}, "19.990000000000000000001", False),
        ({"exclusiveMaximum": 19.99}, "19.989999999999999999999", True),
        ({"minimum": 0.1}, "0.0999999999999999999999", False),
        ({"minimum": 0.1}, "0.1", True),
        ({"multipleOf": 0.01}, "12.34", True),
        ({"multipleOf": 0.01}, "12.345", False),
        ({"maximum": 1000}, "1e400", False),
        ({"minimum": 0}, "0e-99999999999", True),
    ],
)
def test_numbers_compare_exactly(bound, value, ok):
    """Rows are decoded as the engine decodes them (decimals): a bound is never met by a
    float's rounding, one way or the other."""
    rules = compile_rules("products", {"properties": {"weight": bound}})
    line = b'{"weight": ' + value.encode() + b"}"
    from apps.ingestions.engine.parse import _decode

    assert (rules.check(_decode(line)) is None) is ok


def test_every_problem_of_a_row_is_listed_unknown_fields_first():
    schema = {
        "properties": {"quantity": {"minimum": 3}, "unit_price": {"maximum": 10}},
        "required": ["discount"],
    }
    rules = compile_rules("order_items", schema, version=4, unknown_fields="reject")
    row = {**order_item_row(), "discount": 1, "note": "x", "gift": True}
    bad, warnings = rules.check(row)
    assert warnings == []
    assert [(e.field, e.code) for e in bad] == [
        ("discount", "unknown_field"),
        ("note", "unknown_field"),
        ("gift", "unknown_field"),
        ("quantity", "rule_violation"),
        ("unit_price", "rule_violation"),
    ]
    assert bad[0].message == "discount is not a field of order_items"
    assert (
        bad[3].message
        == "2 is less than the minimum of 3 (rules version 4, at /properties/quantity/minimum)"
    )
    # a missing property names itself as the field
    [required] = [e for e in rules.check(order_item_row())[0] if e.field == "discount"]
    assert required.message == '"discount" is a required property (rules version 4, at /required)'


def test_an_arrays_problems_are_listed_by_index_and_the_first_hundred_kept():
    """`metadata.tags.2` before `metadata.tags.10` (they were sorted as text, so the 100
    kept of 150 bad items were not the first 100)."""
    schema = {"properties": {"metadata": {"properties": {"tags": {"items": {"type": "string"}}}}}}
    rules = compile_rules("products", schema, version=1)
    bad, _ = rules.check({**product_row(), "metadata": {"tags": list(range(150))}})
    assert [e.field for e in bad] == [f"metadata.tags.{n}" for n in range(100)]


def test_a_warning_rule_warns_but_unknown_fields_still_reject():
    rules = compile_rules(
        "order_items",
        {"properties": {"quantity": {"maximum": 1}}},
        action="warn",
        unknown_fields="reject",
    )
    bad, warnings = rules.check(order_item_row())
    assert bad == []
    assert [w.code for w in warnings] == ["rule_violation"]
    bad, warnings = rules.check({**order_item_row(), "zz": 1})
    assert [b.code for b in bad] == ["unknown_field"]
    assert [w.field for w in warnings] == ["quantity"]  # reported, but the row is rejected


def test_ignored_unknown_fields_are_not_a_problem_and_keep_the_fast_answer():
    rules = compile_rules("products", {"properties": {"sku": {"minLength": 1}}})
    assert rules.check({**product_row(), "categoryid": "x"}) is None


def test_long_keys_values_and_many_problems_are_bounded():
    """A field name fits a reject's `field` (64); a message quoting a long value is cut;
    a row with thousands of unknown keys lists at most 100 problems."""
    rules = compile_rules(
        "products", {"properties": {"name": {"maxLength": 3}}}, unknown_fields="reject"
    )
    row = {**product_row(name="n" * 5000), **{f"k{i}" + "x" * 100: i for i in range(3000)}}
    bad, _ = rules.check(row)
    assert len(bad) == 100
    assert all(len(e.field) <= 64 for e in bad)
    only_value = compile_rules("products", {"properties": {"name": {"maxLength": 3}}})
    [problem], _ = only_value.check(product_row(name="n" * 5000))
    assert len(problem.message) == 500
    assert problem.message.endswith("...")


def test_the_line_check_and_a_files_staging_agree():
    """The live line check gives the reject (or the warnings) a file's staging stages."""
    reject_rules = compile_rules(
        "products",
        {"properties": {"sku": {"pattern": "^[A-Z]{3}-[0-9]+$"}, "price": {"exclusiveMinimum": 0}}},
        version=7,
        unknown_fields="reject",
    )
    warn_rules = compile_rules(
        "products", {"properties": {"price": {"maximum": 10}}}, version=8, action="warn"
    )
    rows = [
        product_row(sku="ABC-1"),
        product_row(sku="abc", price=0),
        {**product_row(), "colour": "red"},
        product_row(price="abc", sku="x"),  # the contract's problem first, then the rules'
    ]
    lines = [_line(row, n) for n, row in enumerate(rows, start=1)]
    checked = [check_line("products", line, reject_rules) for line in lines]
    assert checked[0] is None
    assert isinstance(checked[1], RowReject)
    assert [(e.field, e.code) for e in checked[1].errors] == [
        ("sku", "rule_violation"),
        ("price", "rule_violation"),
    ]
    assert (checked[2].field, checked[2].code) == ("colour", "unknown_field")
    assert [e.code for e in checked[3].errors] == ["invalid_type", "rule_violation"]
    staged = _staged(lines, reject_rules)
    for line, reject in zip(lines, checked, strict=True):
        if reject is None:
            assert staged[line.number]["r_code"] is None
            continue
        row = staged[line.number]
        assert (row["r_field"], row["r_code"], row["r_message"]) == (
            reject.field,
            reject.code,
            reject.message,
        )
        listed = (
            json.loads(row["r_errors"])
            if row["r_errors"]
            else [{"field": reject.field, "code": reject.code, "message": reject.message}]
        )
        assert listed == [
            {"field": e.field, "code": e.code, "message": e.message} for e in reject.errors
        ]
    warned = check_line("products", lines[0], warn_rules)
    assert isinstance(warned, RowWarning)
    assert (warned.field, warned.code) == ("price", "rule_violation")
    staged = _staged(lines[:1], warn_rules)
    assert staged[1]["r_code"] is None
    assert json.loads(staged[1]["r_warnings"]) == [
        {"field": "price", "code": "rule_violation", "message": warned.message}
    ]


def _unescaped(text: str) -> str:
    """COPY text's escapes undone (backslash, tab, newline, carriage return)."""
    escapes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), text)


def _staged(lines: list[Line], rules) -> dict[int, dict]:
    """The staged columns of each line, parsed back from the chunk's COPY text."""
    spec = RECORDS["products"]
    names = ["line", *spec.columns, "r_field", "r_code", "r_message", "r_raw", "r_errors"]
    names.append("r_warnings")
    out = {}
    for chunk in parse_chunks(spec, lines, rules=rules):
        for text in chunk.text.splitlines():
            values = [None if v == "\\N" else _unescaped(v) for v in text.split("\t")]
            assert len(values) == len(names)
            row = dict(zip(names, values, strict=True))
            out[int(row["line"])] = row
    return out


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"unit_price": {"maximum": 10}}},
        {"additionalProperties": {"not": {"type": "number", "minimum": 10}}},
        {"patternProperties": {"price$": {"maximum": 10}}},
        {
            "allOf": [{"$ref": "#/$defs/cheap"}],
            "$defs": {"cheap": {"properties": {"unit_price": {"maximum": 10}}}},
        },
    ],
)
def test_a_decimal_sent_as_a_string_meets_the_schema_as_a_number(schema):
    """Whether the schema names the field or reaches it with a keyword that applies to
    fields it does not name, "19.99" is the number 19.99 to it."""
    rules = compile_rules("order_items", schema)
    found = rules.check(order_item_row(unit_price="19.99", quantity=1, line_total="19.99"))
    assert found is not None
    assert [e.field for e in found[0]][:1] == ["unit_price"]
    assert rules.check(order_item_row(unit_price="9.99", quantity=1, line_total="9.99")) is None
