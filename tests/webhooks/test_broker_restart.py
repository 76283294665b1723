"""The broker restarted with an event waiting: a Redis of the test's own (no persistence,
so whatever it held is gone) goes down under a real worker, an event is recorded meanwhile,
and once Redis is back the worker reconnects and delivers the event, found in PostgreSQL by
its sweep. The broker only wakes workers up; the outbox is the record."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from apps.webhooks.models import WebhookDelivery
from scripts.stack import free_port
from tests.conftest import wait_for
from tests.webhooks.conftest import register

REDIS = shutil.which("redis-server")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(REDIS is None, reason="no `redis-server` on PATH (apt-get install redis)"),
]


class _Redis:
    """A redis-server on a loopback port of its own, started and stopped by the test."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for(self._accepts, timeout=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True


@pytest.fixture
def broker():
    redis = _Redis()
    redis.start()
    yield redis
    redis.stop()


def test_an_event_recorded_while_the_broker_is_down_is_delivered_once_it_is_back(
    broker, celery_processes, tenant_client, receiver
):
    """Nothing is sent while Redis is down; the same worker process, reconnected, delivers
    the event after Redis restarts empty."""
    worker, log = celery_processes(
        {
            "CELERY_BROKER_URL": broker.url,
            "WEBHOOK_ALLOW_PRIVATE_URLS": "1",
            "WORKER_HOUSEKEEPING_SECONDS": "1",
        }
    )
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    first = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    wait_for(lambda: len(receiver.requests) == 1, timeout=30)  # the worker works

    broker.stop()
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    wait_for(lambda: "Connection" in log.read_text(errors="replace"), timeout=30)
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(id=sent["id"]).state == "pending"

    broker.start()
    delivered = wait_for(
        lambda: WebhookDelivery.objects.filter(id=sent["id"], state="delivered").first(),
        timeout=60,
    )
    assert delivered.attempts == 1
    assert worker.poll() is None  # the same worker, reconnected
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [first["event_id"], sent["event_id"]]
