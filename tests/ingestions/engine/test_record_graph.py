"""The graph of record types, derived from the one record definition: parents declared,
children, dependency order, pending types and the line_total rule's fields computed."""

from __future__ import annotations

import pytest

from apps.ingestions.engine import RECORD_ORDER, RECORD_STAGES, RECORDS
from apps.ingestions.engine.checks import Invalid, LineTotal
from apps.ingestions.engine.records import (
    PENDING_TYPES,
    Field,
    Parent,
    RecordSpec,
    _stages,
    descendants,
)


def test_the_dependency_order_puts_every_parent_before_its_children():
    """customers and products, then orders, then order_items; each type after its parents."""
    assert RECORD_STAGES == (("customers", "products"), ("orders",), ("order_items",))
    assert RECORD_ORDER == ("customers", "products", "orders", "order_items")
    for name, spec in RECORDS.items():
        assert all(RECORD_ORDER.index(p) < RECORD_ORDER.index(name) for p in spec.parent_types)


def test_children_and_descendants_are_the_parents_read_backwards():
    """A type's children are the types that name it as a parent; descendants go on down."""
    assert {name: spec.children for name, spec in RECORDS.items()} == {
        "customers": ("orders",),
        "products": ("order_items",),
        "orders": ("order_items",),
        "order_items": (),
    }
    assert descendants("customers") == ("orders", "order_items")
    assert descendants("products") == ("order_items",)
    assert descendants("order_items") == ()


def test_the_types_with_parents_hold_pending_rows_in_their_own_tables():
    """Exactly the types with parents can hold rows; each in `pending_<type>`."""
    assert PENDING_TYPES == ("orders", "order_items")
    assert [RECORDS[t].pending_table for t in PENDING_TYPES] == [
        "pending_orders",
        "pending_order_items",
    ]
    assert RECORDS["orders"].parents == (Parent("customers", "customer_id"),)


def _spec(name: str, *parents: Parent) -> RecordSpec:
    key = f"{name}_id"
    return RecordSpec(name, key=key, fields=(Field(key, str, "uuid"),), parents=parents)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ((_spec("a", Parent("b", "b_id")), _spec("b", Parent("a", "a_id"))), "form a cycle"),
        ((_spec("a", Parent("z", "z_id")),), "unknown parent type 'z'"),
        ((_spec("a"), _spec("b", Parent("a", "x_id"))), "x_id is not a's key"),
    ],
    ids=["cycle", "unknown-parent", "not-the-key"],
)
def test_a_definition_whose_parents_make_no_order_is_refused(specs, message):
    """A cycle, a parent that is no type, or a column that is not the parent's key."""
    with pytest.raises(ValueError, match=message):
        _stages(specs)


def test_the_line_total_rule_finds_its_fields_by_name():
    """Wherever the three fields are among the columns, the rule reads the right values."""
    check = LineTotal("q", "p", "t").bind(("t", "x", "p", "q"))
    check(["1", "4.00", "junk", "2.00", "2"])  # [line, t, x, p, q]: 2 x 2.00 = 4.00
    with pytest.raises(Invalid) as refused:
        check(["1", "5.00", "junk", "2.00", "2"])
    assert (refused.value.field, refused.value.code) == ("t", "line_total_mismatch")
