"""The record types, declared once: fields, limits, rules and parents, and the graph of
types they make.

Each `Field` names its JSON key, its check (see `checks`), its column type and its
limits; each `RecordSpec` names its key, its fields, its parents (by record type and
column) and its row rule. Everything else about the types is derived from these
declarations, here, when the module is imported: each type's `children`, the dependency
order (`RECORD_ORDER`, a topological sort, and `RECORD_STAGES`, its levels), the types
that can hold rows for missing parents (`PENDING_TYPES`) and their pending tables.
`validate_record` applies a type's fields to one decoded object and returns the values to
stage, already as COPY text (in the order of `RecordSpec.columns`), or raises `Invalid`;
`record_errors` lists every problem of a row it refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from apps.ingestions.engine.checks import (
    DECIMAL_DIGITS,
    DECIMAL_PLACES,
    EMAIL_MAX_LENGTH,
    NULL,
    Check,
    Invalid,
    LineTotal,
    RowCheck,
    check_bool,
    check_currency,
    check_decimal,
    check_email,
    check_object,
    check_quantity,
    check_str,
    check_timestamp,
    check_uuid,
    type_name,
)

MONEY = f"numeric({DECIMAL_DIGITS},{DECIMAL_PLACES})"


@dataclass(frozen=True, slots=True)
class Field:
    """One column of a record type: its JSON key (and column name), its check, its column
    type and limits (`max_length` of text, in characters; `digits` of a number), and what
    is staged when an optional field is absent or null (`default`, as COPY text)."""

    name: str
    check: Check
    sql_type: str
    required: bool = True
    default: str = NULL
    max_length: int | None = None
    digits: tuple[int, int] | None = None  # (precision, scale) of a numeric column

    @property
    def nullable(self) -> bool:
        """Whether the column may hold NULL: an optional field without a default."""
        return not self.required and self.default == NULL


def _uuid(name: str, *, required: bool = True) -> Field:
    return Field(name, check_uuid, "uuid", required=required)


def _text(name: str, max_length: int) -> Field:
    return Field(name, check_str(max_length), "text", max_length=max_length)


def _email(name: str) -> Field:
    return Field(name, check_email, "text", max_length=EMAIL_MAX_LENGTH)


def _money(name: str) -> Field:
    return Field(name, check_decimal, MONEY, digits=(DECIMAL_DIGITS, DECIMAL_PLACES))


def _timestamp(name: str) -> Field:
    return Field(name, check_timestamp, "timestamptz")


@dataclass(frozen=True, slots=True)
class Parent:
    """A tenant-scoped parent a row needs before it can be merged: the row's `column`
    references the key of the parent type's final table, `(tenant_id, column)`."""

    record_type: str
    column: str
    # Rows of a file name the same parent again and again, across its chunks (a product,
    # a customer): a pipelined load collects these ids as it parses and locks each once
    # (`keys.ParentLocks.lock_ids`). A parent whose rows come together (an order's items)
    # is read back from the staging table instead: collecting it costs more than it saves.
    named_again: bool = dataclasses.field(default=False, compare=False)

    @property
    def table(self) -> str:
        return self.record_type  # a type's final table is named after it (`RecordSpec.table`)


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """One record type. `children` is derived (the types that name this one as a parent),
    as is `row_check`, the `row_rule` bound to this type's columns."""

    name: str
    key: str
    fields: tuple[Field, ...]
    parents: tuple[Parent, ...] = ()
    row_rule: LineTotal | None = None
    children: tuple[str, ...] = ()
    row_check: RowCheck | None = dataclasses.field(default=None, init=False, compare=False)
    # `validate_record` for this type, compiled (`_compiled_validator`)
    validate: Callable[[Any, int], list[str]] = dataclasses.field(
        default=None, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.row_rule is not None:
            object.__setattr__(self, "row_check", self.row_rule.bind(self.columns))
        object.__setattr__(self, "validate", _compiled_validator(self))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def table(self) -> str:
        return self.name

    @property
    def parent_types(self) -> tuple[str, ...]:
        return tuple(parent.record_type for parent in self.parents)

    @property
    def holds_pending(self) -> bool:
        """Whether rows of this type can wait in `pending_table` for missing parents."""
        return bool(self.parents)

    @property
    def pending_table(self) -> str:
        return f"pending_{self.name}"


def _compiled_validator(spec: RecordSpec) -> Callable[[Any, int], list[str]]:
    """`validate_record` for one type, with its loop unrolled: one statement per field,
    each field's name, check and default bound in advance. It runs once for every line
    of every load, and the loop (its field lookups and list appends) cost about a tenth
    of a row's parse time. The source is built from the type's declaration only (names
    are passed as `repr` literals), never from input."""
    env: dict[str, Any] = {"_missing": _missing, "_not_an_object": _not_an_object}
    body = [
        "def validate(obj, line):",
        "    if type(obj) is not dict:",
        "        raise _not_an_object(obj)",
        "    get = obj.get",
    ]
    for i, field in enumerate(spec.fields):
        env[f"check_{i}"], env[f"default_{i}"] = field.check, field.default
        name = repr(field.name)
        body.append(f"    v{i} = get({name})")
        if field.required:
            body += [f"    if v{i} is None:", f"        raise _missing({name})"]
            body.append(f"    v{i} = check_{i}({name}, v{i})")
        else:
            body.append(f"    v{i} = default_{i} if v{i} is None else check_{i}({name}, v{i})")
    body.append(f"    values = [str(line), {', '.join(f'v{i}' for i in range(len(spec.fields)))}]")
    if spec.row_check is not None:
        env["row_check"] = spec.row_check
        body.append("    row_check(values)")
    body.append("    return values")
    exec("\n".join(body), env)  # noqa: S102 - the type's own declaration, see above
    return env["validate"]


def _not_an_object(obj: Any) -> Invalid:
    return Invalid("", "not_an_object", f"the line is a JSON {type_name(obj)}, not an object")


def _missing(name: str) -> Invalid:
    return Invalid(name, "missing_field", f"{name} is required")


_DECLARED = (
    RecordSpec(
        "customers",
        key="customer_id",
        fields=(
            _uuid("customer_id"),
            _text("name", 255),
            _email("email"),
            Field("metadata", check_object, "jsonb", required=False, default="{}"),
            _timestamp("created_at"),
        ),
    ),
    RecordSpec(
        "products",
        key="product_id",
        fields=(
            _uuid("product_id"),
            _text("sku", 64),
            _text("name", 255),
            _money("price"),
            _uuid("category_id", required=False),
            Field("active", check_bool, "boolean"),
            _timestamp("created_at"),
        ),
    ),
    RecordSpec(
        "orders",
        key="order_id",
        fields=(
            _uuid("order_id"),
            _text("external_order_id", 128),
            _uuid("customer_id"),
            _text("customer_name_snapshot", 255),
            _email("customer_email_snapshot"),
            _money("total_amount"),
            Field("currency", check_currency, "text", max_length=3),  # ISO 4217 alpha-3
            _text("order_status", 32),
            _timestamp("order_date"),
            Field("raw_payload", check_object, "jsonb", required=False),
            _timestamp("created_at"),
        ),
        parents=(Parent("customers", "customer_id", named_again=True),),
    ),
    RecordSpec(
        "order_items",
        key="order_item_id",
        fields=(
            _uuid("order_item_id"),
            _uuid("order_id"),
            _uuid("product_id"),
            Field("quantity", check_quantity, "integer"),
            _money("unit_price"),
            _money("line_total"),
        ),
        parents=(
            Parent("orders", "order_id"),
            Parent("products", "product_id", named_again=True),
        ),
        row_rule=LineTotal(quantity="quantity", unit_price="unit_price", line_total="line_total"),
    ),
)


def _stages(specs: tuple[RecordSpec, ...]) -> tuple[tuple[str, ...], ...]:
    """The types in dependency order, in levels: a type's parents are all in earlier levels
    (Kahn's topological sort; declaration order within a level). Raises `ValueError` for
    a parent that is not a type, references another column than its key, or a cycle."""
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        for parent in spec.parents:
            if parent.record_type not in by_name:
                raise ValueError(f"{spec.name}: unknown parent type {parent.record_type!r}")
            if by_name[parent.record_type].key != parent.column:
                raise ValueError(f"{spec.name}: {parent.column} is not {parent.record_type}'s key")
    placed: set[str] = set()
    stages = []
    while len(placed) < len(specs):
        ready = tuple(
            s.name for s in specs if s.name not in placed and placed.issuperset(s.parent_types)
        )
        if not ready:
            raise ValueError(f"the parents of {sorted(set(by_name) - placed)} form a cycle")
        stages.append(ready)
        placed.update(ready)
    return tuple(stages)


def _with_children(specs: tuple[RecordSpec, ...]) -> dict[str, RecordSpec]:
    return {
        spec.name: replace(
            spec, children=tuple(s.name for s in specs if spec.name in s.parent_types)
        )
        for spec in specs
    }


# The dependency order's levels: customers and products, then orders, then order items.
RECORD_STAGES: tuple[tuple[str, ...], ...] = _stages(_DECLARED)
# Dependency order: parents before children.
RECORD_ORDER: tuple[str, ...] = tuple(name for stage in RECORD_STAGES for name in stage)
RECORDS: dict[str, RecordSpec] = _with_children(_DECLARED)  # in declaration order
# The types whose rows can be held for missing parents, in dependency order.
PENDING_TYPES: tuple[str, ...] = tuple(name for name in RECORD_ORDER if RECORDS[name].holds_pending)


def descendants(record_type: str) -> tuple[str, ...]:
    """The types below `record_type` (children, their children, ...), in dependency order:
    the held types that rows of it arriving can make loadable."""
    found: set[str] = set()
    todo = list(RECORDS[record_type].children)
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo.extend(RECORDS[child].children)
    return tuple(name for name in RECORD_ORDER if name in found)


def validate_record(spec: RecordSpec, obj: Any, line: int) -> list[str]:
    """Return `[line, *values]` as COPY text for a decoded row, or raise `Invalid` (its
    first problem: `record_errors` finds the others). The definition, field by field;
    `spec.validate(obj, line)` is its compiled form, which loads call (tests hold the two
    to the same answers)."""
    if type(obj) is not dict:
        raise _not_an_object(obj)
    values: list[str] = [str(line)]
    get = obj.get
    for field in spec.fields:
        value = get(field.name)
        if value is None:
            if field.required:
                raise _missing(field.name)
            values.append(field.default)
        else:
            values.append(field.check(field.name, value))
    if spec.row_check is not None:
        spec.row_check(values)
    return values


def record_errors(spec: RecordSpec, obj: Any) -> list[Invalid]:
    """Every problem of a decoded row: each field's, in field order, then the row rule's,
    checked only when the fields it reads are valid. The first is the one `validate_record`
    raises for the row.

    A second pass, run only over a row `validate_record` refused: the pass every row
    takes stops at the first problem and stays as fast as it was."""
    if type(obj) is not dict:
        return [_not_an_object(obj)]
    problems: list[Invalid] = []
    failed: set[str] = set()
    values: list[str] = [""]  # the line number's place, as `validate_record` builds them
    get = obj.get
    for field in spec.fields:
        value = get(field.name)
        if value is None:
            if field.required:
                problems.append(_missing(field.name))
                failed.add(field.name)
            values.append(field.default)
            continue
        try:
            values.append(field.check(field.name, value))
        except Invalid as exc:
            problems.append(exc)
            failed.add(field.name)
            values.append(NULL)
    rule = spec.row_rule
    if spec.row_check is not None and rule is not None and failed.isdisjoint(rule.fields):
        try:
            spec.row_check(values)
        except Invalid as exc:
            problems.append(exc)
    return problems


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
