"""Retries: exponential backoff with jitter, Retry-After, which answers are retried."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from ingest_client.transport import (
    RequestFailed,
    RetryPolicy,
    Transport,
    is_retryable,
    parse_retry_after,
)


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap():
    """Delays lie in [ceiling/2, ceiling] for ceiling = min(cap, base * 2**attempt)."""
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert [policy.delay(n, rand=lambda: 0.0) for n in range(6)] == [0.25, 0.5, 1, 2, 2, 2]
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_retry_after_is_waited_in_full_in_seconds_or_as_a_date():
    """A server's Retry-After wins over the backoff (bounded by max_retry_after)."""
    policy = RetryPolicy(base=0.5, cap=4.0, max_retry_after=60)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=600.0) == 60
    assert parse_retry_after("3") == 3.0
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "body", "retry"),
    [
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (409, {"code": "idempotency_in_flight"}, True),
        (409, {"code": "offset_mismatch", "offset": 10}, False),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (422, {}, False),
        (200, {}, False),
    ],
)
def test_only_answers_a_retry_can_fix_are_retried(status, body, retry):
    """5xx, 429 and an in-flight Idempotency-Key are retried; other 4xx are not."""
    assert is_retryable(httpx.Response(status, json=body)) is retry


def test_a_url_of_no_http_scheme_fails_at_once_without_a_retry():
    """httpx's UnsupportedProtocol is a transport error no retry can mend: one attempt."""
    notes: list[str] = []
    with httpx.Client() as client:
        transport = Transport(
            client,
            policy=RetryPolicy(attempts=5, base=10),
            stop=threading.Event(),
            note=notes.append,
        )
        started = time.monotonic()
        with pytest.raises(RequestFailed, match="GET notaurl/x: Request URL is missing"):
            transport.request("GET", "notaurl/x", api_key="k", label="x")
    assert notes == []
    assert time.monotonic() - started < 5
