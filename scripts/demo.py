"""`make demo`: the main job on the embedded defaults, end to end.

Migrates the database, generates a sample data set (two tenants, a few bad lines of every
kind), starts the web server and a Celery worker, uploads every file through the HTTP API
(tenants in parallel), waits for the workers to finish, prints what happened to each
file, and stops what it started (`--keep-running` leaves the stack up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ORDER = ("customers", "products", "orders", "order_items")
TERMINAL = {"completed", "completed_with_errors", "failed"}


def upload_file(client: httpx.Client, key: str, path: Path) -> dict:
    with path.open("rb") as body:
        response = client.post(
            "/api/v1/ingest/comprehensive/",
            params={"filename": path.name},
            content=body,
            headers={
                "X-API-Key": key,
                "Content-Type": "application/x-ndjson",
                "Idempotency-Key": f"demo-{path.parent.name}-{path.name}",
            },
        )
    if response.status_code not in (200, 202):
        raise SystemExit(f"{path}: {response.status_code} {response.text}")
    return response.json()


def wait_done(client: httpx.Client, key: str, upload: dict, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.get(upload["url"], headers={"X-API-Key": key}).json()
        if (
            current["state"] in TERMINAL
            and current["rows"]["pending"] == 0
            or (current["state"] in TERMINAL and time.monotonic() > deadline - timeout + 30)
        ):
            return current
        time.sleep(0.2)
    raise SystemExit(f"upload {upload['id']} did not finish within {timeout:.0f}s")


def ingest_tenant(base: str, entry: dict, folder: Path) -> list[dict]:
    with httpx.Client(base_url=base, timeout=600) as client:
        sent = [
            upload_file(client, entry["api_key"], folder / f"{name}_1.ndjson") for name in ORDER
        ]
        return [wait_done(client, entry["api_key"], upload) for upload in sent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "generated_data")
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--fault-rate", type=float, default=0.002)
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the web server and worker up (Ctrl-C stops them)",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from rich.console import Console
    from rich.table import Table

    from scripts.stack import running_stack

    console = Console(width=None if sys.stdout.isatty() else 130)
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
    console.print("[bold]3.[/] starting the web server and a worker")
    with running_stack() as base:
        console.print(f"    API at {base}/api/v1/  (schema: {base}/api/v1/schema/)")
        console.print("[bold]4.[/] uploading every file through the API; workers load them")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(manifest)) as pool:
            results = list(
                pool.map(lambda e: ingest_tenant(base, e, args.out / e["dir"]), manifest)
            )
        elapsed = time.perf_counter() - started
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
        ):
            table.add_column(col, justify="left" if col in ("tenant", "file", "state") else "right")
        rows = 0
        for entry, uploads in zip(manifest, results, strict=True):
            for up in uploads:
                r = up["rows"]
                rows += r["total"]
                table.add_row(
                    entry["name"],
                    up["filename"],
                    up["state"],
                    f"{r['total']:,}",
                    f"{r['inserted']:,}",
                    f"{r['updated']:,}",
                    f"{r['rejected']:,}",
                    f"{r['pending']:,}",
                )
        console.print(table)
        console.print(
            f"{rows:,} rows in {elapsed:.1f} s from the first upload to the last one done: "
            f"{rows / elapsed:,.0f} rows/s"
        )
        if args.keep_running:
            console.print(f"stack running at {base}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
