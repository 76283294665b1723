"""A connection the web server closes while its client may still be sending is closed
gently: the answer is followed by the end of the stream, not by a reset that a client
still sending, or reading until the end, gets instead of the answer."""

from __future__ import annotations

import socket
import time

import pytest

from apps.tenants.services import tenant_create
from tests.core.test_web_server import gunicorn, request_head

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock(), gunicorn(tmp_path_factory.mktemp("web")) as running:
        yield running


def _to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends, until it closes (a reset raises)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"GET /api/v1/analytics/summary/?x=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"400 Bad Request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n",
            b"431 Request Header Fields Too Large",
        ),
    ],
    ids=["request-line-100KB", "header-200KB"],
)
def test_a_request_gunicorn_refuses_mid_head_gets_its_answer_then_the_end(
    server, request_bytes, status
):
    """Refused before its head is read whole: the 4xx and then the end of the stream, read
    to the end (the unread rest of the head made the close a reset)."""
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request_bytes)
        answer = _to_the_end(sock)
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer[:80]
    assert answer.endswith(b'"}')  # the problem document, whole


def test_a_body_sent_without_waiting_for_100_continue_does_not_reset_the_refusal(server):
    """`Expect: 100-continue` refused (a wrong key), and the client sends its body anyway
    after a second without an answer, as curl does: it reads the 401 to the end (the body
    arriving at a closed connection reset it)."""
    _, port = server
    tenant_create(name="lingering")
    body = b"x" * 20_000_000  # past WEB_BUFFER_BODY_BYTES: the key is checked first
    head = request_head(
        "POST",
        "/api/v1/ingest/comprehensive/?filename=customers_linger.ndjson",
        {"X-API-Key": "nope", "Content-Length": len(body), "Expect": "100-continue"},
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1"))
        time.sleep(0.3)  # the refusal is on its way, or here
        sock.sendall(body[:1_000_000])  # not waited for: the client did not see it yet
        answer = _to_the_end(sock)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:80]
    assert b"\r\nConnection: close\r\n" in answer
