"""An Idempotency-Key in flight is one whose request still runs: a key freed by a failed
request while others with the same key look at it is claimed again or answered 409, never
a 500; a key whose request's connection is gone (its process died) is taken over at once;
a key whose request still runs stays in flight however long it takes."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest
from django.db import connections
from rest_framework.test import APIClient

from apps.core.idempotency import IN_FLIGHT_LOCK
from apps.core.models import IdempotencyKey
from apps.ingestions.models import RecordBatch
from apps.tenants.services import tenant_create
from tests.factories import database_url_of_tests

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


def _customers(client, key: str):
    body = b'{"customer_id":"00000000-0000-4000-8000-000000000002","name":"B",' + (
        b'"email":"b@example.com","created_at":"2026-01-01T00:00:00Z"}\n'
    )
    return client.generic(
        "POST",
        "/api/v1/ingest/records/customers/",
        body,
        content_type="application/x-ndjson",
        headers={"Idempotency-Key": key},
    )


def _claimed_elsewhere(tenant, key: str) -> psycopg.Connection:
    """A request's claim of `key` on a connection of its own, as a web process makes it:
    its row, unanswered, and its lock."""
    other = psycopg.connect(database_url_of_tests(), autocommit=True)
    held = {"tenant": str(tenant.id), "key": key}
    other.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, headers, created_at) "
        "VALUES (%(tenant)s, %(key)s, '', '{}', now())",
        held,
    )
    other.execute(f"SELECT pg_advisory_lock({IN_FLIGHT_LOCK})", held)
    return other


def _close_and_wait_gone(other: psycopg.Connection) -> None:
    """Close a connection and wait until its server process has exited: closing only asks
    it to, and until it has, it holds its session's locks."""
    pid = other.info.backend_pid
    other.close()
    deadline = time.monotonic() + 10
    with psycopg.connect(database_url_of_tests(), autocommit=True) as probe:
        while probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the server process did not exit"
            time.sleep(0.01)


def test_a_key_whose_request_died_is_taken_over_at_once():
    """Its connection gone (a web process killed mid-request), the key is free: the retry
    runs (202) and its answer is stored; before, 409 for 15 minutes."""
    tenant, issued = tenant_create(name="Crashed")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    other = _claimed_elsewhere(tenant, "crash-1")
    assert _customers(client, "crash-1").status_code == 409
    _close_and_wait_gone(other)  # what the server sees of a process that died
    retry = _customers(client, "crash-1")
    assert retry.status_code == 202, retry.content
    assert "Idempotent-Replayed" not in retry
    row = IdempotencyKey.objects.get(tenant=tenant, key="crash-1")
    assert (row.status_code, row.body["id"]) == (202, retry.json()["id"])
    replay = _customers(client, "crash-1")
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (202, "true")
    assert RecordBatch.objects.count() == 1


def test_a_key_whose_request_still_runs_stays_in_flight_however_long():
    """No time limit stands in for the request's own: claimed an hour ago and still held,
    the key is in flight."""
    tenant, issued = tenant_create(name="Slow")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    other = _claimed_elsewhere(tenant, "slow-1")
    try:
        other.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE key = %s",
            ["slow-1"],
        )
        response = _customers(client, "slow-1")
        assert (response.status_code, response.json()["code"]) == (409, "idempotency_in_flight")
    finally:
        other.close()
    assert not RecordBatch.objects.exists()
