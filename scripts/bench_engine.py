"""`make bench`'s first two phases, each run in a child process of its own: the raw COPY of
the bench's files into unconstrained tables, the floor any loader of these files pays, and
the engine loading the same files; and the table that sets them side by side."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from apps.ingestions.engine import RECORD_ORDER, RECORDS, SWITCH_INTERVAL
from scripts.bench_cpu import phase_cpu, phase_cpu_line


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_raw(folder: Path) -> dict:
    from decimal import Decimal

    import msgspec
    import psycopg

    decode = msgspec.json.Decoder(float_hook=Decimal).decode
    encode = msgspec.json.Encoder(decimal_format="number").encode
    out = {}
    with (
        psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn,
        phase_cpu() as cpu,
    ):
        for name in RECORD_ORDER:
            spec = RECORDS[name]
            cols = ", ".join(f"{f.name} {f.sql_type}" for f in spec.fields)
            conn.execute(f"DROP TABLE IF EXISTS raw_{name}")
            conn.execute(f"CREATE TABLE raw_{name} (tenant_id uuid, {cols})")
            objects = [f.name for f in spec.fields if f.sql_type == "jsonb"]
            names = spec.columns
            rows = 0
            start = time.perf_counter()
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY raw_{name} FROM STDIN") as copy,
                (folder / f"{name}_1.ndjson").open("rb") as fh,
            ):
                for line in fh:
                    obj = decode(line)
                    for key in objects:
                        if obj.get(key) is not None:
                            obj[key] = encode(obj[key]).decode()
                    copy.write_row((None, *[obj.get(n) for n in names]))
                    rows += 1
            out[name] = {"rows": rows, "seconds": time.perf_counter() - start}
    out["_cpu"] = cpu
    return out


def phase_engine(folder: Path, tenant_id: str) -> dict:
    import django

    # as a worker process starts (main/celery.py): the merge thread's GIL handovers stay short
    sys.setswitchinterval(SWITCH_INTERVAL)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    django.setup()
    from apps.ingestions.services import upload_ingest_path
    from apps.tenants.models import Tenant

    tenant = Tenant.objects.get(id=tenant_id)
    out = {}
    with phase_cpu() as cpu:
        for name in RECORD_ORDER:
            start = time.perf_counter()
            upload = upload_ingest_path(tenant=tenant, path=folder / f"{name}_1.ndjson").upload
            seconds = time.perf_counter() - start
            out[name] = {
                "rows": upload.rows_total,
                "seconds": seconds,
                "state": upload.state,
                "inserted": upload.rows_inserted,
                "pending": upload.rows_pending,
                "rejected": upload.rows_rejected,
            }
    out["_peak_rss_mb"] = _peak_rss_mb()
    out["_cpu"] = cpu
    return out


def engine_report(console, raw: dict, eng: dict, e2e: dict | None) -> None:
    from rich.table import Table

    table = Table(title="engine vs raw COPY (same rows, same run)")
    for col in ("type", "rows", "raw COPY rows/s", "engine rows/s", "ratio", "engine state"):
        table.add_column(col, justify="right")
    totals = {"rows": 0, "raw": 0.0, "eng": 0.0}
    for name in RECORD_ORDER:
        rows = eng[name]["rows"]
        raw_rate = raw[name]["rows"] / raw[name]["seconds"]
        eng_rate = rows / eng[name]["seconds"]
        totals["rows"] += rows
        totals["raw"] += raw[name]["seconds"]
        totals["eng"] += eng[name]["seconds"]
        table.add_row(
            name,
            f"{rows:,}",
            f"{raw_rate:,.0f}",
            f"{eng_rate:,.0f}",
            f"{eng_rate / raw_rate:.1%}",
            eng[name]["state"],
        )
    raw_all = totals["rows"] / totals["raw"]
    eng_all = totals["rows"] / totals["eng"]
    table.add_row(
        "overall",
        f"{totals['rows']:,}",
        f"{raw_all:,.0f}",
        f"{eng_all:,.0f}",
        f"{eng_all / raw_all:.1%}",
        "",
    )
    console.print(table)
    console.print(f"engine process peak memory (max RSS): {eng['_peak_rss_mb']:.0f} MB")
    if e2e is not None:
        rate = totals["rows"] / e2e["seconds"]
        console.print(
            f"end to end (first upload request to last upload completed, API + worker): "
            f"{e2e['seconds']:.1f} s, {rate:,.0f} rows/s, {rate / raw_all:.1%} of raw COPY; "
            f"states {e2e['states']}"
        )
    console.print(f"engine total {totals['eng']:.1f} s, raw COPY total {totals['raw']:.1f} s")
    for name, phase in (("raw COPY", raw), ("engine", eng)):
        line = phase_cpu_line(name, phase.get("_cpu"))
        if line is not None:
            console.print(line)
