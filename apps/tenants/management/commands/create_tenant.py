import json

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApplicationError
from apps.tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant and print its id and API key (the key is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, name, **options):
        try:
            tenant, issued = tenant_create(name=name)
        except ApplicationError as exc:
            raise CommandError(exc.detail) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {"tenant_id": str(tenant.id), "name": tenant.name, "api_key": issued.raw}
                )
            )
        else:
            self.stdout.write(f"tenant_id={tenant.id}")
            self.stdout.write(f"api_key={issued.raw}")
