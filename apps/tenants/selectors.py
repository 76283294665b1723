from __future__ import annotations

import uuid

from apps.tenants.models import Tenant


def tenant_get(*, tenant_id: str | uuid.UUID) -> Tenant | None:
    try:
        return Tenant.objects.filter(id=uuid.UUID(str(tenant_id))).first()
    except ValueError:
        return None
