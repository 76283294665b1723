"""Delivering an event to an endpoint: one attempt at a time, never inside a transaction.

A worker takes a due delivery by moving its `next_attempt_at` a lease ahead (a short
transaction, `SKIP LOCKED`), sends it, and writes the outcome: delivered, or the next
attempt after the retry schedule (with jitter), or, after the last one, failed with its
endpoint marked failing. A worker killed mid-request leaves the delivery due again once
the lease is over: at least once."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services.addresses import WebhookUrlError, url_check
from apps.webhooks.services.events import deliveries_wake
from apps.webhooks.services.signing import secret_expires, signature_header

logger = logging.getLogger("apps.webhooks.services")

USER_AGENT = "commerce-ingest-webhooks/1"
_ERROR_CHARS = 500
_WAKE_AT_MOST_SECONDS = 300


# What the delivery log says of an attempt without an outcome yet, and of one that never
# got one.
UNDER_WAY = "under way"
CUT_OFF = "no outcome: the attempt was cut off (its worker stopped, or it outlasted its lease)"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int | None
    error: str
    retry_after: float | None = None  # seconds the receiver asked to wait (`Retry-After`)

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint is gone for good (retrying will not help)."""
        return self.status_code == 410

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def delivery_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Make the delivery's next attempt if it is due and no other worker has it; returns it
    as left, or None when there was nothing to do."""
    delivery = _take(delivery_id)
    if delivery is None:
        return None
    outcome = _send(delivery)
    return _record(delivery, outcome)


def _take(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint", "event")
            .filter(
                id=delivery_id,
                state=DeliveryState.PENDING,
                next_attempt_at__lte=now,
                endpoint__enabled=True,
            )
            .first()
        )
        if delivery is None:
            return None
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
        delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
        # In the log from its start: one that never ends (its worker killed) says so, and
        # one still under way when the next is taken was cut off by its lease, unless its
        # outcome comes after all (`_record` writes it over).
        log = WebhookAttempt.objects.filter(delivery=delivery)
        log.filter(error=UNDER_WAY).update(error=CUT_OFF)
        log.create(delivery=delivery, number=delivery.attempts, error=UNDER_WAY)
    return delivery


def _send(delivery: WebhookDelivery) -> Outcome:
    endpoint, event = delivery.endpoint, delivery.event
    try:
        target = url_check(endpoint.url)  # again: what the name resolves to may have changed
    except WebhookUrlError as exc:
        return Outcome(None, None, exc.detail)
    timestamp = int(time.time())
    headers = {
        "Host": target.host,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=endpoint_secrets(endpoint),
            message_id=event.message_id,
            timestamp=timestamp,
            body=event.payload,
        ),
    }
    started = time.monotonic()
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    deadline = _Deadline(seconds)
    try:
        client = httpx.Client(timeout=seconds, follow_redirects=False, trust_env=False)
        # streamed and never read: a receiver's answer body is not ours to download
        with (
            client,
            deadline,
            client.stream(
                "POST",
                target.url,
                content=event.payload.encode(),
                headers=headers,
                extensions={"sni_hostname": target.server_name, "trace": deadline.trace},
            ) as response,
        ):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure is this attempt's, logged as such
        latency = round((time.monotonic() - started) * 1000)
        if deadline.expired:
            error = f"No answer within {seconds:g} s (the whole attempt's limit)."
        else:
            if not isinstance(exc, httpx.HTTPError):  # not the network's: say it loudly
                logger.exception("webhook delivery %s could not be sent", delivery.id)
            error = f"{type(exc).__name__}: {exc}"
        return Outcome(None, latency, error[:_ERROR_CHARS])
    latency = round((time.monotonic() - started) * 1000)
    error = "" if response.is_success else f"HTTP {response.status_code}"
    if response.is_redirect:
        error += " (redirects are not followed)"
    if response.status_code == 410:
        error += " (gone: the endpoint is disabled, and this delivery is not retried)"
    retry_after = None if response.is_success else _seconds_after(response.headers)
    return Outcome(response.status_code, latency, error, retry_after)


def _seconds_after(headers: httpx.Headers) -> float | None:
    """A `Retry-After` header's delay in seconds (a number of seconds or an HTTP date), or
    None when there is none, or none that makes sense."""
    value = headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:12]), 10**9))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is not None:
            return max((when - timezone.now()).total_seconds(), 0.0)
    return None


class _Deadline:
    """Ends an attempt that outlasts `seconds`, whatever it waits for. httpx's timeouts
    bound each read and write, not their sum: a receiver answering a byte at a time, each
    within the timeout, held a worker (and the delivery past its lease) for minutes. When
    the time is up the connection's socket is shut down, which wakes a read or write
    blocked on it; httpcore's `trace` extension hands over the socket as it connects."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()

    def trace(self, name: str, info: dict) -> None:
        if name == "connection.connect_tcp.complete":
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                late = self.expired
            if late:
                _shut(self._socket)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            found = self._socket
        if found is not None:
            _shut(found)


