"""Prometheus metrics at `GET /metrics` (no key: scrape it from inside your network).

Two kinds, so the numbers are right however many gunicorn and Celery processes run:
- HTTP requests are counted in the web process that answers them. With
  `PROMETHEUS_MULTIPROC_DIR` set (the containers set it), prometheus_client keeps every
  process's counts in files there and a scrape adds them up; without it, counts are kept in
  memory and describe the process that answers the scrape.
- Upload and row figures are read from the database at scrape time
  (`apps.ingestions.metrics.UploadCollector`), so every process reports the same truth.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no `*_created` series next to every counter and histogram
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client refuses a missing folder
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests answered, by method and status code.", ["method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_observe(*, method: str, status: int, seconds: float) -> None:
    method = method if method in _METHODS else "other"  # bounded labels, whatever is sent
    HTTP_REQUESTS.labels(method=method, status=str(status)).inc()
    HTTP_DURATION.labels(method=method).observe(seconds)


class _ThisProcess:
    """The default registry (this process's HTTP counters and process figures)."""

    def collect(self):
        return REGISTRY.collect()


# Collectors a feature app adds to every scrape (registered from its AppConfig.ready(), so
# core never imports a feature app).
_SCRAPE_COLLECTORS: list = []


def metrics_collector_register(collector) -> None:
    """Add a collector (an object with `collect()`) to every scrape of /metrics."""
    if collector not in _SCRAPE_COLLECTORS:
        _SCRAPE_COLLECTORS.append(collector)


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in _SCRAPE_COLLECTORS:
        registry.register(collector)
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format (OpenMetrics when the scraper asks for it)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(metrics_registry()), content_type=content_type)
