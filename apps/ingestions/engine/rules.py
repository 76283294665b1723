"""A tenant's rules for one record type: a JSON Schema its rows must also satisfy, what a
violation does (`reject`, or `warn`: the row loads and the warning is recorded), and what
a field the contract does not know does (`ignore`, or `reject` with `unknown_field`).

`compile_rules` turns the stored rule into `Rules` once per load (never per row), with
jsonschema-rs: a compiled validator, about 1 to 3 us a row for a dozen keywords, where a
code-generating Python validator measured 3 to 7 us (and knows no draft past 7). A schema
is refused (`RuleError`, with the reason) when it is not valid JSON Schema or asks for
what a load cannot do safely: a remote `$ref` (a load never fetches anything) or a
`pattern` that needs backtracking (lookaround, backreferences: patterns run on a
linear-time engine, so no row can make a load spin).

Rules see the row as sent, decoded as the engine decodes it (numbers exact: `maximum`,
`multipleOf` and the like compare decimals, never floats), with one change: a decimal field
sent as a numeric string (`"price": "19.99"`, which the contract takes) is seen as the
number, so `"price": {"exclusiveMinimum": 0}` holds whichever way a client sends prices.
Problems are listed unknown fields first, then by the contract's field order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema_rs
import msgspec

from apps.ingestions.engine.checks import Invalid, check_decimal, check_object
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.results import RowError

RULE_ACTIONS = ("reject", "warn")
UNKNOWN_FIELDS = ("ignore", "reject")
MAX_SCHEMA_BYTES = 64 * 1024
# One row's problems found by its rules, at most: the rest would repeat them.
MAX_PROBLEMS = 100
_MAX_FIELD = 64  # the width of a reject's `field`
_MAX_MESSAGE = 500  # a message quotes the value, which may be a whole line long


class RuleError(ValueError):
    """The rule cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Rules:
    """One compiled rule set of one record type, at one version."""

    record_type: str
    version: int
    action: str
    unknown_fields: str
    known: frozenset[str]
    validator: Any  # a jsonschema_rs validator
    decimals: tuple[str, ...]  # the type's decimal fields, seen as numbers
    order: Mapping[str, int]  # the type's fields, in the contract's order

    def check(self, obj: Any) -> tuple[list[RowError], list[RowError]] | None:
        """None when the decoded row satisfies the rules (the usual answer, found without
        building a message); else its problems that reject it and those that only warn."""
        strict = self.unknown_fields == "reject"
        obj = self._seen(obj)
        if not (strict and not self.known.issuperset(obj)) and self.validator.is_valid(obj):
            return None
        rejecting = self.unknown(obj) if strict else []
        broken = self.violations(obj, room=MAX_PROBLEMS - len(rejecting))
        if self.action == "reject":
            rejecting += broken
            broken = []
        return (rejecting, broken) if rejecting or broken else None

    def _seen(self, obj: Any) -> Any:
        """The row as the schema sees it: decimal fields sent as strings, as numbers. The
        decoded row is changed in place (no copy on the per-row path): callers have taken
        what they need of it as sent before they ask."""
        for name in self.decimals:
            value = obj.get(name)
            if type(value) is str:
                try:
                    number = Decimal(value)  # surrounding whitespace is allowed, as sent
                except InvalidOperation:
                    continue  # the contract rejects it; the rules see it as sent
                if number.is_finite():
                    obj[name] = number
        return obj

    def rejecting(self, obj: Any) -> list[RowError]:
        """The problems of a row that would reject it (for a row the contract refused)."""
        if type(obj) is not dict:
            return []  # the contract said so already
        found = self.check(obj)
        return found[0] if found is not None else []

    def unknown(self, obj: Any) -> list[RowError]:
        if type(obj) is not dict:
            return []
        names = [name for name in obj if name not in self.known][:MAX_PROBLEMS]
        return [
            RowError(
                name[:_MAX_FIELD],
                "unknown_field",
                _short(f"{name} is not a field of {self.record_type}"),
            )
            for name in names
        ]

    def violations(self, obj: Any, *, room: int = MAX_PROBLEMS) -> list[RowError]:
        """Each failed keyword of the schema: `field` the path in the row, the message with
        the rule's version and the keyword's place in the schema."""
        found = []
        for error in self.validator.iter_errors(self._seen(obj)):
            if len(found) >= 10 * MAX_PROBLEMS:
                break  # an array of thousands of bad items says it in fewer
            keyword = "/" + "/".join(str(step) for step in error.schema_path)
            message = f"{error.message} (rules version {self.version}, at {keyword})"
            found.append(RowError(_field_of(error), "rule_violation", _short(message)))
        last = len(self.order)
        found.sort(key=lambda e: (self.order.get(e.field.split(".", 1)[0], last), _steps(e.field)))
        return found[: max(room, 0)]


