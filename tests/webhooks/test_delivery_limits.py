"""A delivery attempt within its limits whatever the receiver or the stored URL does: a
receiver answering a byte at a time is cut off at the attempt's time limit; an attempt
that outlasted its lease changes nothing a later one settled; a URL that cannot be sent
is a failed attempt in the log, on the retry schedule, never a crash retried for ever; a
receiver's `Retry-After` is waited for (up to the schedule's longest wait) and its 410
disables the endpoint."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.db import connection

from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import delivery_attempt
from tests.conftest import wait_for
from tests.webhooks.conftest import Answer, register

pytestmark = pytest.mark.django_db(transaction=True)

_SLOW_ANSWER = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


class Trickler:
    """A receiver on loopback whose first connection is answered a byte every quarter
    second (each byte well within a read timeout, the whole answer 14 s); every later one
    answered 200 at once."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self.finished_slow = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(client, self.connections == 1)).start()

    def _answer(self, client: socket.socket, slow: bool) -> None:
        with client:
            client.recv(65536)  # the request (a test event is a few hundred bytes)
            try:
                if not slow:
                    client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    return
                for byte in _SLOW_ANSWER:
                    client.sendall(bytes([byte]))
                    time.sleep(0.25)
            except OSError:  # cut off by the sender
                pass
            finally:
                if slow:
                    self.finished_slow.set()

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def trickler():
    server = Trickler()
    yield server
    server.close()


def _attempts(endpoint_id: str) -> list[tuple]:
    delivery = WebhookDelivery.objects.get(endpoint_id=endpoint_id)
    return [(a.number, a.status_code, a.error) for a in delivery.attempt_log.all()]


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_attempts_limit(
    celery_worker, tenant_client, trickler
):
    """Every byte within the read timeout, the answer 14 s long: the attempt ends at
    WEBHOOK_TIMEOUT_SECONDS (2 s here) all told, is logged so, and the retry delivers.
    (The worker was held until the answer ended; past the lease a second worker sent it
    again meanwhile.)"""
    _, client = tenant_client()
    endpoint = register(client, f"http://127.0.0.1:{trickler.port}/hook", ["upload.failed"])
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    delivered = wait_for(
        lambda: (
            WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], state="delivered")
            .prefetch_related("attempt_log")
            .first()
        ),
        timeout=20,
    )
    first, second = delivered.attempt_log.all()
    assert (first.number, first.status_code) == (1, None)
    assert first.error == "No answer within 2 s (the whole attempt's limit)."
    assert 1900 <= first.latency_ms < 3500
    assert (second.number, second.status_code, second.error) == (2, 200, "")
    assert trickler.connections == 2


def test_an_attempt_that_outlasted_its_lease_does_not_undo_the_one_that_delivered(
    tenant_client, receiver, settings
):
    """Attempt 1 answered 500 late, after its lease ran out and attempt 2 delivered: it is
    logged, and the delivery stays delivered (it was set back to pending, and sent a third
    time)."""
    settings.WEBHOOK_LEASE_SECONDS = 0.2
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.failed"])
    delivery_id = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()["id"]
    receiver.answer(Answer(500, delay=1.5), Answer(200))

    def first_attempt():
        delivery_attempt(delivery_id=delivery_id)
        connection.close()

    late = threading.Thread(target=first_attempt)
    late.start()
    wait_for(lambda: receiver.requests)
    time.sleep(0.3)  # its lease is over
    assert delivery_attempt(delivery_id=delivery_id).state == "delivered"
    late.join(10)
    delivery = WebhookDelivery.objects.get(id=delivery_id)
    assert (delivery.state, delivery.next_attempt_at, delivery.last_status_code) == (
        "delivered",
        None,
        200,
    )
    assert delivery.delivered_at is not None
    assert sorted(_attempts(endpoint["id"])) == [(1, 500, "HTTP 500"), (2, 200, "")]
    assert delivery_attempt(delivery_id=delivery_id) is None  # nothing left to send
    assert len(receiver.requests) == 2


