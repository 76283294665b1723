"""`make demo`: the service end to end on one machine, with nothing set.

Migrates the database (the embedded PostgreSQL when DATABASE_URL is unset), starts the web
server and a Celery worker (scripts/stack.py), creates two tenants and their sample data with
a few bad lines of every kind (`manage.py generate_data`), uploads it with the bulk CLI
(ingest_client: dependency order, resumable sessions for the large files), which
prints a table per file and the overall rows/s, and stops what it started.
`--keep-running` leaves the web server and worker up until Ctrl-C, with Celery beat too (the
periodic jobs: pending expiry, purges), and prints where the API, its documentation, the
dashboard, the keys and the logs are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "generated_data")
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--orders", type=int, default=20_000, help="orders per tenant")
    parser.add_argument("--fault-rate", type=float, default=0.002)
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the web server and worker up afterwards (Ctrl-C stops them)",
    )
    args = parser.parse_args()
    # a plain `kill` stops the stack too: SystemExit runs running_stack's cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from ingest_client import EXIT_FAILED
    from ingest_client import main as bulk_ingest
    from scripts.stack import running_stack

    started = time.perf_counter()
    print("1. migrating the database", flush=True)
    call_command("migrate", verbosity=0)
    print(f"2. creating {args.tenants} tenants and their sample data in {args.out}", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    with open(os.devnull, "w") as quiet:
        call_command(
            "generate_data",
            out=args.out,
            tenants=args.tenants,
            customers=max(1, args.orders // 5),
            products=max(1, args.orders // 50),
            orders=args.orders,
            fault_rate=args.fault_rate,
            stdout=quiet,
        )
    started_with = "the web server (gunicorn), a Celery worker and beat"
    if not args.keep_running:
        started_with = "the web server (gunicorn) and a Celery worker"
    print(f"3. starting {started_with}", flush=True)
    logs = ROOT / ".data" / "logs"
    with running_stack(beat=args.keep_running, log_dir=logs) as base:
        print(f"4. python bulk_ingest.py --data-dir {args.out.name} --api-url {base}", flush=True)
        code = bulk_ingest(["--data-dir", str(args.out), "--api-url", base])
        print(f"demo done in {time.perf_counter() - started:.0f} s; bulk_ingest exit code {code}")
        if args.keep_running:
            _where(base, keys=args.out / "tenants.json", logs=logs)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    # exit code 1 means rejected rows, which the demo data holds on purpose
    return 1 if code == EXIT_FAILED else 0


def _where(base: str, *, keys: Path, logs: Path) -> None:
    """Where everything is, once the demo keeps running."""
    rows = [
        ("API", f"{base}/api/v1/ (X-API-Key: a key from the keys file)"),
        ("OpenAPI", f"{base}/api/v1/schema/"),
        ("dashboard", f"{base}/dashboard/ (sign in with a key)"),
        ("metrics", f"{base}/metrics"),
        ("keys", str(keys)),
        ("logs", ", ".join(str(logs / f"{name}.log") for name in ("web", "worker", "beat"))),
    ]
    print("the service keeps running (Ctrl-C stops it):")
    for name, where in rows:
        print(f"  {name:<10} {where}")


if __name__ == "__main__":
    sys.exit(main())
