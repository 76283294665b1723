"""Upload and row metrics, read from the database when Prometheus scrapes `/metrics`.

Counting in the processes that do the work would give each gunicorn or Celery process its
own partial numbers; the `uploads` table already holds the truth for all of them, so the
collector asks it (a few aggregate queries over one row per uploaded file).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from apps.ingestions.models import RecordType, Upload, UploadState

logger = logging.getLogger(__name__)

OUTCOMES = ("inserted", "updated", "unchanged", "rejected", "duplicates")
RATE_WINDOW_SECONDS = 60
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_WAITING_STATES = (UploadState.QUEUED, UploadState.WAITING)


class UploadCollector:
    """A prometheus_client collector: every figure is computed at scrape time."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ingest_database_up", "1 when the upload figures could be read from the database."
        )
        try:
            families = [
                *_uploads_by_state(),
                *_rows_by_outcome(),
                _rows_per_second(),
                *_durations(),
            ]
        except DatabaseError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _uploads_by_state() -> list[Metric]:
    counts = {
        (row["record_type"], row["state"]): row["n"]
        for row in Upload.objects.values("record_type", "state").annotate(n=Count("id")).order_by()
    }
    uploads = GaugeMetricFamily(
        "ingest_uploads", "Uploads by record type and state.", labels=["type", "state"]
    )
    for record_type in RecordType.values:
        for state in UploadState.values:
            uploads.add_metric([record_type, state], counts.get((record_type, state), 0))
    depth = GaugeMetricFamily(
        "ingest_queue_depth",
        "Uploads waiting for a worker: queued, or waiting for a tenant's earlier uploads.",
        labels=["state"],
    )
    for state in _WAITING_STATES:
        depth.add_metric([state], sum(n for (_, s), n in counts.items() if s == state))
    return [uploads, depth]


def _rows_by_outcome() -> list[Metric]:
    rows = CounterMetricFamily(
        "ingest_rows",
        "Rows by tenant, record type and outcome (inserted, updated, unchanged, rejected, "
        "duplicates), summed over the uploads' counts.",
        labels=["tenant_id", "type", "outcome"],
    )
    pending = GaugeMetricFamily(
        "ingest_rows_pending",
        "Rows held until their parent record arrives, by tenant and record type.",
        labels=["tenant_id", "type"],
    )
    sums = {outcome: Sum(f"rows_{outcome}") for outcome in (*OUTCOMES, "pending")}
    for row in (
        Upload.objects.values("tenant_id", "record_type")
        .annotate(**sums)
        .order_by("tenant_id", "record_type")
    ):
        labels = [str(row["tenant_id"]), row["record_type"]]
        for outcome in OUTCOMES:
            rows.add_metric([*labels, outcome], row[outcome] or 0)
        pending.add_metric(labels, row["pending"] or 0)
    return [rows, pending]


def _rows_per_second() -> Metric:
    """Rows processed per second over the last minute: each upload that ran in that minute
    counts its rows in proportion to the part of its run inside the window."""
    now = timezone.now()
    since = now - timedelta(seconds=RATE_WINDOW_SECONDS)
    rows = 0.0
    for started, finished, done in (
        Upload.objects.filter(started_at__isnull=False)
        .filter(Q(state=UploadState.PROCESSING) | Q(finished_at__gte=since))
        .values_list("started_at", "finished_at", "rows_done")
    ):
        end = min(finished or now, now)
        run = (end - started).total_seconds()
        inside = (end - max(started, since)).total_seconds()
        if inside <= 0:
            continue
        rows += done * (inside / run if run > 0 else 1.0)
    rate = GaugeMetricFamily(
        "ingest_rows_per_second",
        f"Rows processed per second over the last {RATE_WINDOW_SECONDS} s, all uploads.",
    )
    rate.add_metric([], rows / RATE_WINDOW_SECONDS)
    return rate


def _durations() -> list[Metric]:
    """Histograms of finished uploads: processing time (started to finished) and latency
    (received to finished, queueing and waiting included), by record type."""
    families = []
    for name, start, help_text in (
        (
            "ingest_upload_processing_seconds",
            "started_at",
            "Time a worker spent on each finished upload, by record type.",
        ),
        (
            "ingest_upload_latency_seconds",
            "created_at",
            "Time from receiving each finished upload to its end, by record type.",
        ),
    ):
        seconds = ExpressionWrapper(F("finished_at") - F(start), output_field=DurationField())
        buckets = {
            f"le_{i}": Count("id", filter=Q(seconds__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        family = HistogramMetricFamily(name, help_text, labels=["type"])
        for row in (
            Upload.objects.filter(finished_at__isnull=False, **{f"{start}__isnull": False})
            .annotate(seconds=seconds)
            .values("record_type")
            .annotate(n=Count("id"), total=Sum("seconds"), **buckets)
            .order_by("record_type")
        ):
            cumulative = [
                (floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)
            ] + [("+Inf", row["n"])]
            total = row["total"].total_seconds() if row["total"] else 0.0
            family.add_metric([row["record_type"]], cumulative, total)
        families.append(family)
    return families
