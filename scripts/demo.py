"""`make demo`: the main job on the embedded defaults.

Migrates the database, generates a small sample data set (two tenants, a few bad lines
of every kind), ingests every file with the engine in dependency order, and prints what
happened to each file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ORDER = ("customers", "products", "orders", "order_items")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "generated_data")
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--fault-rate", type=float, default=0.002)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from rich.console import Console
    from rich.table import Table

    from apps.ingestions.services import upload_ingest_path
    from apps.tenants.models import Tenant

    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print("[bold]1.[/] migrating the database")
    call_command("migrate", verbosity=0)
    console.print(f"[bold]2.[/] generating data for {args.tenants} tenant(s) in {args.out}")
    shutil.rmtree(args.out, ignore_errors=True)
    call_command(
        "generate_data",
        out=args.out,
        tenants=args.tenants,
        customers=max(1, args.orders // 5),
        products=max(1, args.orders // 50),
        orders=args.orders,
        fault_rate=args.fault_rate,
        stdout=open(os.devnull, "w"),  # noqa: SIM115 - discarded output
    )
    manifest = json.loads((args.out / "tenants.json").read_text())
    console.print("[bold]3.[/] ingesting, in dependency order")
    table = Table(title="ingestion results")
    for col in (
        "tenant",
        "file",
        "state",
        "total",
        "inserted",
        "updated",
        "rejected",
        "pending",
        "rows/s",
    ):
        table.add_column(col, justify="right" if col not in ("tenant", "file", "state") else "left")
    rows = 0
    started = time.perf_counter()
    for entry in manifest:
        tenant = Tenant.objects.get(id=entry["tenant_id"])
        for name in ORDER:
            path = args.out / entry["dir"] / f"{name}_1.ndjson"
            t0 = time.perf_counter()
            up = upload_ingest_path(tenant=tenant, path=path).upload
            rate = up.rows_total / max(time.perf_counter() - t0, 1e-9)
            rows += up.rows_total
            table.add_row(
                entry["name"],
                path.name,
                up.state,
                f"{up.rows_total:,}",
                f"{up.rows_inserted:,}",
                f"{up.rows_updated:,}",
                f"{up.rows_rejected:,}",
                f"{up.rows_pending:,}",
                f"{rate:,.0f}",
            )
    elapsed = time.perf_counter() - started
    console.print(table)
    console.print(f"{rows:,} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s overall")


if __name__ == "__main__":
    main()