def test_an_internationalized_host_is_sent_in_its_ascii_form(
    celery_worker, tenant_client, receiver
):
    """A host written in Unicode is looked up and named in the Host header by its IDNA
    form (the non-ASCII Host header made every attempt crash, unlogged, for ever)."""
    _, client = tenant_client()
    url = f"http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:{receiver.port}/hook"
    endpoint = register(client, url, ["upload.failed"])  # circled letters: "localhost"
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    wait_for(lambda: WebhookDelivery.objects.filter(state="delivered").exists())
    [request] = receiver.requests
    assert request.headers["Host"] == f"localhost:{receiver.port}"


def test_a_stored_url_that_cannot_be_sent_fails_on_the_retry_schedule(
    celery_worker, tenant_client, receiver
):
    """A URL stored before the checks of today (a control character in its path): each
    attempt is logged with why, the schedule is followed, and after the last one the
    delivery fails and the endpoint is marked failing (each attempt crashed, unlogged,
    and the delivery was retried every lease for ever)."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.failed"])
    WebhookEndpoint.objects.filter(id=endpoint["id"]).update(url=receiver.url + "\x01x")
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    failed = wait_for(
        lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], state="failed").first()
    )
    error = (
        f"The URL holds '\\x01' at character {len(receiver.url) + 1}: spaces and control "
        "characters must be percent-encoded."
    )
    assert _attempts(endpoint["id"]) == [(n, None, error) for n in (1, 2, 3, 4)]
    assert failed.attempts == 4
    assert WebhookEndpoint.objects.get(id=endpoint["id"]).failing
    assert receiver.requests == []


def test_a_receivers_retry_after_is_waited_for_up_to_the_schedules_longest_wait(
    celery_worker, tenant_client, receiver, settings
):
    """503 with `Retry-After: 2` (seconds): the next attempt comes no sooner; 429 with an
    HTTP date a century ahead: no later than the schedule's longest wait. Both used to be
    retried on the schedule alone."""
    settings.WEBHOOK_RETRY_SCHEDULE = [0.2, 0.2, 3.0]
    settings.WEBHOOK_RETRY_JITTER = 0.0
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(
        Answer(503, headers={"Retry-After": "2"}),
        Answer(429, headers={"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}),
        Answer(200),
    )
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    wait_for(
        lambda: WebhookDelivery.objects.filter(
            endpoint_id=endpoint["id"], state="delivered"
        ).first(),
        timeout=30,
    )
    first, second, third = (r.at for r in receiver.requests)
    assert 2.0 <= second - first < 2.9
    assert 3.0 <= third - second < 4.5


def test_a_410_fails_the_delivery_at_once_and_disables_the_endpoint(
    celery_worker, tenant_client, receiver
):
    """410 Gone: the receiver says the endpoint is no more. The delivery fails after that
    one attempt (no retries), the endpoint is disabled and failing; enabled again, a
    redelivery is sent. A 410 used to be retried like a 500, for a day."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(Answer(410))
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    failed = wait_for(
        lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], state="failed").first()
    )
    time.sleep(0.6)  # past the schedule's next retry: none comes
    assert (failed.attempts, failed.next_attempt_at, len(receiver.requests)) == (1, None, 1)
    assert failed.attempt_log.get().error == (
        "HTTP 410 (gone: the endpoint is disabled, and this delivery is not retried)"
    )
    shown = client.get(f"/api/v1/webhooks/{endpoint['id']}/").json()
    assert (shown["enabled"], shown["failing"]) == (False, True)

    client.patch(f"/api/v1/webhooks/{endpoint['id']}/", {"enabled": True}, format="json")
    url = f"/api/v1/webhooks/{endpoint['id']}/deliveries/{sent['id']}/redeliver/"
    assert client.post(url).status_code == 202
    wait_for(
        lambda: WebhookDelivery.objects.filter(
            endpoint_id=endpoint["id"], state="delivered"
        ).first()
    )
    assert len(receiver.requests) == 2
