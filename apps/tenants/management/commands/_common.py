from django.core.management.base import CommandError

from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_find

TENANT_HELP = "the tenant's id, or its name (ignoring case); `manage.py list_tenants` lists both"


def tenant_or_error(id_or_name: str) -> Tenant:
    tenant = tenant_find(id_or_name=id_or_name)
    if tenant is None:
        raise CommandError(
            f"No tenant has the id or name {id_or_name!r}. `manage.py list_tenants` lists every "
            "tenant's id and name (names match ignoring case)."
        )
    return tenant
