"""Fixtures of the webhook tests: a real HTTP receiver on loopback, run by the test, that
records every request and answers as told; endpoints registered through the API."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# the ingestion tests' fixtures: real worker processes on a queue of the test's own, and a
# new tenant with a client sending its key
from tests.ingestions.conftest import (  # noqa: F401 - fixtures
    celery_processes,
    queue,
    tenant_client,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An HTTP server on 127.0.0.1 (a port of its own) in a thread. Each POST is recorded
    as it arrives, then answered with the next of `answers` (then 200). `stop()` takes it
    down (connections refused) and `start()` brings it back on the same port."""

    def __init__(self):
        self.requests: list[Received] = []
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self.answers.extend(answers)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    answer = receiver.answers.pop(0) if receiver.answers else Answer()
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    """Loopback receivers allowed (the setting's default refuses them), and a retry
    schedule of fractions of a second."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    settings.WEBHOOK_RETRY_SCHEDULE = [0.2, 0.2, 0.2]
    settings.WEBHOOK_RETRY_JITTER = 0.1
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    settings.WEBHOOK_LEASE_SECONDS = 10
    settings.PUBLIC_BASE_URL = "http://testserver"  # links in events, as the test client's


def register(client, url: str, events: list[str], **more) -> dict:
    """Register an endpoint through the API; its 201 body (with the secret)."""
    answer = client.post("/api/v1/webhooks/", {"url": url, "events": events, **more}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


ALL_EVENTS = [
    "upload.completed",
    "upload.completed_with_errors",
    "upload.failed",
    "records.batch_merged",
    "pending.expired",
]
