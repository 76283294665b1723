"""`make bench`'s rules phase: the order items file loaded for a tenant without rules and
for one with a rule set of ten keywords (`BENCH_RULES`), in one process, each after its
parents; and the table that shows both next to the engine phase's figure."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from apps.ingestions.engine import RECORD_ORDER, SWITCH_INTERVAL

# Ten keywords over order items: a pattern, an enum (of the field names), minimums and
# maximums, a type, a length, the required fields.
BENCH_RULES = {
    "required": ["order_item_id", "order_id", "product_id", "quantity", "unit_price"],
    "propertyNames": {
        "enum": ["order_item_id", "order_id", "product_id", "quantity", "unit_price", "line_total"]
    },
    "properties": {
        "order_item_id": {"pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-"},
        "product_id": {"minLength": 36},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
        "unit_price": {"exclusiveMinimum": 0, "maximum": 100000},
        "line_total": {"minimum": 0},
    },
}


# Each run loads into tables the runs before it grew, so neither side always goes first:
# without, with, with, without; each side's faster run is reported.
RUNS = ("without", "with", "with", "without")


def phase_rules(folder: Path) -> dict:
    """The order items file for a tenant without rules and one with `BENCH_RULES` (each
    after its parents), twice each in `RUNS` order: seconds and counts of each side's
    faster run."""
    import django

    sys.setswitchinterval(SWITCH_INTERVAL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
    django.setup()
    from apps.ingestions.services import rules_put, upload_ingest_path
    from apps.tenants.services import tenant_create

    out: dict[str, dict] = {}
    for label in RUNS:
        rules = BENCH_RULES if label == "with" else None
        tenant = tenant_create(name=f"bench rules {label} {time.time_ns()}")[0]
        for name in RECORD_ORDER[:-1]:
            upload_ingest_path(tenant=tenant, path=folder / f"{name}_1.ndjson")
        if rules is not None:
            rules_put(
                tenant=tenant,
                record_type="order_items",
                schema=rules,
                action="reject",
                unknown_fields="ignore",
            )
        start = time.perf_counter()
        upload = upload_ingest_path(tenant=tenant, path=folder / "order_items_1.ndjson").upload
        seconds = time.perf_counter() - start
        if label in out and out[label]["seconds"] <= seconds:
            continue
        out[label] = {
            "rows": upload.rows_total,
            "seconds": seconds,
            "inserted": upload.rows_inserted,
            "rejected": upload.rows_rejected,
            "rules_version": upload.rules_version,
        }
    return out


def rules_table(eng: dict, rules: dict):
    from rich.table import Table

    table = Table(
        title="order items: the engine phase, and again without and with 10 rules "
        "(each the faster of two runs)"
    )
    for col in ("run", "rows", "rows/s", "vs without rules", "rejected"):
        table.add_column(col, justify="right")
    base = rules["without"]["rows"] / rules["without"]["seconds"]
    items = eng["order_items"]
    runs = [("engine phase (no rules)", items), *((f"{k} rules", v) for k, v in rules.items())]
    for label, run in runs:
        rate = run["rows"] / run["seconds"]
        table.add_row(
            label, f"{run['rows']:,}", f"{rate:,.0f}", f"{rate / base:.1%}", f"{run['rejected']:,}"
        )
    return table
