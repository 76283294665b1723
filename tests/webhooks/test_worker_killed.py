"""A worker SIGKILLed mid-delivery: the delivery is taken again once its lease is over, by
the sweep a new worker's housekeeping sends (no beat), and ends delivered. Real worker
processes (prefork pool) on the configured broker."""

from __future__ import annotations

import os
import signal

import pytest

from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services.delivery import CUT_OFF, UNDER_WAY
from tests.conftest import wait_for
from tests.webhooks.conftest import Answer, register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LEASE_SECONDS = 3  # WEBHOOK_LEASE_SECONDS of the workers


@pytest.fixture
def start_worker(celery_processes):
    env = {
        "WEBHOOK_ALLOW_PRIVATE_URLS": "1",
        "WEBHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WORKER_HOUSEKEEPING_SECONDS": "1",
    }
    return lambda: celery_processes(env)


def test_a_delivery_whose_worker_is_killed_mid_request_is_delivered_after_a_restart(
    start_worker, tenant_client, receiver
):
    """The receiver holds the first request; the worker sending it is SIGKILLed (its whole
    process group). A new worker's sweep sends the event again once the lease is over: it
    is delivered, with the same `webhook-id` (at least once: receivers dedupe by it)."""
    first, _ = start_worker()
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(Answer(200, delay=30))  # the first request hangs until the kill
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    wait_for(lambda: len(receiver.requests) == 1, timeout=30)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    taken = WebhookDelivery.objects.get(id=sent["id"])
    assert (taken.state, taken.attempts) == ("pending", 1)
    [under_way] = taken.attempt_log.all()
    assert (under_way.number, under_way.status_code, under_way.error) == (1, None, UNDER_WAY)

    start_worker()
    delivered = wait_for(
        lambda: WebhookDelivery.objects.filter(id=sent["id"], state="delivered").first(),
        timeout=60,
    )
    assert delivered.attempts == 2
    assert [(a.number, a.status_code, a.error) for a in delivered.attempt_log.all()] == [
        (1, None, CUT_OFF),  # it never ended, and the log says so
        (2, 200, ""),
    ]
    assert len(receiver.requests) == 2
    assert {r.headers["webhook-id"] for r in receiver.requests} == {sent["event_id"]}


def test_a_worker_stopped_gently_lets_its_attempts_under_way_end(
    start_worker, tenant_client, receiver
):
    """SIGTERM while the receiver holds three requests (it answers after 1.5 s): the worker
    waits for them and logs their outcome before it exits. They are delivered once; the
    worker used to exit at once, leaving them under way, to be sent again after the lease."""
    worker, _ = start_worker()
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(*[Answer(200, delay=1.5)] * 3)
    sent = [client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json() for _ in range(3)]
    wait_for(lambda: len(receiver.requests) == 3, timeout=30)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    deliveries = WebhookDelivery.objects.filter(id__in=[s["id"] for s in sent])
    assert sorted((d.state, d.attempts) for d in deliveries) == [("delivered", 1)] * 3
    assert len(receiver.requests) == 3
