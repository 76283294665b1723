import json
import os
import secrets
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.ingestions.sample_data import Sizes, write_tenant_files
from apps.tenants.services import TenantNameTakenError, tenant_create

MANIFEST = "tenants.json"


class Command(BaseCommand):
    help = (
        "Write a deterministic sample data directory (one folder per tenant and a tenants.json "
        "manifest with ids and API keys, readable by its owner only), creating the tenants. "
        "They are named tenant-01, tenant-02, ...; names already taken are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out",
            type=Path,
            default=Path("generated_data"),
            help="the directory to write (created if missing; default: generated_data)",
        )
        parser.add_argument(
            "--tenants", type=int, default=2, help="how many tenants to create (default: 2)"
        )
        parser.add_argument(
            "--customers", type=int, default=1000, help="customers per tenant (default: 1000)"
        )
        parser.add_argument(
            "--products", type=int, default=100, help="products per tenant (default: 100)"
        )
        parser.add_argument(
            "--orders", type=int, default=5000, help="orders per tenant (default: 5000)"
        )
        parser.add_argument(
            "--items-per-order",
            type=float,
            default=2.8,
            help="order items per order, on average (default: 2.8)",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=42,
            help="the random seed: the same seed writes the same files (default: 42)",
        )
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
        if options["orders"] < 0 or not options["items_per_order"] >= 0:
            raise CommandError("--orders and --items-per-order must be at least 0")
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is not a directory")
        sizes = Sizes(
            customers=options["customers"],
            products=options["products"],
            orders=options["orders"],
            items_per_order=options["items_per_order"],
            fault_rate=fault_rate,
        )
        out.mkdir(parents=True, exist_ok=True)
        manifest = []
        number = 0
        for n in range(tenants):
            tenant, issued, number = _next_tenant(after=number)
            files = write_tenant_files(out / tenant.name, sizes=sizes, seed=seed + n)
            manifest.append(
                {
                    "tenant_id": str(tenant.id),
                    "name": tenant.name,
                    "api_key": issued.raw,
                    "dir": tenant.name,
                }
            )
            for f in files:
                self.stdout.write(
                    f"{tenant.name}  {f.path.name:24} rows={f.rows} faults={f.faults}"
                )
        write_private(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        self.stdout.write(f"manifest: {out / MANIFEST} ({tenants} tenant(s))")


def _next_tenant(*, after: int):
    """The next tenant-NN whose name is free, created: (tenant, its key, NN)."""
    number = after
    while True:
        number += 1
        try:
            tenant, issued = tenant_create(name=f"tenant-{number:02d}")
        except TenantNameTakenError:
            continue  # an earlier run's (or another tenant's) name
        return tenant, issued, number


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable and writable by its owner only (the manifest holds
    live API keys): a new file, mode 0600 from its creation on (never wider, not even for a
    moment), then renamed over any earlier one, whatever that one's mode was."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
