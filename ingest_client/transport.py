"""Talking to the API: one httpx client, the API key, retries with backoff, clear errors.

Connection errors, 5xx and 429 (and a 409 saying an earlier request is still in flight) are
retried with exponential backoff and jitter, a server's `Retry-After` waited in full (a 429
for as long as it lasts: it does not count against the attempts); other 4xx (a refused API
key included) are returned, or raised with the server's explanation.
Nothing here knows about files: the bulk upload and, later, a live-records client share it.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

API = "/api/v1/ingest"

# 409s that only mean "not now": the same Idempotency-Key, or another chunk of the same
# session, is still being received
BUSY_CODES = frozenset({"idempotency_in_flight", "session_busy"})


class RequestFailed(Exception):
    """This request cannot succeed (retries exhausted or a 4xx); the message says why."""


class KeyRefused(RequestFailed):
    """401: the tenant's API key is wrong or revoked; nothing more is sent for the tenant."""


class Interrupted(Exception):
    """The run is stopping (Ctrl-C or the test hook); state is saved, a rerun resumes."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is waited in full."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:  # none would ever be the last: retried for ever
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based); a server's Retry-After
        of less than `base` (0: "now") is `base`, or a busy server's 429s would come back
        as fast as the network goes."""
        if retry_after is not None:
            return min(max(retry_after, self.base), self.max_retry_after)
        ceiling = min(self.cap, self.base * 2**attempt)
        return ceiling / 2 + rand() * ceiling / 2  # "equal jitter": spread, never near zero


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None


def problem_of(response: httpx.Response) -> dict:
    """The problem+json body of an error response ({} when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def is_retryable(response: httpx.Response) -> bool:
    """5xx, 429, and a 409 saying an earlier request is still in flight."""
    if response.status_code == 429 or response.status_code >= 500:
        return True
    return response.status_code == 409 and problem_of(response).get("code") in BUSY_CODES


def client_error(response: httpx.Response, what: str) -> RequestFailed:
    """A clear exception for a 4xx a retry cannot fix."""
    problem = problem_of(response)
    detail = problem.get("detail") or response.text[:300] or response.reason_phrase
    if response.status_code == 401:
        return KeyRefused(
            f"the API key was refused (401 {problem.get('title') or 'Unauthorized'}: {detail}); "
            "check the manifest's api_key or --api-key"
        )
    return RequestFailed(f"{what}: HTTP {response.status_code}: {detail}")


def api_key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key (it could not even be sent as a header), or None. A
    key is printable ASCII without spaces: a pasted key that picked up a line break or a
    typographic character is said so at once, not retried as a network failure."""
    for position, char in enumerate(key, start=1):
        if not "!" <= char <= "~":
            return (
                f"the API key holds {char!r} at character {position}: an API key is printable "
                "ASCII without spaces (was it pasted whole?)"
            )
    return None


def api_url_arg(text: str) -> str:
    """`--api-url` checked where it is given (argparse `type`): an http(s) URL with a host,
    or the command stops at once (exit 2) instead of retrying what cannot work."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host (e.g. http://localhost:8000)"
        )
    return text


def api_base(url: str) -> str:
    """The service's root URL; a URL ending in /api/v1 is accepted too."""
    url = url.rstrip("/")
    return url[: -len("/api/v1")] if url.endswith("/api/v1") else url


def open_client(api_url: str, *, timeout: float, connections: int) -> httpx.Client:
    """An HTTP client for the service at `api_url`: `timeout` seconds per response (at most
    10 to connect), up to `connections` connections kept alive."""
    return httpx.Client(
        base_url=api_base(api_url),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=None),
    )


class Transport:
    """Requests with the API key, retried by `policy`; `stop` ends the waits between
    attempts (Interrupted) and `note` says what is retried and when."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        policy: RetryPolicy,
        stop: threading.Event,
        note: Callable[[str], None],
    ):
        self.client = client
        self.policy = policy
        self.stop = stop
        self.note = note

    def request(
        self,
        method: str,
        url: str,
        *,
        api_key: str,
        label: str,
        body: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, retried on connection errors, 5xx, 429 and an in-flight 409.
        `body` makes a fresh request body for every attempt; `label` names what is sent in
        notes. Other answers are returned. A 429 is the server saying when to come back
        (backpressure, a rate limit), and an in-flight 409 that an earlier attempt of this
        request is still being answered (one that timed out here): both are waited out for
        as long as they last, and only the other failures count against the policy's
        attempts (an in-flight 409 counted, and a batch the server went on to store was
        reported as not sent)."""
        # long: one loop of attempts, each outcome a branch, in the order they are met
        headers = {"X-API-Key": api_key, **(headers or {})}
        failed = 0  # attempts that count: all but the 429s
        for attempt in itertools.count():
            if self.stop.is_set():
                raise Interrupted
            try:
                response = self.client.request(
                    method, url, headers=headers, content=body() if body else None, **kwargs
                )
            except httpx.UnsupportedProtocol as exc:  # the URL's own fault: no retry mends it
                raise RequestFailed(f"{method} {url}: {exc}") from None
            except httpx.TransportError as exc:
                problem, retry_after = f"{type(exc).__name__}: {exc}".rstrip(": "), None
                failed += 1
            else:
                if not is_retryable(response):
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                failed += response.status_code not in (409, 429)
            if failed == self.policy.attempts:
                raise RequestFailed(
                    f"{method} {url}: gave up after {self.policy.attempts} attempts ({problem})"
                )
            # the backoff reaches its cap long before: a bound keeps 2**attempt a small float
            delay = self.policy.delay(min(attempt, 30), retry_after=retry_after)
            self.note(f"{label}: {problem}; retrying in {delay:.1f}s")
            if self.stop.wait(delay):
                raise Interrupted

    def post_idempotent(
        self, url: str, *, key: str, name: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """POST with an Idempotency-Key. When the key was used for other parameters (the
        same content sent earlier under another `name`) a key that adds the name is used
        instead; the server still recognises the identical bytes. `kwargs` go to request."""
        response = self.request("POST", url, headers={**headers, "Idempotency-Key": key}, **kwargs)
        if response.status_code == 422 and problem_of(response).get("code") == (
            "idempotency_mismatch"
        ):
            named = f"{key}:{hashlib.sha256(name.encode()).hexdigest()[:16]}"
            response = self.request(
                "POST", url, headers={**headers, "Idempotency-Key": named}, **kwargs
            )
        return response