def _steps(field: str) -> tuple:
    """A path's order: an array's items by their index (`list.2` before `list.10`)."""
    return tuple(
        (0, int(step), "") if step.isascii() and step.isdigit() else (1, 0, step)
        for step in field.split(".")
    )


def _field_of(error: jsonschema_rs.ValidationError) -> str:
    """The row's field an error is about: the instance path (dotted), or, for a missing or
    unexpected property, that property."""
    path = [str(step) for step in error.instance_path]
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        path.append(str(kind.property))
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        path.append(str(kind.unexpected[0]) if kind.unexpected else "")
    return ".".join(path)[:_MAX_FIELD]


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _refuse_remote(uri: str) -> Any:
    raise RuleError(f"the schema refers to {uri}: remote references are not allowed")


def compile_rules(
    record_type: str,
    schema: Mapping[str, Any] | bool,
    *,
    version: int = 0,
    action: str = "reject",
    unknown_fields: str = "ignore",
) -> Rules:
    """Compile a rule set, or raise `RuleError` with the reason it cannot be used."""
    if record_type not in RECORDS:
        raise RuleError(f"unknown record type {record_type!r}")
    if action not in RULE_ACTIONS:
        raise RuleError(f"action must be one of {', '.join(RULE_ACTIONS)}")
    if unknown_fields not in UNKNOWN_FIELDS:
        raise RuleError(f"unknown_fields must be one of {', '.join(UNKNOWN_FIELDS)}")
    if not isinstance(schema, dict | bool):
        raise RuleError("the schema must be a JSON object (or a boolean)")
    if len(msgspec.json.encode(schema)) > MAX_SCHEMA_BYTES:
        raise RuleError(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes")
    if isinstance(schema, dict):
        try:  # stored as jsonb: no NUL in its strings, numbers within PostgreSQL's numeric
            check_object("the schema", schema)
        except Invalid as exc:
            raise RuleError(exc.message) from None
    try:
        validator = jsonschema_rs.validator_for(
            schema,
            validate_formats=True,  # a rule that says "format": "email" means it
            ignore_unknown_formats=False,  # and one that says "emial" is a mistake
            retriever=_refuse_remote,
            pattern_options=jsonschema_rs.RegexOptions(),
        )
    except jsonschema_rs.ValidationError as exc:
        raise RuleError(_schema_problem(exc)) from None
    except (ValueError, TypeError) as exc:
        raise RuleError(f"the schema cannot be used: {exc}") from None
    spec = RECORDS[record_type]
    # Only the decimal fields the schema can reach are turned into numbers: those it names,
    # or all of them when it has keywords that apply to fields it does not name.
    text = msgspec.json.encode(schema)
    generic = any(
        k in text
        for k in (
            b'"additionalProperties"',
            b'"patternProperties"',
            b'"unevaluatedProperties"',
            b'"dependentSchemas"',
        )
    )
    decimals = tuple(
        f.name
        for f in spec.fields
        if f.check is check_decimal and (generic or f'"{f.name}"'.encode() in text)
    )
    order = {name: position for position, name in enumerate(spec.columns)}
    known = frozenset(spec.columns)
    return Rules(record_type, version, action, unknown_fields, known, validator, decimals, order)


def _schema_problem(exc: jsonschema_rs.ValidationError) -> str:
    """Why a schema was refused, in one line: the meta-schema's complaint and where."""
    message = exc.message.split("\n", 1)[0].strip()
    if "retrieving it failed: RuleError: " in message:
        return _short(message.split("retrieving it failed: RuleError: ", 1)[1])
    if message.endswith('is not a "regex"'):
        message += (
            " (patterns run on a linear-time engine: no lookaround, no backreferences, and a"
            " limit on a compiled pattern's size, which counted repetitions such as a{1000} reach)"
        )
    where = "/" + "/".join(str(step) for step in exc.instance_path)
    return _short(f"invalid JSON Schema at {where}: {message}")
