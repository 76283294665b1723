from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApplicationError
from apps.tenants.management.commands._common import TENANT_HELP, tenant_or_error
from apps.tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke one API key of a tenant (by its prefix) or all of them."

    def add_arguments(self, parser):
        parser.add_argument("tenant", metavar="TENANT", help=TENANT_HELP)
        parser.add_argument("--prefix", help="the key's public prefix (the part after 'ck_')")

    def handle(self, *args, tenant, prefix, **options):
        found = tenant_or_error(tenant)
        try:
            count = api_key_revoke(tenant=found, prefix=prefix)
        except ApplicationError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"revoked={count}")
