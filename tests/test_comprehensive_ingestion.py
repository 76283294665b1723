"""End-to-end check of a running deployment (SPEC section 7); a script, not a pytest module.

    python tests/test_comprehensive_ingestion.py --api-url http://localhost:8000 --api-key ck_...
    docker-compose exec web python tests/test_comprehensive_ingestion.py

Generates a small data set with a few bad lines of several kinds, uploads it in the wrong
order (order items, orders, products, customers) through the HTTP API, waits for the
workers, and checks every upload's state and counts, its rejected rows, the idempotent
replay of a resend and, when the database is reachable (where Django is importable with
database access, e.g. inside the web container), the rows in the final tables. Without
--api-key it creates a tenant itself, which needs that database access.

Prints each check and `N passed, N failed`; exits 1 when a check failed, 2 when it could not
run at all. Needs only the standard library and httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
WRONG_ORDER = ("order_items", "orders", "products", "customers")
TABLES = {
    "customers": "Customer",
    "products": "Product",
    "orders": "Order",
    "order_items": "OrderItem",
}
TERMINAL = {"completed", "completed_with_errors", "failed"}


@dataclass(frozen=True)
class DataFile:
    record_type: str
    path: Path
    lines: int  # non-blank lines: rows.total
    faults: int  # bad lines: rows.rejected


@dataclass
class Report:
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS  {name}")
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok

    def equal(self, name: str, actual, expected) -> bool:
        ok = actual == expected
        label = f"{name} = {expected!r}" if ok else name
        return self.check(label, ok, f"got {actual!r}, expected {expected!r}")


# --- data -----------------------------------------------------------------------------


def generate(folder: Path, *, orders: int, seed: int) -> list[DataFile]:
    """The project's sample data generator when it is importable, else a few rows of our own."""
    try:
        sys.path.insert(0, str(ROOT))
        from apps.ingestions.sample_data import Sizes, write_tenant_files
    except ImportError:
        return _generate_plain(folder, orders=orders, seed=seed)
    sizes = Sizes(
        customers=max(1, orders // 2),
        products=max(1, orders // 10),
        orders=orders,
        items_per_order=2.5,
        fault_rate=0.05,
    )
    return [
        DataFile(f.record_type, f.path, f.rows, f.faults)
        for f in write_tenant_files(folder, sizes=sizes, seed=seed)
    ]


def _generate_plain(folder: Path, *, orders: int, seed: int) -> list[DataFile]:
    rng = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    when = "2024-05-01T10:00:00Z"
    customers = [
        {
            "customer_id": uid(),
            "name": f"Customer {n}",
            "email": f"c{n}@example.com",
            "created_at": when,
        }
        for n in range(max(1, orders // 2))
    ]
    products = [
        {
            "product_id": uid(),
            "sku": f"SKU-{n}",
            "name": f"Product {n}",
            "price": f"{rng.randint(100, 9999) / 100:.2f}",
            "active": True,
            "created_at": when,
        }
        for n in range(max(1, orders // 10))
    ]
    order_rows, item_rows = [], []
    for n in range(orders):
        customer = rng.choice(customers)
        product = rng.choice(products)
        quantity = rng.randint(1, 4)
        total = f"{float(product['price']) * quantity:.2f}"
        order_id = uid()
        order_rows.append(
            {
                "order_id": order_id,
                "external_order_id": f"E2E-{seed}-{n}",
                "customer_id": customer["customer_id"],
                "customer_name_snapshot": customer["name"],
                "customer_email_snapshot": customer["email"],
                "total_amount": total,
                "currency": "EUR",
                "order_status": "paid",
                "order_date": when,
                "created_at": when,
            }
        )
        item_rows.append(
            {
                "order_item_id": uid(),
                "order_id": order_id,
                "product_id": product["product_id"],
                "quantity": quantity,
                "unit_price": product["price"],
                "line_total": total,
            }
        )
    bad = ['{"truncated": ', '{"id": "not-a-uuid"}']  # invalid_json, missing fields
    files = []
    folder.mkdir(parents=True, exist_ok=True)
    for record_type, rows in (
        ("customers", customers),
        ("products", products),
        ("orders", order_rows),
        ("order_items", item_rows),
    ):
        path = folder / f"{record_type}_1.ndjson"
        lines = [json.dumps(row) for row in rows] + bad
        path.write_text("\n".join(lines) + "\n")
        files.append(DataFile(record_type, path, len(lines), len(bad)))
    return files


# --- the database, when reachable -----------------------------------------------------


def django_models(api_url: str, *, allowed: bool):
    """The app's models when Django is importable here and reaches the database the API
    uses (DATABASE_URL set, or the API on this machine sharing the embedded one)."""
    if not allowed:
        return None, "disabled with --no-db"
    local = urlsplit(api_url).hostname in ("localhost", "127.0.0.1", "::1")
    if not os.environ.get("DATABASE_URL") and not local:
        return None, "no DATABASE_URL for a remote API"
    try:
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
        import django

        django.setup()
        from django.db import connection

        connection.ensure_connection()
        from apps.ingestions import models
    except Exception as exc:  # noqa: BLE001 - any reason means "no database checks"
        return None, f"{type(exc).__name__}: {exc}"
    return models, ""


# --- the run --------------------------------------------------------------------------


def wait_all(client: httpx.Client, urls: list[str], timeout: float) -> list[dict]:
    """Poll until every upload is terminal with nothing pending (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        uploads = [client.get(url).json() for url in urls]
        done = all(u["state"] in TERMINAL and u["rows"]["pending"] == 0 for u in uploads)
        if done or time.monotonic() > deadline:
            return uploads
        time.sleep(0.25)


def run(args: argparse.Namespace) -> int:
    report = Report()
    run_id = uuid.uuid4().hex[:12]  # this run's Idempotency-Keys
    base = args.api_url.rstrip("/")
    models, why = django_models(base, allowed=not args.no_db)
    print(f"API {base}; database checks: {'on' if models else 'off (' + why + ')'}")
    tenant_id = None
    key = args.api_key
    if key is None:
        if models is None:
            print("error: give --api-key (creating a tenant needs database access)")
            return 2
        from apps.tenants.services import tenant_create

        tenant, issued = tenant_create(name=f"e2e-check-{int(time.time())}")
        tenant_id, key = tenant.id, issued.raw
        print(f"created tenant {tenant.name} ({tenant_id})")
    elif models is not None:
        from apps.tenants.services import tenant_from_api_key

        tenant = tenant_from_api_key(raw_key=key)
        if tenant is None:
            print("database checks off: this database does not know the key")
            models = None
        else:
            tenant_id = tenant.id

    with (
        httpx.Client(base_url=base, timeout=60) as anonymous,
        httpx.Client(base_url=base, timeout=120, headers={"X-API-Key": key}) as client,
        tempfile.TemporaryDirectory(prefix="e2e-") as tmp,
    ):
        try:
            ready = anonymous.get("/readyz")
        except httpx.HTTPError as exc:
            print(f"error: the API at {base} cannot be reached: {exc}")
            return 2
        report.equal("readyz answers 200 (database and broker reachable)", ready.status_code, 200)
        refused = anonymous.get("/api/v1/ingest/uploads/", headers={"X-API-Key": "ck_wrong"})
        report.check(
            "a wrong API key gets 401 problem+json",
            refused.status_code == 401
            and refused.headers.get("content-type", "").startswith("application/problem+json"),
            f"{refused.status_code} {refused.headers.get('content-type')}",
        )

        before = _table_counts(models, tenant_id) if models is not None else {}
        files = {
            f.record_type: f
            for f in generate(Path(tmp), orders=args.orders, seed=random.getrandbits(48))
        }
        print(f"uploading {', '.join(WRONG_ORDER)} (dependency order reversed)")
        started = time.monotonic()
        sent: dict[str, dict] = {}
        for record_type in WRONG_ORDER:
            f = files[record_type]
            response = client.post(
                "/api/v1/ingest/comprehensive/",
                files={"file": (f.path.name, f.path.read_bytes(), "application/x-ndjson")},
                headers={"Idempotency-Key": f"e2e-{run_id}-{record_type}"},
            )
            ok = report.check(
                f"{record_type}: answered 202 with the upload's id and status URL",
                response.status_code == 202 and "url" in response.json(),
                f"{response.status_code} {response.text[:200]}",
            )
            if not ok:
                return _finish(report)
            sent[record_type] = response.json()
            report.equal(
                f"{record_type}: type detected from the file name",
                sent[record_type]["type"],
                record_type,
            )

        uploads = dict(
            zip(
                WRONG_ORDER,
                wait_all(client, [sent[t]["url"] for t in WRONG_ORDER], args.timeout),
                strict=True,
            )
        )
        print(f"all uploads done after {time.monotonic() - started:.1f} s")
        for record_type in WRONG_ORDER:
            f, upload, rows = files[record_type], uploads[record_type], uploads[record_type]["rows"]
            expected_state = "completed_with_errors" if f.faults else "completed"
            report.equal(f"{record_type}: state", upload["state"], expected_state)
            report.equal(f"{record_type}: rows.total", rows["total"], f.lines)
            report.equal(f"{record_type}: rows.inserted", rows["inserted"], f.lines - f.faults)
            report.equal(f"{record_type}: rows.rejected", rows["rejected"], f.faults)
            report.equal(f"{record_type}: rows.pending", rows["pending"], 0)
            report.equal(
                f"{record_type}: total = inserted + updated + unchanged + rejected + pending "
                "+ duplicates",
                sum(v for k, v in rows.items() if k != "total"),
                rows["total"],
            )
            errors = client.get(upload["errors_url"], params={"format": "ndjson"})
            rejects = [json.loads(line) for line in errors.text.splitlines() if line.strip()]
            report.check(
                f"{record_type}: {f.faults} rejected row(s) listed with line, field, code",
                len(rejects) == f.faults
                and all({"line", "field", "code", "message"} <= r.keys() for r in rejects),
                f"{len(rejects)} listed: {[r.get('code') for r in rejects]}",
            )

        customers = files["customers"]
        replay = client.post(
            "/api/v1/ingest/comprehensive/",
            files={"file": (customers.path.name, customers.path.read_bytes(), "text/plain")},
            headers={"Idempotency-Key": f"e2e-{run_id}-customers"},
        )
        report.check(
            "resending with the same Idempotency-Key replays the first answer",
            replay.headers.get("Idempotent-Replayed") == "true"
            and replay.json().get("id") == sent["customers"]["id"],
            f"{replay.status_code} {replay.headers.get('Idempotent-Replayed')}",
        )
        again = client.post(
            "/api/v1/ingest/comprehensive/",
            files={"file": (customers.path.name, customers.path.read_bytes(), "text/plain")},
        )
        report.check(
            "identical bytes without a key answer 200 with the original upload",
            again.status_code == 200 and again.json().get("id") == sent["customers"]["id"],
            f"{again.status_code} {again.text[:200]}",
        )
        listed = client.get("/api/v1/ingest/uploads/", params={"limit": 100}).json()
        listed_ids = {u["id"] for u in listed["results"]}
        report.check(
            "the upload list holds the four uploads",
            {u["id"] for u in sent.values()} <= listed_ids,
            f"{len(listed_ids)} listed",
        )

        if models is not None:
            after = _table_counts(models, tenant_id)
            for record_type in TABLES:
                f = files[record_type]
                report.equal(
                    f"database: {record_type} gained the valid rows",
                    after[record_type] - before[record_type],
                    f.lines - f.faults,
                )
            held = (
                models.PendingOrder.objects.filter(tenant_id=tenant_id).count()
                + models.PendingOrderItem.objects.filter(tenant_id=tenant_id).count()
            )
            report.equal("database: no rows are still held as pending", held, 0)
    return _finish(report)


def _table_counts(models, tenant_id) -> dict[str, int]:
    """Rows per final table for the tenant (a tenant given by key may hold earlier data)."""
    return {
        record_type: getattr(models, name).objects.filter(tenant_id=tenant_id).count()
        for record_type, name in TABLES.items()
    }


def _finish(report: Report) -> int:
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-url", default=os.environ.get("INGEST_API_URL", "http://localhost:8000")
    )
    parser.add_argument("--api-key", help="a tenant's key (default: create a tenant)")
    parser.add_argument("--orders", type=int, default=60, help="orders in the data set")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for uploads")
    parser.add_argument("--no-db", action="store_true", help="skip the database checks")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
