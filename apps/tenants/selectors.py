from __future__ import annotations

import unicodedata
import uuid

from django.db.models import Count, Q, QuerySet, Value
from django.db.models.functions import Lower

from apps.core.ids import uuid_or_none
from apps.tenants.models import Tenant


def tenant_get(*, tenant_id: str | uuid.UUID) -> Tenant | None:
    parsed = uuid_or_none(tenant_id)
    return Tenant.objects.filter(id=parsed).first() if parsed is not None else None


def tenant_name_normal(name: str) -> str:
    """A name as names are stored and compared: NFKC (unique as read, not as typed: a
    fullwidth "Ａcme" is "Acme"), without surrounding spaces."""
    return unicodedata.normalize("NFKC", name).strip()


def tenant_named(*, name: str) -> Tenant | None:
    """The tenant of that name, ignoring case as the unique constraint does (PostgreSQL's
    lower(), which its index answers)."""
    name = tenant_name_normal(name)
    return (
        Tenant.objects.alias(lower_name=Lower("name")).filter(lower_name=Lower(Value(name))).first()
    )


def tenant_find(*, id_or_name: str) -> Tenant | None:
    """A tenant by its id or, failing that, its name (ignoring case)."""
    return tenant_get(tenant_id=id_or_name.strip()) or tenant_named(name=id_or_name)


def tenant_list() -> QuerySet[Tenant]:
    """Every tenant, oldest first, each with `active_keys`: how many unrevoked keys it has."""
    return Tenant.objects.annotate(
        active_keys=Count("api_keys", filter=Q(api_keys__revoked_at=None))
    ).order_by("created_at", "id")
