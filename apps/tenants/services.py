from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.db import prepared_cursor
from apps.core.errors import ApplicationError, ConflictError, NotFoundError
from apps.core.ratelimit import (
    Rate,
    RateLimitState,
    api_key_window,
    postgres_hit_params,
    postgres_hit_sql,
    postgres_over_limit,
    rate_limit_state,
    window_name,
)
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.selectors import tenant_name_normal, tenant_named

KEY_PREFIX_BYTES = 6  # 12 hex chars: public, used to find the row
_PREFIX_RE = re.compile(rf"[0-9a-f]{{{2 * KEY_PREFIX_BYTES}}}")
_NAME_CONSTRAINT = "tenants_name_unique_ci"
# A key's last use is written at most this often: one UPDATE a minute per key, not per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TenantNameTakenError(ConflictError):
    code = "tenant_name_taken"
    title = "Tenant name taken"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key: `raw` is the only copy of the secret, shown once."""

    api_key: ApiKey
    raw: str


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _issue(*, tenant: Tenant) -> IssuedKey:
    prefix = secrets.token_hex(KEY_PREFIX_BYTES)
    raw = f"ck_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(tenant=tenant, prefix=prefix, key_hash=_hash(raw))
    return IssuedKey(api_key=api_key, raw=raw)


# Characters a name may not hold beside control ones: format characters (zero-width,
# bidirectional overrides), line and paragraph separators, surrogates, private-use and
# unassigned code points.
_UNSEEN = {"Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_ID_SHAPED = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


@transaction.atomic
def tenant_create(*, name: str) -> tuple[Tenant, IssuedKey]:
    """A tenant and its first key. Names are unique ignoring case: a taken one (also when
    another create takes it at the same moment) is a `TenantNameTakenError`."""
    name = tenant_name_normal(name)
    if not name:
        raise ApplicationError("A tenant needs a non-empty name.")
    longest = Tenant._meta.get_field("name").max_length
    if len(name) > longest:
        raise ApplicationError(f"A tenant name has at most {longest} characters, not {len(name)}.")
    if any(unicodedata.category(char) == "Cc" for char in name):  # tabs, newlines, NUL
        raise ApplicationError(f"A tenant name may not hold control characters: {name!r}.")
    if any(unicodedata.category(char) in _UNSEEN for char in name):
        raise ApplicationError(
            "A tenant name may not hold invisible characters (zero-width, direction marks, "
            f"line separators): {name!r}."
        )
    if _ID_SHAPED.fullmatch(name):  # commands take an id or a name: an id is read first
        raise ApplicationError(f"A tenant name may not be a tenant id's shape: {name!r}.")
    existing = tenant_named(name=name)
    if existing is not None:
        raise _name_taken(name, existing)
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives a refusal
            tenant = Tenant.objects.create(name=name)
    except IntegrityError as exc:
        if getattr(exc.__cause__, "diag", None) is None or (
            exc.__cause__.diag.constraint_name != _NAME_CONSTRAINT
        ):
            raise
        raise _name_taken(name, tenant_named(name=name)) from None
    return tenant, _issue(tenant=tenant)


def _name_taken(name: str, existing: Tenant | None) -> TenantNameTakenError:
    which = f"{existing.name!r} (id {existing.id})" if existing is not None else repr(name)
    return TenantNameTakenError(
        f"A tenant named {which} already exists; tenant names are unique, ignoring case. "
        "`manage.py list_tenants` lists them."
    )


@transaction.atomic
def api_key_rotate(*, tenant: Tenant, revoke_existing: bool = True) -> IssuedKey:
    """Issue a new key; by default the tenant's other keys are revoked at once."""
    if revoke_existing:
        ApiKey.objects.filter(tenant=tenant, revoked_at=None).update(revoked_at=timezone.now())
    return _issue(tenant=tenant)


@transaction.atomic
def api_key_revoke(*, tenant: Tenant, prefix: str | None = None) -> int:
    """Revoke one key (by its public prefix) or, without a prefix, every key of the tenant."""
    keys = ApiKey.objects.filter(tenant=tenant, revoked_at=None)
    if prefix is not None:
        keys = keys.filter(prefix=prefix)
        if not keys.exists():
            raise NotFoundError(f"No active key with prefix {prefix!r} for this tenant.")
    return keys.update(revoked_at=timezone.now())


def tenant_from_api_key(*, raw_key: str) -> Tenant | None:
    """Resolve a raw API key to its active tenant, or None when it is unknown or revoked."""
    return tenant_from_api_key_counted(raw_key=raw_key, rate=None).tenant


@dataclass(frozen=True)
class KeyCheck:
    tenant: Tenant | None  # None: the key is unknown or revoked
    rate_limit: RateLimitState | None  # the request counted, when a rate was given


def tenant_from_api_key_counted(*, raw_key: str, rate: Rate | None) -> KeyCheck:
    """`tenant_from_api_key`, and with a `rate` one request of a valid key counted against
    it (`apps.core.ratelimit`, its PostgreSQL store) in the same statement: the lookup and
    the count are one round trip. A wrong key counts nothing."""
    parts = raw_key.split("_", 2)
    if len(parts) < 3 or parts[0] != "ck" or not _PREFIX_RE.fullmatch(parts[1]):
        return KeyCheck(None, None)
    # One plain query, prepared: this runs on every request, and the ORM's building of it
    # cost more than the query itself. The hash is compared in the statement (a sha256 of
    # the secret: how long a comparison takes tells nothing of the secret itself).
    params = {"prefix": parts[1], "hash": _hash(raw_key)}
    statement = _TENANT_OF_KEY
    if rate is not None:
        name = window_name(api_key_window(parts[1]), rate)
        params |= postgres_hit_params(name, rate)
        statement = _TENANT_OF_KEY_COUNTED
    with prepared_cursor() as cursor:
        # results in binary: the same values, read in half the time of their text
        # (mostly the tenant's and the key's timestamps)
        cursor.execute(statement, params, prepare=True, binary=True)
        row = cursor.fetchone()
        if row is None:
            return KeyCheck(None, None)
        state = None
        if rate is not None:
            row, hits, milliseconds = row[:-2], *row[-2:]
            if hits is None:  # over the limit, nothing written: when its window ends
                hits, milliseconds = postgres_over_limit(cursor, name, rate)
            state = rate_limit_state(int(hits), max(0, int(milliseconds)), rate)
        key_id, last_used_at = row[:2]
        now = timezone.now()
        if last_used_at is None or last_used_at < now - LAST_USED_RESOLUTION:
            # the condition again in the statement: of requests racing here, one writes
            cursor.execute(_KEY_USED, [now, key_id, now - LAST_USED_RESOLUTION])
    return KeyCheck(Tenant.from_db("default", _TENANT_FIELDS, row[2:]), state)


_TENANT_FIELDS = [f.attname for f in Tenant._meta.concrete_fields]
_TENANT_OF_KEY = (
    "SELECT k.id, k.last_used_at, "
    + ", ".join(f"t.{name}" for name in _TENANT_FIELDS)
    + " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
    " WHERE k.prefix = %(prefix)s AND k.key_hash = %(hash)s AND k.revoked_at IS NULL"
    " AND t.is_active"
)
_TENANT_OF_KEY_COUNTED = (
    f"WITH found AS ({_TENANT_OF_KEY}), hit AS ({postgres_hit_sql('FROM found')}) "
    "SELECT found.*, hit.hits, hit.reset_ms FROM found LEFT JOIN hit ON true"
)
_KEY_USED = (
    "UPDATE api_keys SET last_used_at = %s"
    " WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)"
)
