from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, NotFoundError
from apps.tenants.models import ApiKey, Tenant

KEY_PREFIX_BYTES = 6  # 12 hex chars: public, used to find the row
_PREFIX_RE = re.compile(rf"[0-9a-f]{{{2 * KEY_PREFIX_BYTES}}}")


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


@transaction.atomic
def tenant_create(*, name: str) -> tuple[Tenant, IssuedKey]:
    name = name.strip()
    if not name:
        raise ApplicationError("A tenant needs a non-empty name.")
    tenant = Tenant.objects.create(name=name)
    return tenant, _issue(tenant=tenant)


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
    parts = raw_key.split("_", 2)
    if len(parts) < 3 or parts[0] != "ck" or not _PREFIX_RE.fullmatch(parts[1]):
        return None
    # One plain query: this runs on every request, and the ORM's building of it cost more
    # than the query itself.
    with connection.cursor() as cursor:
        cursor.execute(_TENANT_OF_KEY, [parts[1]])
        row = cursor.fetchone()
    if row is None or not hmac.compare_digest(row[0], _hash(raw_key)):
        return None
    return Tenant.from_db("default", _TENANT_FIELDS, row[1:])


_TENANT_FIELDS = [f.attname for f in Tenant._meta.concrete_fields]
_TENANT_OF_KEY = (
    "SELECT k.key_hash, "
    + ", ".join(f"t.{name}" for name in _TENANT_FIELDS)
    + " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
    " WHERE k.prefix = %s AND k.revoked_at IS NULL AND t.is_active"
)
