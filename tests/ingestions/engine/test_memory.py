"""Streaming: memory stays flat whatever the file size (SPEC 4)."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest

from apps.ingestions.engine.testing import customer_row, order_row, product_row, uid
from apps.ingestions.models import OrderItem
from apps.ingestions.services import upload_ingest_path

ROWS = 300_000
MiB = 1024 * 1024

# One order_items line; the note (an unknown field, ignored) pads the file past 60 MB.
_LINE = (
    '{{"order_item_id": "00000000-0000-4000-8000-{:012x}", "order_id": "{}", '
    '"product_id": "{}", "quantity": 3, "unit_price": "12.50", "line_total": "37.50", '
    '"note": "padding padding padding padding"}}\n'
)


def _write_items(path: Path, rows: int) -> None:
    """Stream `rows` order_items lines to `path`, a batch at a time."""
    order_id, product_id = uid("o1"), uid("p1")
    with path.open("w") as out:
        for start in range(0, rows, 10_000):
            out.write(
                "".join(
                    _LINE.format(i, order_id, product_id)
                    for i in range(start, min(rows, start + 10_000))
                )
            )


class _RssPeak:
    """Samples the process's resident set size in a thread and keeps the highest value."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _parents(tenant, ndjson, load) -> None:
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    load(tenant, ndjson("products_1.ndjson", [product_row()]))
    load(tenant, ndjson("orders_1.ndjson", [order_row()]))


@pytest.mark.slow
def test_memory_stays_flat_while_a_large_file_streams_through(tenant, ndjson, load, tmp_path):
    """A 300k-line, 60+ MB order_items file loads completely while the process's resident
    memory grows by a small bounded amount, far less than the file."""
    _parents(tenant, ndjson, load)
    path = tmp_path / "order_items_big.ndjson"
    _write_items(path, ROWS)
    size = path.stat().st_size
    assert size > 60 * MiB

    gc.collect()
    started = time.monotonic()
    with _RssPeak() as rss:
        outcome = upload_ingest_path(tenant=tenant, path=path)
    elapsed = time.monotonic() - started

    upload = outcome.upload
    assert (upload.state, upload.rows_total, upload.rows_inserted) == ("completed", ROWS, ROWS)
    assert OrderItem.objects.filter(tenant=tenant).count() == ROWS
    assert rss.growth < 40 * MiB, f"RSS grew {rss.growth / MiB:.1f} MiB for {size / MiB:.0f} MiB"
    assert elapsed < 30, f"took {elapsed:.1f} s"


def _traced_peak(path: Path, tenant) -> int:
    """Peak Python allocation while `path` goes through the service."""
    gc.collect()
    tracemalloc.start()
    try:
        outcome = upload_ingest_path(tenant=tenant, path=path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.upload.state == "completed"
    return peak


@pytest.mark.slow
def test_peak_allocation_does_not_grow_with_the_file(tenant, ndjson, load, tmp_path, monkeypatch):
    """Ten times the rows cost no more peak Python memory: the peak is set by the read
    chunk, the staging chunk and the line limit, not by the file."""
    # small chunks, so that both files span many of them
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", 2_000)
    _parents(tenant, ndjson, load)
    small, large = tmp_path / "order_items_small.ndjson", tmp_path / "order_items_large.ndjson"
    _write_items(small, 8_000)
    _write_items(large, 80_000)
    small_peak = _traced_peak(small, tenant)
    large_peak = _traced_peak(large, tenant)
    assert large.stat().st_size > 16 * MiB
    assert large_peak < 16 * MiB, f"peak {large_peak / MiB:.1f} MiB"
    assert large_peak < small_peak + 2 * MiB, (small_peak / MiB, large_peak / MiB)