def _shut(found: socket.socket | None) -> None:
    if found is not None:
        with contextlib.suppress(OSError):  # closed already
            found.shutdown(socket.SHUT_RDWR)


def endpoint_secrets(endpoint: WebhookEndpoint) -> list[str]:
    """The secrets that sign: the current one, and rotated-out ones until they expire."""
    now = timezone.now()
    old = [p["secret"] for p in endpoint.previous_secrets if secret_expires(p) > now]
    return [endpoint.secret, *old]


def _record(delivery: WebhookDelivery, outcome: Outcome) -> WebhookDelivery:
    now = timezone.now()
    with transaction.atomic():
        current = (
            WebhookDelivery.objects.select_for_update()
            .filter(id=delivery.id)
            .values_list("state", "attempts")
            .first()
        )
        if current is None:
            return delivery  # its endpoint was deleted meanwhile
        WebhookAttempt.objects.update_or_create(
            delivery=delivery,
            number=delivery.attempts,
            defaults={
                "status_code": outcome.status_code,
                "latency_ms": outcome.latency_ms,
                "error": outcome.error,
            },
        )
        state, attempts = current
        if state != DeliveryState.PENDING or (attempts != delivery.attempts and not outcome.ok):
            # Settled meanwhile, or a later attempt has the delivery (this one outlasted
            # its lease): this one's outcome is logged, and changes nothing. (A late
            # success still delivers it: the receiver has the event.)
            delivery.refresh_from_db()
            return delivery
        _settle(delivery, outcome, now)
        WebhookDelivery.objects.filter(id=delivery.id).update(
            state=delivery.state,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
            last_status_code=delivery.last_status_code,
            last_latency_ms=delivery.last_latency_ms,
            last_error=delivery.last_error,
            updated_at=now,
        )
        retry_in = (
            (delivery.next_attempt_at - now).total_seconds() if delivery.next_attempt_at else 0
        )
        # a near retry gets a wake-up of its own; later ones are the sweep's (a message
        # held for hours by a worker would be lost with it anyway)
        if delivery.state == DeliveryState.PENDING and retry_in <= _WAKE_AT_MOST_SECONDS:
            transaction.on_commit(
                lambda: deliveries_wake(delivery_ids=[delivery.id], countdown=retry_in)
            )
    logger.info(
        "webhook delivery %s: attempt %s %s",
        delivery.id,
        delivery.attempts,
        delivery.state,
        extra={"status_code": outcome.status_code, "error": outcome.error},
    )
    return delivery


def _settle(delivery: WebhookDelivery, outcome: Outcome, now) -> None:
    """The delivery after this attempt (unsaved): delivered, the next attempt after the
    schedule, or failed after the last one; its endpoint's failing mark with it."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    delivery.last_status_code = outcome.status_code
    delivery.last_latency_ms = outcome.latency_ms
    delivery.last_error = outcome.error
    endpoint = WebhookEndpoint.objects.filter(id=delivery.endpoint_id)
    if outcome.ok:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.filter(failing_since__isnull=False).update(failing_since=None)
    elif outcome.gone:  # as a receiver asks with 410: sent nothing more until enabled again
        delivery.state = DeliveryState.FAILED
        delivery.next_attempt_at = None
        endpoint.update(enabled=False, failing_since=Coalesce("failing_since", now), updated_at=now)
    elif delivery.attempts <= len(schedule):
        delay = schedule[delivery.attempts - 1] * _jitter()
        if outcome.retry_after is not None:  # as asked, up to the schedule's longest wait
            delay = max(delay, min(outcome.retry_after, max(schedule)))
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    else:
        delivery.state = DeliveryState.FAILED
        delivery.next_attempt_at = None
        endpoint.filter(failing_since__isnull=True).update(failing_since=now)


def _jitter() -> float:
    spread = settings.WEBHOOK_RETRY_JITTER
    return random.uniform(1 - spread, 1 + spread)  # noqa: S311 - spreading retries, no secret
