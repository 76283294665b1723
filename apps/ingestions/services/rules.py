"""A tenant's validation rules per record type: versions written (`rules_put`), ended
(`rules_end`), and compiled for a load (`rules_current`).

A version is never changed once written, so its compiled form is kept by id in this
process (`_COMPILED`): a load pays one small query, not a compile. A live batch, whose
request read its tenant (`rules_serial`, which every write here moves in its own
transaction), does not even query while the serial has not moved (`_CURRENT`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.errors import ApplicationError, NotFoundError
from apps.core.exactjson import exact_loads_stored
from apps.ingestions import engine
from apps.ingestions.models import ValidationRule
from apps.tenants.models import Tenant

_COMPILED: OrderedDict[int, engine.Rules] = OrderedDict()
_COMPILED_MAX = 256
_compiled_lock = threading.Lock()
# (tenant id, record type or None, the tenant's rules_serial) -> its current rules
_CURRENT: OrderedDict[tuple, dict[str, engine.Rules]] = OrderedDict()
_CURRENT_MAX = 1024
# One writer of a tenant's rules of one type at a time: versions follow each other.
_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('rules:' || %s || ':' || %s, 0))"


class InvalidRulesError(ApplicationError):
    code = "invalid_rules"
    title = "The rules cannot be used"


def rules_put(
    *, tenant: Tenant, record_type: str, schema, action: str, unknown_fields: str
) -> ValidationRule:
    """Write a new version of the tenant's rules for `record_type` and end the current one.
    Raises `InvalidRulesError` (400, with the reason) for a schema that cannot be used."""
    try:
        engine.compile_rules(record_type, schema, action=action, unknown_fields=unknown_fields)
    except engine.RuleError as exc:
        raise InvalidRulesError(str(exc)) from None
    with transaction.atomic():
        _lock_writers(tenant, record_type)
        _serial_moved(tenant)
        now = timezone.now()
        mine = ValidationRule.objects.filter(tenant=tenant, record_type=record_type)
        mine.filter(ended_at__isnull=True).update(ended_at=now)
        last = mine.order_by("-version").values_list("version", flat=True).first()
        return ValidationRule.objects.create(
            tenant=tenant,
            record_type=record_type,
            version=(last or 0) + 1,
            schema=schema,
            action=action,
            unknown_fields=unknown_fields,
            created_at=now,
        )


def rules_end(*, tenant: Tenant, record_type: str) -> ValidationRule:
    """End the tenant's current rules for `record_type`: rows are checked against the
    contract alone from now on. 404 when there are none."""
    with transaction.atomic():
        _lock_writers(tenant, record_type)
        current = (
            ValidationRule.objects.filter(
                tenant=tenant, record_type=record_type, ended_at__isnull=True
            )
            .select_for_update()
            .first()
        )
        if current is None:
            raise NotFoundError(f"No rules for {record_type} to end.")
        _serial_moved(tenant)
        current.ended_at = timezone.now()
        current.save(update_fields=["ended_at"])
        return current


def _lock_writers(tenant: Tenant, record_type: str) -> None:
    """Wait for any other writer of these rules, until the caller's transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(_WRITE_LOCK, [str(tenant.id), record_type])


def _serial_moved(tenant: Tenant) -> None:
    """In the writer's transaction: processes that kept the tenant's rules ask again."""
    Tenant.objects.filter(id=tenant.id).update(rules_serial=F("rules_serial") + 1)


def rules_current(
    *, tenant_id, record_type: str | None = None, serial: int | None = None
) -> dict[str, engine.Rules]:
    """The tenant's current rules, compiled, by record type (of `record_type` only, when
    given): one query; a version compiled once in this process is not compiled again.
    With the tenant's `serial` (`Tenant.rules_serial` as read by the caller), the answer
    kept for that serial, without a query: the rules as of when the serial was read, or
    later."""
    if serial is None:
        return _current(tenant_id, record_type)
    key = (str(tenant_id), record_type, serial)
    with _compiled_lock:
        rules = _CURRENT.get(key)
        if rules is not None:
            _CURRENT.move_to_end(key)
            return rules
    rules = _current(tenant_id, record_type)
    with _compiled_lock:
        _CURRENT[key] = rules
        while len(_CURRENT) > _CURRENT_MAX:
            _CURRENT.popitem(last=False)
    return rules


def _current(tenant_id, record_type: str | None) -> dict[str, engine.Rules]:
    sql = (
        "SELECT id, record_type, version, action, unknown_fields, schema "
        "FROM validation_rules WHERE tenant_id = %s AND ended_at IS NULL"
    )
    params: list = [tenant_id]
    if record_type is not None:
        sql += " AND record_type = %s"
        params.append(record_type)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return {row[1]: _compiled(*row) for row in rows}


def _compiled(rule_id, record_type, version, action, unknown_fields, schema) -> engine.Rules:
    with _compiled_lock:
        rules = _COMPILED.get(rule_id)
        if rules is not None:
            _COMPILED.move_to_end(rule_id)
            return rules
    if isinstance(schema, str):  # Django's cursor hands jsonb over as text
        # exact, as the rule was checked when written (floats made 1e-400 zero, and a
        # 19.990000000000000000001 maximum 19.99), and however many digits jsonb prints
        schema = exact_loads_stored(schema)
    rules = engine.compile_rules(
        record_type, schema, version=version, action=action, unknown_fields=unknown_fields
    )
    with _compiled_lock:
        _COMPILED[rule_id] = rules
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    return rules
