from django.core.management.base import CommandError

from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_get


def tenant_or_error(tenant_id: str) -> Tenant:
    tenant = tenant_get(tenant_id=tenant_id)
    if tenant is None:
        raise CommandError(f"No tenant with id {tenant_id!r}.")
    return tenant
