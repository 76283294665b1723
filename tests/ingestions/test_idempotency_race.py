"""An Idempotency-Key that one request frees (it failed) while others with the same key
look at it: each of them answers as for a key in flight, or claims it again; none fails."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connections
from rest_framework.test import APIClient

from apps.ingestions.models import IdempotencyKey, RecordBatch
from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 24
ROUNDS = 4


def _answers(raw_key: str, body: bytes, key: str) -> Counter:
    """`CLIENTS` threads post `body` with one Idempotency-Key at the same moment, `ROUNDS`
    times; the answers' (status, code)."""
    seen: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def send() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_X_API_KEY=raw_key)
            for _ in range(ROUNDS):
                barrier.wait()
                response = client.generic(
                    "POST",
                    "/api/v1/ingest/records/customers/",
                    body,
                    content_type="application/x-ndjson",
                    headers={"Idempotency-Key": key},
                )
                code = response.json().get("code") if response.status_code >= 400 else None
                with lock:
                    seen[(response.status_code, code)] += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_a_key_freed_by_a_failed_request_never_fails_the_others():
    """Every request with the key fails (an empty batch, 400) and frees it: the others
    that found it taken answer 409 (in flight) or run, and fail, themselves; before, those
    that looked just after it was freed answered 500."""
    _, issued = tenant_create(name="Racer")
    seen = _answers(issued.raw, b"\n", "retry-1")
    assert set(seen) <= {(400, "empty_batch"), (409, "idempotency_in_flight")}, seen
    assert sum(seen.values()) == CLIENTS * ROUNDS
    assert seen[(400, "empty_batch")] >= ROUNDS  # each round, at least one ran
    assert not IdempotencyKey.objects.exists()  # every claim freed


def test_a_key_whose_request_succeeds_runs_once_among_racers():
    """The same key and batch from all at once: one batch, every other answer its replay or
    409 while it runs."""
    _, issued = tenant_create(name="Racer")
    body = b'{"customer_id":"00000000-0000-4000-8000-000000000001","name":"A",' + (
        b'"email":"a@example.com","created_at":"2026-01-01T00:00:00Z"}\n'
    )
    seen = _answers(issued.raw, body, "once-1")
    assert set(seen) <= {(202, None), (409, "idempotency_in_flight")}, seen
    assert RecordBatch.objects.count() == 1
