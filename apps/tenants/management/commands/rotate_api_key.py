from django.core.management.base import BaseCommand

from apps.tenants.management.commands._common import TENANT_HELP, tenant_or_error
from apps.tenants.services import api_key_rotate


class Command(BaseCommand):
    help = "Issue a new API key for a tenant; its other keys are revoked unless --keep-old."

    def add_arguments(self, parser):
        parser.add_argument("tenant", metavar="TENANT", help=TENANT_HELP)
        parser.add_argument("--keep-old", action="store_true", help="leave existing keys active")

    def handle(self, *args, tenant, keep_old, **options):
        found = tenant_or_error(tenant)
        issued = api_key_rotate(tenant=found, revoke_existing=not keep_old)
        self.stdout.write(f"tenant_id={found.id}")
        self.stdout.write(f"api_key={issued.raw}")
