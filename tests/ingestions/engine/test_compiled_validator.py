"""The compiled validator of each record type (`RecordSpec.validate`, the one every line
of a load goes through) answers exactly as the field-by-field definition it unrolls: the
same COPY values for a row it takes, the same first problem for one it refuses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.ingestions.engine.checks import Invalid
from apps.ingestions.engine.records import RECORDS, validate_record
from apps.ingestions.engine.testing import ROW_FACTORIES

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
# what a field may hold: its valid value, a near miss, anything at all, or nothing
_EDGES = ["", "x", "0", "-1", "1.005", "1e3", "2024-01-01", "a@b", "\x00", "EUR", 0, -1, 10**12]


def _outcome(validate, obj: Any) -> tuple:
    try:
        return ("values", validate(obj, 7))
    except Invalid as exc:
        return ("invalid", exc.field, exc.code, exc.message)


@st.composite
def _objects(draw, record_type: str):
    row = ROW_FACTORIES[record_type]()
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSON)  # not an object, mostly
    for name in list(row):
        choice = draw(st.integers(0, 5))
        if choice == 1:
            del row[name]
        elif choice == 2:
            row[name] = None
        elif choice == 3:
            row[name] = draw(st.sampled_from(_EDGES))
        elif choice == 4:
            row[name] = draw(_JSON)
    return row


@pytest.mark.parametrize("record_type", list(RECORDS))
@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_the_compiled_validator_answers_as_the_field_by_field_one(record_type, data):
    """Valid rows, rows with fields missing, null, odd or of any JSON type, and values
    that are not objects: both give the same values or the same first problem."""
    spec = RECORDS[record_type]
    obj = data.draw(_objects(record_type))
    assert _outcome(spec.validate, obj) == _outcome(lambda o, n: validate_record(spec, o, n), obj)


@pytest.mark.parametrize("record_type", list(RECORDS))
def test_a_valid_row_gives_its_line_and_every_column_in_order(record_type):
    """The values are `[line, *columns]` as COPY text, optional fields left out getting
    their default."""
    spec = RECORDS[record_type]
    row = ROW_FACTORIES[record_type]()
    values = spec.validate(row, 42)
    assert values[0] == "42"
    assert len(values) == len(spec.fields) + 1
    optional = [f for f in spec.fields if not f.required]
    for field in optional:
        row.pop(field.name)
    bare = spec.validate(row, 1)
    for field in optional:
        assert bare[spec.columns.index(field.name) + 1] == field.default


def test_an_order_item_whose_total_is_off_is_refused_by_the_row_rule():
    """The row rule runs after the fields, in the compiled validator too."""
    spec = RECORDS["order_items"]
    row = ROW_FACTORIES["order_items"](quantity=3, unit_price="2.50", line_total="7.52")
    assert _outcome(spec.validate, row) == (
        "invalid",
        "line_total",
        "line_total_mismatch",
        f"line_total 7.52 differs from quantity x unit_price = {3 * Decimal('2.50')}",
    )


_MONEY = st.builds(
    lambda whole, places: f"{whole}{places}",
    st.integers(0, 10**10 - 1),
    st.sampled_from(["", *(f".{d}" for d in range(10)), *(f".{d:02d}" for d in range(100))]),
)


@settings(max_examples=2000, deadline=None, database=None)
@given(quantity=st.integers(1, 2**31 - 1), unit_price=_MONEY, line_total=_MONEY, near=st.booleans())
def test_the_line_total_rule_in_cents_decides_as_decimal_arithmetic(
    quantity, unit_price, line_total, near
):
    """The row rule's integer test refuses exactly the rows whose total is more than a cent
    off quantity x unit price, computed in Decimal; `near` puts the total within a few
    cents of it, where the boundary is."""
    if near:
        expected = quantity * Decimal(unit_price)
        line_total = str(max(Decimal(0), expected + Decimal(quantity % 5 - 2) / 100))
    spec = RECORDS["order_items"]
    at = {name: spec.columns.index(name) + 1 for name in ("quantity", "unit_price", "line_total")}
    values = ["1"] + ["x"] * len(spec.columns)
    values[at["quantity"]], values[at["unit_price"]] = str(quantity), unit_price
    values[at["line_total"]] = line_total
    off = abs(quantity * Decimal(unit_price) - Decimal(line_total)) > Decimal("0.01")
    if off:
        with pytest.raises(Invalid) as refused:
            spec.row_check(values)
        assert refused.value.code == "line_total_mismatch"
    else:
        spec.row_check(values)
