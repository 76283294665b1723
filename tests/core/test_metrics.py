"""Prometheus metrics at /metrics: upload and row figures read from the database after real
uploads through the API and a worker, and HTTP requests counted by method and status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, product_row, uid
from apps.ingestions.metrics import DURATION_BUCKETS
from apps.ingestions.models import Upload
from apps.tenants.services import tenant_create
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client) -> dict[tuple, float]:
    """GET /metrics without a key; samples by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def labels(**values) -> tuple:
    return tuple(sorted(values.items()))


def _upload(client, key: str, filename: str, rows: list) -> str:
    client.credentials(HTTP_X_API_KEY=key)
    file = SimpleUploadedFile(filename, ndjson_bytes(rows))
    response = client.post("/api/v1/ingest/comprehensive/", {"file": file}, format="multipart")
    assert response.status_code == 202, response.content
    upload_id = response.json()["id"]
    wait_for(lambda: Upload.objects.get(id=upload_id).is_terminal)
    return upload_id


def test_rows_by_outcome_and_uploads_by_state_after_real_uploads(celery_worker):
    """Two tenants' uploads of known rows: each tenant's rows by type and outcome are
    exactly theirs, uploads are counted by type and state, and the processing and latency
    histograms count every finished upload."""
    from rest_framework.test import APIClient

    client = APIClient()
    acme, acme_key = tenant_create(name="metrics-a")
    globex, globex_key = tenant_create(name="metrics-b")
    customers = [customer_row(customer_id=uid(f"mc{n}")) for n in range(3)]
    _upload(client, acme_key.raw, "customers_1.ndjson", [*customers, {"customer_id": "x"}])
    _upload(client, acme_key.raw, "customers_2.ndjson", [customers[0], customers[0]])
    _upload(client, acme_key.raw, "products_1.ndjson", [product_row(product_id=uid("mp1"))])
    _upload(client, globex_key.raw, "customers_1.ndjson", customers)

    client.credentials()  # no key: /metrics is open
    metrics = scrape(client)
    rows = {
        (tenant, record_type): {
            outcome: metrics[
                (
                    "ingest_rows_total",
                    labels(
                        tenant_id=str(tenant.id), type=record_type, source="file", outcome=outcome
                    ),
                )
            ]
            for outcome in ("inserted", "updated", "unchanged", "rejected", "duplicates")
        }
        for tenant, record_type in (
            (acme, "customers"),
            (acme, "products"),
            (globex, "customers"),
        )
    }
    assert rows[acme, "customers"] == {
        "inserted": 3,
        "updated": 0,
        "unchanged": 1,
        "rejected": 1,
        "duplicates": 1,
    }
    assert rows[acme, "products"] == {
        "inserted": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "duplicates": 0,
    }
    assert rows[globex, "customers"]["inserted"] == 3
    pending = labels(tenant_id=str(acme.id), type="products", source="file")
    assert metrics[("ingest_rows_pending", pending)] == 0

    for record_type in ("customers", "products", "orders", "order_items"):
        for state in ("queued", "completed", "completed_with_errors", "failed"):
            files = Upload.objects.filter(source="file", record_type=record_type)
            expected = files.filter(state=state).count()
            assert metrics[("ingest_uploads", labels(type=record_type, state=state))] == expected
    assert metrics[("ingest_uploads", labels(type="customers", state="completed"))] >= 2
    assert metrics[("ingest_uploads", labels(type="customers", state="completed_with_errors"))] >= 1

    for name in ("ingest_upload_processing_seconds", "ingest_upload_latency_seconds"):
        finished = Upload.objects.filter(
            source="file", record_type="customers", finished_at__isnull=False
        )
        count = metrics[(f"{name}_count", labels(type="customers"))]
        assert count == finished.count() >= 3
        assert metrics[(f"{name}_bucket", labels(type="customers", le="+Inf"))] == count
        cumulative = [
            metrics[(f"{name}_bucket", labels(type="customers", le=str(float(b))))]
            for b in DURATION_BUCKETS
        ]
        assert cumulative == sorted(cumulative)
        assert metrics[(f"{name}_sum", labels(type="customers"))] > 0
    assert metrics[("ingest_database_up", ())] == 1


def test_queue_depth_and_recent_rows_per_second_come_from_the_uploads_table(tenant, client):
    """Queued and waiting uploads are the queue depth; rows of uploads that ran inside the
    last minute, in proportion to their time inside it, make the rows per second."""
    now = timezone.now()

    def upload(n: int, state: str, **fields) -> Upload:
        return Upload.objects.create(
            tenant=tenant,
            record_type="customers",
            filename=f"customers_{n}.ndjson",
            sha256=f"{n:064d}",
            state=state,
            **fields,
        )

    for n in range(3):
        upload(n, "queued")
    upload(3, "waiting")
    # 600 rows, all inside the window; 1,200 rows of which half ran inside it; old ones.
    done = {"rows_done": 600, "rows_total": 600}
    upload(4, "completed", started_at=now - timedelta(seconds=30), finished_at=now, **done)
    upload(
        5,
        "completed",
        started_at=now - timedelta(seconds=90),
        finished_at=now - timedelta(seconds=30),
        rows_done=1200,
    )
    upload(
        6,
        "completed",
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=1),
        rows_done=10**6,
    )
    metrics = scrape(client)
    late = (timezone.now() - now).total_seconds()
    assert metrics[("ingest_queue_depth", labels(state="queued"))] == 3
    assert metrics[("ingest_queue_depth", labels(state="waiting"))] == 1
    # 600 + 1200 / 2 rows in 60 s, had the scrape run at `now`; it ran up to `late` s later,
    # when the window had moved on and upload 5's share was that much smaller
    rate = metrics[("ingest_rows_per_second", ())]
    assert (600 + 1200 * (30 - late) / 60) / 60 - 1e-6 <= rate <= (600 + 600) / 60 + 1e-6


def test_http_requests_are_counted_by_method_and_status(client, tenant):
    """Each answered request adds one to its method and status, whatever the view."""
    before = scrape(client)
    for _ in range(3):
        assert client.get("/no-such-page").status_code == 404
    assert client.post("/healthz").status_code == 405
    assert client.get("/api/v1/ingest/uploads/").status_code == 401
    after = scrape(client)

    def delta(method: str, status: str) -> float:
        key = ("http_requests_total", labels(method=method, status=status))
        return after.get(key, 0) - before.get(key, 0)

    assert (delta("GET", "404"), delta("POST", "405"), delta("GET", "401")) == (3, 1, 1)
    assert delta("GET", "200") == 1  # the first scrape itself
    count = ("http_request_duration_seconds_count", labels(method="GET"))
    assert after[count] - before[count] == 5
