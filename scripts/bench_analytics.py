"""`make bench`'s analytics phase, on the engine phase's tenant: the copies analytics
reads brought up to date after its loads (timed), then each analytics endpoint timed
through the Django test client (the whole API: key, throttle, parameters, queries, JSON)
over CALLS varied ranges; then the engine's load of the same files for three new tenants:
without the change feed (no ids noted for analytics), with it (and its catching up,
timed), and without it again, so that the tables' growth from one load to the next weighs
on both sides alike (the figure without is the two runs' total), each after a VACUUM and a
CHECKPOINT; and the tables that show both."""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from apps.ingestions.engine import RECORD_ORDER, SWITCH_INTERVAL

CALLS = 50  # per endpoint
ENDPOINTS = ("summary", "daily", "top-products", "customers/top")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")


def _ranges(first, last, rng: random.Random) -> list[dict]:
    """CALLS query strings over the tenant's days: ranges of 1 day to all of them (a
    quarter of them the whole span), as dates in a zone or as timestamps."""
    span = (last - first).days + 1
    out = []
    for n in range(CALLS):
        length = span if n % 4 == 0 else rng.randint(1, span)
        start = first + timedelta(days=rng.randint(0, span - length))
        end = start + timedelta(days=length - 1)
        if n % 5 == 4:
            out.append({"from": f"{start}T06:30:00Z", "to": f"{end}T18:00:00+02:00"})
        else:
            out.append({"from": str(start), "to": str(end), "tz": ZONES[n % len(ZONES)]})
    return out


def _catch_up(tenant) -> dict:
    from apps.analytics.services import analytics_catch_up

    start = time.perf_counter()
    ids = analytics_catch_up(tenant_id=tenant.id)
    return {"ids": ids, "seconds": time.perf_counter() - start}


def _timings(tenant) -> dict:
    from django.db import connection
    from django.test import Client

    from apps.tenants.services import api_key_rotate

    client = Client(HTTP_X_API_KEY=api_key_rotate(tenant=tenant, revoke_existing=False).raw)
    with connection.cursor() as cursor:
        # as autovacuum leaves them soon after they are written: statistics, and the
        # visibility map that lets an index-only scan skip the table
        cursor.execute(
            "VACUUM (ANALYZE) analytics_orders, analytics_lines, analytics_product_ytd, "
            "analytics_product_totals, analytics_customer_totals"
        )
        cursor.execute(
            "SELECT min(order_date)::date, max(order_date)::date FROM analytics_orders "
            "WHERE tenant_id = %s",
            [tenant.id],
        )
        first, last = cursor.fetchone()
    ranges = _ranges(first, last, random.Random(18))
    out = {}
    for name in ENDPOINTS:
        seconds = []
        for params in ranges:
            start = time.perf_counter()
            response = client.get(f"/api/v1/analytics/{name}/", params)
            seconds.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"{name} {params}: {response.status_code} {response.content!r}")
        out[name] = seconds
    return out


def _settle() -> None:
    """Each load starts from the same state (`scripts.stack.settle`): autovacuum of the
    loads before it would otherwise run during this one, on one side only."""
    from django.db import connection

    from scripts.stack import settle

    with connection.cursor() as cursor:
        settle(cursor)


def _load_all(folder: Path, tenant) -> dict:
    from apps.ingestions.services import upload_ingest_path

    out = {}
    for name in RECORD_ORDER:
        start = time.perf_counter()
        upload = upload_ingest_path(tenant=tenant, path=folder / f"{name}_1.ndjson").upload
        out[name] = {"rows": upload.rows_total, "seconds": time.perf_counter() - start}
    return out


def phase_analytics(folder: Path, tenant_id: str) -> dict:
    """The engine phase's tenant caught up, the endpoint timings on it, then the files
    loaded for three new tenants: without the change feed, with it, without it again."""
    import django

    sys.setswitchinterval(SWITCH_INTERVAL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    os.environ["API_RATE_LIMIT"] = "10000000/min"  # the endpoints' speed, not the limit's
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no access log line per call
    django.setup()
    from apps.ingestions.engine import changes_unnoted
    from apps.tenants.models import Tenant
    from apps.tenants.services import tenant_create

    engine_tenant = Tenant.objects.get(id=tenant_id)
    out = {"catch_up": _catch_up(engine_tenant), "timings": _timings(engine_tenant)}
    runs = []
    for with_feed in (False, True, False):
        tenant = tenant_create(name=f"bench {with_feed} {time.time_ns()}")[0]
        _settle()
        if with_feed:
            runs.append(_load_all(folder, tenant))
            out["with_catch_up"] = _catch_up(tenant)
        else:
            with changes_unnoted():
                runs.append(_load_all(folder, tenant))
    out["with"] = runs[1]
    out["without"] = {
        name: {
            "rows": runs[0][name]["rows"] + runs[2][name]["rows"],
            "seconds": runs[0][name]["seconds"] + runs[2][name]["seconds"],
        }
        for name in RECORD_ORDER
    }
    return out


def analytics_tables(eng: dict, analytics: dict) -> list:
    from rich.table import Table

    items = eng["order_items"]["rows"]
    caught = analytics["catch_up"]
    latency = Table(
        title=f"analytics endpoints: {CALLS} calls each, varied ranges, on the "
        f"engine phase's tenant ({items:,} order items)",
        caption=f"its copies brought up to date first, after its loads: {caught['ids']:,} ids "
        f"in {caught['seconds']:.1f} s",
    )
    for col in ("endpoint", "p50 ms", "p95 ms", "max ms"):
        latency.add_column(col, justify="right")
    for name, seconds in analytics["timings"].items():
        ms = sorted(s * 1000 for s in seconds)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        latency.add_row(name, f"{statistics.median(ms):.0f}", f"{p95:.0f}", f"{ms[-1]:.0f}")
    load = Table(
        title="the engine without and with the change feed analytics reads (three new "
        "tenants, same files: without, with, without again)"
    )
    for col in ("type", "rows", "without rows/s", "with rows/s", "with / without"):
        load.add_column(col, justify="right")
    totals = {"rows": 0, "without": 0.0, "with": 0.0}
    for name in RECORD_ORDER:
        rows = analytics["with"][name]["rows"]
        plain = analytics["without"][name]["rows"] / analytics["without"][name]["seconds"]
        indexed = rows / analytics["with"][name]["seconds"]
        totals["rows"] += rows
        totals["without"] += analytics["without"][name]["seconds"] / 2  # two runs
        totals["with"] += analytics["with"][name]["seconds"]
        load.add_row(
            name, f"{rows:,}", f"{plain:,.0f}", f"{indexed:,.0f}", f"{indexed / plain:.1%}"
        )
    plain, indexed = totals["rows"] / totals["without"], totals["rows"] / totals["with"]
    load.add_row(
        "overall",
        f"{totals['rows']:,}",
        f"{plain:,.0f}",
        f"{indexed:,.0f}",
        f"{indexed / plain:.1%}",
    )
    caught = analytics["with_catch_up"]
    load.caption = (
        f"catching up after the loads with it, outside them (a worker's refresh): "
        f"{caught['ids']:,} ids in {caught['seconds']:.1f} s"
    )
    return [latency, load]
