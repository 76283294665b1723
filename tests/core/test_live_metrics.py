"""Live-record metrics at /metrics, read from the database after batches accepted through
the API and merged as the worker merges them: records accepted, rejected and merged, the
backlog, the merge lag and the recent merges' waits; a batch's parts are never counted as
uploads, and their rows are told from files' by `source`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, product_row, uid
from apps.ingestions.metrics import MERGE_BUCKETS
from apps.ingestions.models import RecordBatch
from apps.ingestions.services import records_merge
from apps.tenants.services import tenant_create
from tests.core.test_metrics import labels, scrape

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"
WAITS = "ingest_live_merge_seconds"


def _accept(api, key: str, path: str, rows: list) -> RecordBatch:
    response = api.as_tenant(key).generic(
        "POST", f"/api/v1/ingest/records/{path}", ndjson_bytes(rows), content_type=NDJSON
    )
    assert response.status_code == 202, response.content
    return RecordBatch.objects.get(id=response.json()["id"])


def _live(metrics: dict, name: str, tenant, record_type: str) -> float:
    return metrics[(f"ingest_live_records_{name}_total", _of(tenant, type=record_type))]


def _of(tenant, **more) -> tuple:
    return labels(tenant_id=str(tenant.id), **more)


def _waits(metrics: dict, record_type: str) -> dict[str, float]:
    """The merge-wait gauge histogram of one type: cumulative buckets, count and sum."""
    shown = {
        le: metrics[(f"{WAITS}_bucket", labels(type=record_type, le=le))]
        for le in [str(float(b)) for b in MERGE_BUCKETS] + ["+Inf"]
    }
    shown["count"] = metrics[(f"{WAITS}_gcount", labels(type=record_type))]
    shown["sum"] = metrics[(f"{WAITS}_gsum", labels(type=record_type))]
    return shown


def _expected_waits(*batches: RecordBatch) -> dict[str, float]:
    waits = []
    for batch in batches:
        batch.refresh_from_db()
        waits.append((batch.merged_at - batch.created_at).total_seconds())
    expected = {str(float(b)): sum(w <= b for w in waits) for b in MERGE_BUCKETS}
    return {**expected, "+Inf": len(waits), "count": len(waits), "sum": pytest.approx(sum(waits))}


def test_live_records_are_counted_with_their_backlog_and_merge_lag(client, api, load, ndjson):
    """Accepted, rejected and merged records by tenant and batch type; the backlog by tenant
    and the oldest unmerged batch's age until it merges; the parts' rows under
    `source="live"`, never as uploads; the waits of the batches merged."""
    (acme, acme_issued), (globex, globex_issued) = (
        tenant_create(name=f"live-metrics-{name}") for name in "ab"
    )
    acme_key, globex_key = acme_issued.raw, globex_issued.raw
    load(
        acme, ndjson("customers_1.ndjson", [customer_row(customer_id=uid(f"f{n}")) for n in (1, 2)])
    )
    good = [customer_row(customer_id=uid(f"lc{n}")) for n in range(3)]
    customers = _accept(api, acme_key, "customers/", [*good, customer_row(email="nope")])
    mixed = _accept(
        api,
        acme_key,
        "",
        [
            {"type": "customers", "record": customer_row(customer_id=uid("lm1"))},
            {"type": "products", "record": product_row(product_id=uid("lp1"))},
            {"type": "invoices", "record": {}},
        ],
    )
    rejected = _accept(api, acme_key, "customers/", [customer_row(email="bad")])
    assert (rejected.state, rejected.merged_at) == ("merged", None)  # nothing to merge
    elsewhere = _accept(api, globex_key, "customers/", [customer_row(customer_id=uid("g1"))] * 2)
    # the lag needs an old batch: as if acme's first batch had waited 2 min for its merge
    old = timezone.now() - timedelta(seconds=120)
    RecordBatch.objects.filter(id=customers.id).update(created_at=old)

    metrics = scrape(client)
    counts = {
        (tenant.name, record_type): tuple(
            _live(metrics, name, tenant, record_type) for name in ("accepted", "rejected", "merged")
        )
        for tenant, record_type in ((acme, "customers"), (acme, "mixed"), (globex, "customers"))
    }
    assert counts == {
        ("live-metrics-a", "customers"): (3, 2, 0),
        ("live-metrics-a", "mixed"): (2, 1, 0),
        ("live-metrics-b", "customers"): (2, 0, 0),
    }
    assert metrics[("ingest_live_backlog_records", _of(acme))] == 5
    assert metrics[("ingest_live_backlog_records", _of(globex))] == 2
    assert 120 <= metrics[("ingest_live_merge_lag_seconds", ())] < 130
    assert not [key for key in metrics if key[0].startswith(WAITS)]  # nothing merged yet
    # three parts wait in `received`: not uploads
    assert metrics[("ingest_uploads", labels(type="customers", state="received"))] == 0

    assert records_merge(tenant_id=acme.id) == 2
    metrics = scrape(client)
    assert (
        _live(metrics, "merged", acme, "customers"),
        _live(metrics, "merged", acme, "mixed"),
    ) == (
        3,
        2,
    )
    assert _live(metrics, "merged", globex, "customers") == 0
    assert metrics[("ingest_live_backlog_records", _of(acme))] == 0
    assert metrics[("ingest_live_backlog_records", _of(globex))] == 2
    assert 0 < metrics[("ingest_live_merge_lag_seconds", ())] < 10  # globex's batch, just sent
    inserted = {
        (record_type, source): metrics[
            ("ingest_rows_total", _of(acme, type=record_type, source=source, outcome="inserted"))
        ]
        for record_type, source in (
            ("customers", "file"),
            ("customers", "live"),
            ("products", "live"),
        )
    }
    assert inserted == {("customers", "file"): 2, ("customers", "live"): 4, ("products", "live"): 1}
    assert (
        "ingest_rows_total",
        _of(acme, type="products", source="file", outcome="inserted"),
    ) not in (metrics)
    assert metrics[("ingest_uploads", labels(type="customers", state="completed"))] == 1
    assert metrics[("ingest_uploads", labels(type="products", state="completed"))] == 0
    assert metrics[("ingest_upload_latency_seconds_count", labels(type="customers"))] == 1
    assert ("ingest_upload_latency_seconds_count", labels(type="products")) not in metrics
    waits = _waits(metrics, "customers")
    assert (waits["60.0"], waits["300.0"]) == (0, 1)  # its 2 min wait
    assert waits == _expected_waits(customers)
    assert _waits(metrics, "mixed") == _expected_waits(mixed)

    records_merge(tenant_id=globex.id)
    metrics = scrape(client)
    assert metrics[("ingest_live_merge_lag_seconds", ())] == 0
    assert metrics[("ingest_live_backlog_records", _of(globex))] == 0
    assert _live(metrics, "merged", globex, "customers") == 2
    assert _waits(metrics, "customers") == _expected_waits(customers, elsewhere)


def test_with_no_batch_the_lag_is_zero_and_no_live_series_is_shown(client, tenant):
    """No batch: a merge lag of 0, and no live counters or waits."""
    metrics = scrape(client)
    assert metrics[("ingest_live_merge_lag_seconds", ())] == 0
    assert not [key for key in metrics if key[0].startswith(("ingest_live_records", WAITS))]


def test_merge_waits_count_only_the_batches_merged_lately(client, api):
    """A batch merged longer than the window ago has left the waits; the counters keep it."""
    tenant, issued = tenant_create(name="live-metrics-window")
    earlier = _accept(api, issued.raw, "customers/", [customer_row(customer_id=uid("w1"))])
    records_merge(tenant_id=tenant.id)
    # out of the window: as if it had been accepted and merged 10 min ago
    moved = timedelta(minutes=10)
    RecordBatch.objects.filter(id=earlier.id).update(
        created_at=earlier.created_at - moved,
        merged_at=RecordBatch.objects.get(id=earlier.id).merged_at - moved,
    )
    later = _accept(api, issued.raw, "customers/", [customer_row(customer_id=uid("w2"))])
    records_merge(tenant_id=tenant.id)
    metrics = scrape(client)
    assert _live(metrics, "merged", tenant, "customers") == 2
    assert _waits(metrics, "customers") == _expected_waits(later)
