import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.ingestions.sample_data import Sizes, write_tenant_files
from apps.tenants.services import tenant_create


class Command(BaseCommand):
    help = (
        "Write a deterministic sample data directory (one folder per tenant and a tenants.json "
        "manifest with ids and API keys), creating the tenants."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=Path("generated_data"))
        parser.add_argument("--tenants", type=int, default=2)
        parser.add_argument("--customers", type=int, default=1000)
        parser.add_argument("--products", type=int, default=100)
        parser.add_argument("--orders", type=int, default=5000)
        parser.add_argument("--items-per-order", type=float, default=2.8)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--fault-rate",
            type=float,
            default=0.0,
            help="share of extra bad lines (0..1), cycling through every reject kind",
        )

    def handle(self, *args, out, tenants, seed, fault_rate, **options):
        if tenants < 1:
            raise CommandError("--tenants must be at least 1")
        if not 0 <= fault_rate <= 1:
            raise CommandError("--fault-rate must be between 0 and 1")
        if options["customers"] < 1 or options["products"] < 1:
            raise CommandError("--customers and --products must be at least 1")
        sizes = Sizes(
            customers=options["customers"],
            products=options["products"],
            orders=options["orders"],
            items_per_order=options["items_per_order"],
            fault_rate=fault_rate,
        )
        out.mkdir(parents=True, exist_ok=True)
        manifest = []
        for n in range(tenants):
            name = f"tenant-{n + 1:02d}"
            tenant, issued = tenant_create(name=name)
            files = write_tenant_files(out / name, sizes=sizes, seed=seed + n)
            manifest.append(
                {"tenant_id": str(tenant.id), "name": name, "api_key": issued.raw, "dir": name}
            )
            for f in files:
                self.stdout.write(f"{name}  {f.path.name:24} rows={f.rows} faults={f.faults}")
        (out / "tenants.json").write_text(json.dumps(manifest, indent=2) + "\n")
        self.stdout.write(f"manifest: {out / 'tenants.json'} ({tenants} tenant(s))")
