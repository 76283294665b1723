import json

from django.core.management.base import BaseCommand

from apps.tenants.selectors import tenant_list


class Command(BaseCommand):
    help = (
        "List every tenant, oldest first: id, created (UTC), active API keys and name "
        "(an inactive tenant is marked so)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON array of {id, name, created_at, is_active, active_keys}",
        )

    def handle(self, *args, **options):
        tenants = list(tenant_list())
        if options["json"]:
            rows = [
                {
                    "id": str(t.id),
                    "name": t.name,
                    "created_at": t.created_at.isoformat(),
                    "is_active": t.is_active,
                    "active_keys": t.active_keys,
                }
                for t in tenants
            ]
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not tenants:
            self.stdout.write("No tenants yet: `manage.py create_tenant NAME` creates one.")
            return
        self.stdout.write(f"{'ID':36}  {'CREATED (UTC)':19}  {'KEYS':>4}  NAME")
        for t in tenants:
            created = t.created_at.strftime("%Y-%m-%d %H:%M:%S")
            name = t.name if t.is_active else f"{t.name}  (inactive)"
            self.stdout.write(f"{t.id!s:36}  {created:19}  {t.active_keys:>4}  {name}")
