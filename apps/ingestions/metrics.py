"""Upload, row and live-record metrics, read from the database when Prometheus scrapes
`/metrics`.

Counting in the processes that do the work would give each gunicorn or Celery process its
own partial numbers; the `uploads` and `record_batches` tables already hold the truth for
all of them, so the collector asks them (a few aggregate queries over one row per uploaded
file or live batch; the live counters read every batch, the rest only recent or unmerged
ones through indexes). Upload figures are of files; a live batch's parts (uploads with
`source` live) show in the live-record figures, and their rows in `ingest_rows_total` with
`source="live"`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from apps.ingestions.models import (
    BatchState,
    RecordBatch,
    RecordType,
    Upload,
    UploadSource,
    UploadState,
)
from apps.ingestions.selectors import session_receiving_ids

logger = logging.getLogger(__name__)

OUTCOMES = ("inserted", "updated", "unchanged", "rejected", "duplicates")
RATE_WINDOW_SECONDS = 60
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
MERGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)  # the goal: 1 s (p99)
MERGE_WINDOW_SECONDS = 300
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
                *_live_records(),
            ]
        except DatabaseError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _files():
    return Upload.objects.filter(source=UploadSource.FILE)


def _uploads_by_state() -> list[Metric]:
    counts: dict[tuple[str, str], int] = {}
    put_back = 0  # queued, but waiting for their client: their seal sends them to a worker
    for row in (
        _files()
        .exclude(id__in=session_receiving_ids())  # shown once their sessions complete
        .values("record_type", "state", "waits_for_bytes")
        .annotate(n=Count("id"))
        .order_by()
    ):
        key = (row["record_type"], row["state"])
        counts[key] = counts.get(key, 0) + row["n"]
        if row["waits_for_bytes"] and row["state"] == UploadState.QUEUED:
            put_back += row["n"]
    uploads = GaugeMetricFamily(
        "ingest_uploads", "Uploads by record type and state.", labels=["type", "state"]
    )
    for record_type in RecordType.values:
        for state in UploadState.values:
            uploads.add_metric([record_type, state], counts.get((record_type, state), 0))
    depth = GaugeMetricFamily(
        "ingest_queue_depth",
        "Uploads waiting for a worker: queued (less those put back until their bytes are "
        "in), or waiting for a tenant's earlier uploads.",
        labels=["state"],
    )
    for state in _WAITING_STATES:
        waiting = sum(n for (_, s), n in counts.items() if s == state)
        depth.add_metric([state], waiting - put_back if state == UploadState.QUEUED else waiting)
    return [uploads, depth]


def _rows_by_outcome() -> list[Metric]:
    rows = CounterMetricFamily(
        "ingest_rows",
        "Rows by tenant, record type, source (file, live) and outcome (inserted, updated, "
        "unchanged, rejected, duplicates), summed over the uploads' and live batches' counts "
        "(live records rejected at acceptance: ingest_live_records_rejected_total); dry runs, "
        "which load nothing, are left out.",
        labels=["tenant_id", "type", "source", "outcome"],
    )
    pending = GaugeMetricFamily(
        "ingest_rows_pending",
        "Rows held until their parent record arrives, by tenant, record type and source.",
        labels=["tenant_id", "type", "source"],
    )
    sums = {outcome: Sum(f"rows_{outcome}") for outcome in (*OUTCOMES, "pending")}
    for row in (
        Upload.objects.filter(dry_run=False)
        .values("tenant_id", "record_type", "source")
        .annotate(**sums)
        .order_by("tenant_id", "record_type", "source")
    ):
        labels = [str(row["tenant_id"]), row["record_type"], row["source"]]
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
        _files()
        .filter(started_at__isnull=False)
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
        f"Rows processed per second over the last {RATE_WINDOW_SECONDS} s, all file uploads.",
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
            _files()
            .filter(finished_at__isnull=False, **{f"{start}__isnull": False})
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


def _live_records() -> list[Metric]:
    """Live records: accepted, rejected (at acceptance) and merged records by tenant and
    batch type, the backlog not merged yet by tenant, the age of the oldest unmerged batch,
    and how long the batches merged lately waited for their merge."""
    counters = {
        name: CounterMetricFamily(
            f"ingest_live_records_{name}", help_text, labels=["tenant_id", "type"]
        )
        for name, help_text in (
            ("accepted", "Live records accepted (stored to be merged), by tenant and batch type."),
            ("rejected", "Live records rejected at acceptance, by tenant and batch type."),
            ("merged", "Live records merged into the final tables, by tenant and batch type."),
        )
    }
    backlog = GaugeMetricFamily(
        "ingest_live_backlog_records",
        "Live records accepted and not merged yet, by tenant (over the limit: 429).",
        labels=["tenant_id"],
    )
    waiting: dict[str, int] = {}
    oldest = None
    for row in _batch_totals():
        tenant_id = str(row["tenant_id"])
        for name, family in counters.items():
            family.add_metric([tenant_id, row["record_type"]], row[f"records_{name}"])
        unmerged = row["records_accepted"] - row["records_merged"]
        waiting[tenant_id] = waiting.get(tenant_id, 0) + unmerged
        if row["oldest"] is not None and (oldest is None or row["oldest"] < oldest):
            oldest = row["oldest"]
    for tenant_id, records in waiting.items():
        backlog.add_metric([tenant_id], records)
    lag = GaugeMetricFamily(
        "ingest_live_merge_lag_seconds",
        "Age of the oldest live batch not merged yet (0 when none waits).",
    )
    lag.add_metric([], max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0)
    return [*counters.values(), backlog, lag, _merge_waits()]


def _batch_totals():
    """The batches' records by tenant and batch type, accepted, rejected and merged, and the
    oldest unmerged batch's time: sums only, as this reads every batch."""
    return (
        RecordBatch.objects.values("tenant_id", "record_type")
        .annotate(  # names of their own: a field's name is not an aggregate's
            records_accepted=Sum("accepted"),
            records_rejected=Sum("rejected"),
            records_merged=Sum("accepted", filter=Q(state=BatchState.MERGED), default=0),
            oldest=Min("created_at", filter=Q(state=BatchState.ACCEPTED)),
        )
        .order_by("tenant_id", "record_type")
    )


def _merge_waits() -> Metric:
    """Accepted-to-merged seconds of the batches merged in the last `MERGE_WINDOW_SECONDS`
    (found by the `merged_at` index), by batch type: a gauge histogram, as batches leave the
    window (its buckets fall as well as rise; take quantiles of the buckets, not of a rate)."""
    family = GaugeHistogramMetricFamily(
        "ingest_live_merge_seconds",
        f"Time from accepting to merging each live batch merged in the last "
        f"{MERGE_WINDOW_SECONDS} s, by batch type.",
        labels=["type"],
    )
    seconds = ExpressionWrapper(F("merged_at") - F("created_at"), output_field=DurationField())
    buckets = {
        f"le_{i}": Count("id", filter=Q(seconds__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(MERGE_BUCKETS)
    }
    since = timezone.now() - timedelta(seconds=MERGE_WINDOW_SECONDS)
    for row in (
        RecordBatch.objects.filter(merged_at__gte=since)
        .annotate(seconds=seconds)
        .values("record_type")
        .annotate(n=Count("id"), total=Sum("seconds"), **buckets)
        .order_by("record_type")
    ):
        cumulative = [
            (floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(MERGE_BUCKETS)
        ] + [("+Inf", row["n"])]
        family.add_metric([row["record_type"]], cumulative, row["total"].total_seconds())
    return family
