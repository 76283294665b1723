"""HTTP at the edges (SPEC 5, "Details that clients rely on"): HEAD answers without a
body, NUL bytes and non-ASCII digits, paths with or without their trailing slash, unknown
filter values, two files in one form, and wrong methods. The HEAD cases run through a real
gunicorn on a kept-alive connection: Django's test client strips HEAD bodies by itself."""

from __future__ import annotations

import socket

import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.tenants.services import tenant_create
from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests, ingest_stored

PROBLEM = "application/problem+json"
TOKEN = "0123456789abcdef0123456789abcdef"  # well-formed, but no such session
UPLOAD_ID = "00000000-0000-4000-8000-000000000000"  # well-formed, but no such upload

# --- a real gunicorn, read byte by byte ------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn as `gunicorn main.wsgi` runs it (gunicorn.conf.py), on the test database;
    `--threads 2` keeps connections alive should the configured worker be the sync one."""
    with django_db_blocker.unblock():
        database_url = database_url_of_tests()
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--threads", "2"]
    with running_processes(
        {"web": command},
        env={"DATABASE_URL": database_url},
        log_dir=tmp_path_factory.mktemp("gunicorn"),
    ) as processes:
        wait_ready(f"http://127.0.0.1:{port}", processes)
        yield port


class Connection:
    """One kept-alive HTTP/1.1 connection, answers read exactly as framed."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: testserver"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def answer(self, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the next answer; a HEAD answer has headers only."""
        status_line = self._line()
        assert status_line.startswith(b"HTTP/1.1 "), f"illegal status line: {status_line[:80]!r}"
        status = int(status_line.split()[1])
        headers = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                self._take(2)
            self._line()
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def nothing_more(self) -> bool:
        """No stray bytes follow the last answer (waits a moment for them)."""
        self.sock.settimeout(0.3)
        try:
            self._fill()
        except TimeoutError:
            return self.buffer == b""
        finally:
            self.sock.settimeout(10)
        return False


@pytest.fixture
def connect(server):
    opened = []

    def make() -> Connection:
        opened.append(Connection(server))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


@pytest.fixture
def stored(transactional_db):
    """A tenant with its key and one upload that has rejects, committed for gunicorn."""
    tenant, issued = tenant_create(name="Edges")
    rows = [customer_row(customer_id=uid("edge-1")), customer_row(customer_id="nope")]
    upload = ingest_stored(tenant, "customers_1.ndjson", ndjson_bytes(rows))
    return issued.raw, upload


HEAD_PATHS = [
    ("/healthz", {}),
    ("/readyz", {}),
    ("/metrics", {}),
    ("/api/v1/schema/", {}),
    ("/api/v1/schema/?format=yaml", {}),
    ("/api/v1/nope/", {}),
    ("/api/v1/ingest/uploads/", {}),
    ("/api/v1/ingest/uploads/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/errors/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/errors/?format=ndjson", {"X-API-Key": "{key}"}),
    (f"/api/v1/ingest/sessions/{TOKEN}/status/", {"X-API-Key": "{key}"}),
    ("/dashboard/", {}),
    ("/dashboard/login/", {}),
    ("/dashboard/login/", {"Accept": "text/html"}),
    ("/dashboard/data/", {}),
    ("/static/dashboard/dashboard.css", {}),
]


@pytest.mark.parametrize(("path", "headers"), HEAD_PATHS)
def test_a_head_answer_has_the_get_answers_headers_and_no_body(connect, stored, path, headers):
    """HEAD answers as GET does, headers only; the next answer on the same kept-alive
    connection is read cleanly."""
    key, upload = stored
    path = path.format(upload=upload.id)
    headers = {name: value.format(key=key) for name, value in headers.items()}
    connection = connect()
    connection.send("GET", path, headers)
    get_status, get_headers, get_body = connection.answer()
    connection.send("HEAD", path, headers)
    status, head_headers, _ = connection.answer(head=True)
    assert connection.nothing_more(), f"HEAD {path} sent a body: {connection.buffer[:80]!r}"
    assert status == get_status
    assert head_headers.get("content-type") == get_headers.get("content-type")
    if "content-length" in head_headers and path != "/metrics":  # counts the GET itself
        assert head_headers["content-length"] == str(len(get_body))
    connection.send("GET", "/healthz")
    status, _, body = connection.answer()
    assert (status, body) == (200, b'{"status": "ok"}')


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-API-Key": "{key}", "Tus-Resumable": "1.0.0"}, 404),
        ({"X-API-Key": "{key}"}, 412),
        ({"Tus-Resumable": "1.0.0"}, 401),
    ],
)
def test_a_tus_head_error_has_no_body(connect, stored, headers, status):
    """The failure a tus client saw: the problem+json of a tus HEAD answer read as the
    next status line (`illegal status line: {"type":...}HTTP/1.1 401`)."""
    key, _ = stored
    connection = connect()
    headers = {name: value.format(key=key) for name, value in headers.items()}
    connection.send("HEAD", f"/api/v1/ingest/tus/{TOKEN}", headers)
    assert connection.answer(head=True)[0] == status
    assert connection.nothing_more()
    connection.send("GET", "/healthz")
    assert connection.answer()[0] == 200
