"""The service behind the web server users run (`gunicorn main.wsgi` from the project root,
which reads gunicorn.conf.py), probed over raw sockets: bodies cut short of their
Content-Length, slow and idle clients beside a fast one, and the errors gunicorn answers by
itself. Django's test client cannot show any of this."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from apps.core.models import IdempotencyKey
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import (
    Blob,
    BlobChunk,
    RecordBatch,
    Upload,
    UploadSession,
)
from apps.tenants.services import tenant_create
from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DATA = ndjson_bytes(
    [customer_row(customer_id=uid(f"cut-{n}"), email=f"cut{n}@example.com") for n in range(40)]
)
ORDERS = ndjson_bytes([order_row(order_id=uid(f"cut-order-{n}")) for n in range(20)])


@contextlib.contextmanager
def gunicorn(tmp_path, *extra: str) -> Iterator[tuple[str, int]]:
    """`gunicorn main.wsgi` from the project root on a free port (plus `extra` flags)."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}", *extra]
    env = {"DATABASE_URL": database_url_of_tests()}
    with running_processes({"web": command}, env=env, log_dir=tmp_path) as processes:
        wait_ready(f"http://127.0.0.1:{port}", processes)
        yield f"http://127.0.0.1:{port}", port


@contextlib.contextmanager
def gunicorn_env(tmp_path, env: dict) -> Iterator[tuple[str, int]]:
    """`gunicorn main.wsgi` with these environment variables (the test database's URL
    among them)."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    with running_processes({"web": command}, env=env, log_dir=tmp_path) as processes:
        wait_ready(f"http://127.0.0.1:{port}", processes)
        yield f"http://127.0.0.1:{port}", port


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock(), gunicorn(tmp_path_factory.mktemp("web")) as running:
        yield running


def exchange(port: int, head: str, body: bytes = b"", *, half_close: bool = True) -> tuple:
    """Send a request head and `body` on a fresh socket, half-close it, and return the
    (status, headers, parsed JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1") + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
            if b"\r\n\r\n" in raw:
                head_part, _, rest = raw.partition(b"\r\n\r\n")
                lines = head_part.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:])
                if len(rest) >= int(headers.get("Content-Length", "0")):
                    break
    head_part, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(rest) if rest else None


def request_head(method: str, path: str, headers: dict) -> str:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def multipart(data: bytes, filename: str) -> tuple[str, bytes]:
    boundary = "cutboundary42"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/x-ndjson\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


@pytest.mark.parametrize(
    ("path", "form", "cut"),
    [
        ("/api/v1/ingest/comprehensive/?filename=customers_cut.ndjson", False, 0.5),
        ("/api/v1/ingest/comprehensive/?filename=customers_cut.ndjson", False, 0.999),
        ("/api/v1/ingest/comprehensive/", True, 0.5),
        ("/api/v1/ingest/comprehensive/", True, 0.999),  # only the closing boundary missing
        ("/api/v1/ingest/orders/?filename=orders_cut.ndjson", False, 0.5),  # legacy
    ],
)
def test_a_body_cut_short_of_its_content_length_is_refused_stored_nowhere_and_its_key_freed(
    server, path, form, cut
):
    """The client announces the whole file, sends part of it and half-closes: 400
    incomplete_body, no blob, no upload, and the same Idempotency-Key then accepts the
    whole file (202) instead of answering 422."""
    base, port = server
    _, issued = tenant_create(name="cut")
    data = ORDERS if "orders" in path else DATA
    content_type, body = (
        multipart(data, "customers_cut.ndjson") if form else ("application/x-ndjson", data)
    )
    headers = {"X-API-Key": issued.raw, "Idempotency-Key": "same-key", "Content-Type": content_type}
    sent = int(len(body) * cut)
    status, answer_headers, problem = exchange(
        port, request_head("POST", path, {**headers, "Content-Length": len(body)}), body[:sent]
    )
    assert (status, answer_headers["content-type"]) == (400, "application/problem+json")
    assert answer_headers["connection"] == "close"  # and it is: the rest never comes
    assert problem["code"] == "incomplete_body"
    assert f"after {sent} of the {len(body)} bytes" in problem["detail"]
    assert (Upload.objects.count(), Blob.objects.count(), BlobChunk.objects.count()) == (0, 0, 0)
    assert not IdempotencyKey.objects.exists()

    whole = httpx.post(f"{base}{path}", content=body, headers=headers, timeout=30)
    assert whole.status_code == 202, whole.text
    assert Upload.objects.get().size_bytes == len(data)


@pytest.mark.parametrize("read_once", [0.5, 0.999], ids=["half", "all-but-a-byte"])
def test_a_live_record_batch_cut_short_is_refused_and_nothing_accepted(server, read_once):
    """A batch of records whose body ends before its Content-Length (read by the view in
    one call) is 400 incomplete_body: no batch, no part, and its key is free again."""
    base, port = server
    _, issued = tenant_create(name="cut-records")
    headers = {
        "X-API-Key": issued.raw,
        "Idempotency-Key": "batch-key",
        "Content-Type": "application/x-ndjson",
    }
    path = "/api/v1/ingest/records/customers/"
    sent = int(len(DATA) * read_once)
    status, answer_headers, problem = exchange(
        port, request_head("POST", path, {**headers, "Content-Length": len(DATA)}), DATA[:sent]
    )
    assert (status, problem["code"]) == (400, "incomplete_body")
    assert answer_headers["connection"] == "close"
    assert (RecordBatch.objects.count(), Upload.objects.count(), Blob.objects.count()) == (0, 0, 0)
    assert not IdempotencyKey.objects.exists()
    whole = httpx.post(f"{base}{path}", content=DATA, headers=headers, timeout=30)
    assert (whole.status_code, whole.json()["records"]) == (202, 40), whole.text


def test_a_session_chunk_cut_short_stores_nothing_and_says_where_to_resume(server):
    """A resumable session's chunk is stored whole or not at all: cut after half, it is
    400 with Upload-Offset at the last whole chunk, and the session's offset is unchanged."""
    base, port = server
    _, issued = tenant_create(name="cut-session")
    key = {"X-API-Key": issued.raw}
    created = httpx.post(
        f"{base}/api/v1/ingest/sessions/",
        json={"filename": "customers_s.ndjson", "size": len(DATA)},
        headers=key,
    ).json()
    first = httpx.post(
        f"{base}/api/v1/ingest/comprehensive/",
        content=DATA[:1000],
        headers={
            **key,
            "Upload-Token": created["token"],
            "Upload-Offset": "0",
            "Content-Type": "application/octet-stream",
        },
    )
    assert (first.status_code, first.headers["Upload-Offset"]) == (200, "1000")
    head = request_head(
        "POST",
        "/api/v1/ingest/comprehensive/",
        {
            **key,
            "Upload-Token": created["token"],
            "Upload-Offset": "1000",
            "Content-Type": "application/octet-stream",
            "Content-Length": len(DATA) - 1000,
        },
    )
    status, headers, problem = exchange(port, head, DATA[1000:3000])
    assert (status, problem["code"], headers["upload-offset"]) == (400, "chunk_incomplete", "1000")
    assert UploadSession.objects.get(token=created["token"]).offset == 1000
    assert not Upload.objects.exists()


def test_a_tus_patch_cut_short_keeps_what_arrived_and_counts_nothing_more(server):
    """tus: the bytes that did arrive are kept (HEAD tells the client where to resume),
    never the bytes the Content-Length only announced."""
    base, port = server
    _, issued = tenant_create(name="cut-tus")
    tus = {"X-API-Key": issued.raw, "Tus-Resumable": "1.0.0"}
    created = httpx.post(
        f"{base}/api/v1/ingest/tus/",
        headers={
            **tus,
            "Upload-Length": str(len(DATA)),
            "Upload-Metadata": "filename Y3VzdG9tZXJzX3QubmRqc29u",
        },
    )
    assert created.status_code == 201, created.text
    path = httpx.URL(created.headers["Location"]).path
    head = request_head(
        "PATCH",
        path,
        {
            **tus,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": len(DATA),
        },
    )
    status, headers, problem = exchange(port, head, DATA[:1500])
    assert (status, problem["code"], headers["upload-offset"]) == (400, "chunk_incomplete", "1500")
    assert httpx.head(f"{base}{path}", headers=tus).headers["Upload-Offset"] == "1500"
    rest = httpx.patch(
        f"{base}{path}",
        content=DATA[1500:],
        headers={**tus, "Upload-Offset": "1500", "Content-Type": "application/offset+octet-stream"},
    )
    assert (rest.status_code, rest.headers["Upload-Offset"]) == (204, str(len(DATA)))
    upload = Upload.objects.get()
    assert upload.sha256 == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 100_000 + "\r\n\r\n", 431),
        ("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        ("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("GET /" + "p" * 5000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        ("POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x-custom, chunked\r\n\r\n", 501),
    ],
    ids=[
        "header-100KB",
        "length-abc",
        "length-negative",
        "length-and-chunked",
        "path-5000",
        "version",
        "unknown-coding",
    ],
)
def test_errors_gunicorn_answers_itself_are_problem_json(server, head, status):
    """A request gunicorn refuses before Django sees it still gets problem+json."""
    _, port = server
    got, headers, problem = exchange(port, head)
    assert (got, headers["content-type"]) == (status, "application/problem+json")
    assert (problem["status"], problem["type"]) == (status, "about:blank")
    assert problem["detail"]
    assert headers["x-request-id"] == problem["request_id"]


def test_a_head_request_gunicorn_refuses_is_answered_without_a_body(server):
    """A HEAD with a Content-Length gunicorn refuses: the problem's head, with its
    X-Request-Id and Content-Length, and no body."""
    _, port = server
    got, headers, problem = exchange(
        port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    )
    assert (got, headers["content-type"], problem) == (400, "application/problem+json", None)
    assert int(headers["content-length"]) > 0
    assert headers["x-request-id"]


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked"])
def test_a_body_in_a_transfer_coding_it_does_not_decode_is_501_and_stores_nothing(server, coding):
    """gunicorn passes a gzip or deflate transfer coding through undecoded: an upload or a
    batch sent so is refused (501), never stored compressed as if it were the data."""
    _, port = server
    _, issued = tenant_create(name="coded")
    squeezed = _chunked(gzip.compress(DATA))
    for path in ("/api/v1/ingest/records/customers/", "/api/v1/ingest/comprehensive/"):
        head = request_head(
            "POST",
            f"{path}?filename=customers_coded.ndjson",
            {"X-API-Key": issued.raw, "Transfer-Encoding": coding},
        )
        status, headers, problem = exchange(port, head, squeezed)
        assert (status, headers["content-type"]) == (501, "application/problem+json")
        assert problem["code"] == "unsupported_transfer_coding"
        assert problem["detail"].startswith(f"Transfer-Encoding {coding.split(',')[0]} is not")
        assert headers["connection"] == "close"
    assert (RecordBatch.objects.count(), Upload.objects.count(), Blob.objects.count()) == (0, 0, 0)


@pytest.mark.parametrize(
    ("path", "coding"),
    [("/api/v1/ingest/comprehensive/", "Chunked"), ("/api/v1/ingest/orders/", "CHUNKED")],
)
def test_a_chunked_body_is_taken_whatever_the_codings_case(server, path, coding):
    """Transfer codings are case-insensitive (RFC 9112): a raw upload sent `Chunked` is
    stored whole, as one sent `chunked` (it was refused as an empty body)."""
    _, port = server
    _, issued = tenant_create(name=f"cased-{coding}")
    head = request_head(
        "POST",
        f"{path}?filename=orders_cased.ndjson",
        {"X-API-Key": issued.raw, "Transfer-Encoding": coding},
    )
    status, _, answer = exchange(port, head, _chunked(ORDERS))
    assert status == 202, answer
    assert Upload.objects.get(id=answer["id"]).size_bytes == len(ORDERS)


def test_a_chunked_json_body_is_read_by_every_view_that_parses_one(server, settings):
    """A rules PUT, a session's creation and a webhook's registration sent chunked (no
    Content-Length) are read whole, as with one (they were read as empty: "required"); a
    chunked one over WEB_BUFFER_BODY_BYTES for such a view is 413."""
    _, port = server
    tenant, issued = tenant_create(name="chunked-json")
    sent = {
        ("PUT", "/api/v1/ingest/rules/products/"): (
            {"schema": {"properties": {"sku": {"maxLength": 3}}}},
            200,
        ),
        ("POST", "/api/v1/ingest/sessions/"): ({"filename": "customers.ndjson", "size": 9}, 201),
        ("POST", "/api/v1/webhooks/"): (
            {"url": "https://93.184.216.34/hook", "events": ["upload.failed"]},
            201,
        ),
    }
    for (method, path), (body, expected) in sent.items():
        headers = {
            "X-API-Key": issued.raw,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        }
        status, _, answer = exchange(
            port, request_head(method, path, headers), _chunked(json.dumps(body).encode())
        )
        assert status == expected, (path, answer)
    assert UploadSession.objects.get(tenant=tenant).filename == "customers.ndjson"
    head = request_head(
        "POST",
        "/api/v1/webhooks/",
        {
            "X-API-Key": issued.raw,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    )
    big = b" " * (settings.WEB_BUFFER_BODY_BYTES + 1)
    status, _, answer = exchange(port, head, _chunked(big))
    assert (status, answer["code"]) == (413, "payload_too_large")


def _answer_until_closed(sock) -> bytes:
    """Everything the server sends until it closes its side (its answer's head and body
    may come in separate packets)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw


def test_a_chunked_body_refused_before_its_end_closes_the_connection(server, settings):
    """A 401 before a chunked upload's body is read, and a chunked live batch past its
    limit (413, the batch's own message): `Connection: close`, the rest never read (it
    was read and thrown away, however long, on a kept-alive connection)."""
    _, port = server
    _, issued = tenant_create(name="chunked-refused")
    over = b"x" * (settings.LIVE_MAX_BYTES + 65536)  # gunicorn reads a little ahead
    for key, path, status, body in (
        ("nope", "/api/v1/ingest/comprehensive/?filename=customers_c.ndjson", 401, b"{}\n"),
        (issued.raw, "/api/v1/ingest/records/customers/", 413, over),
    ):
        head = request_head(
            "POST",
            path,
            {
                "X-API-Key": key,
                "Content-Type": "application/x-ndjson",
                "Transfer-Encoding": "chunked",
            },
        )
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            # the head and a first chunk; the body goes on (no last chunk)
            sock.sendall(head.encode("latin-1") + f"{len(body):x}\r\n".encode() + body + b"\r\n")
            raw = _answer_until_closed(sock)
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
        assert b"\r\nConnection: close\r\n" in raw
    assert b"larger than the limit" in raw


def test_idle_chunked_live_batches_hold_no_streaming_slot(tmp_path):
    """Live batches sent chunked and left unfinished are read first (they are at most
    LIVE_MAX_BYTES): with one streaming slot, a large upload still streams (it was 503
    `too_many_uploads` while slow chunked batches held the slots)."""
    env = {
        "DATABASE_URL": database_url_of_tests(),
        "WEB_CONCURRENCY": "1",
        "WEB_MAX_STREAMING_BODIES": "1",
        "WEB_BUFFER_BODY_BYTES": "1000",
    }
    _, issued = tenant_create(name="idle-chunked")
    with gunicorn_env(tmp_path, env) as (_, port):
        idle = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            head = request_head(
                "POST",
                "/api/v1/ingest/records/customers/",
                {"X-API-Key": issued.raw, "Transfer-Encoding": "chunked"},
            )
            sock.sendall(head.encode("latin-1") + b"1\r\n{\r\n")
            idle.append(sock)
        try:
            time.sleep(0.5)
            head = request_head(
                "POST",
                "/api/v1/ingest/comprehensive/?filename=customers_streamed.ndjson",
                {"X-API-Key": issued.raw, "Content-Length": len(DATA)},
            )
            status, _, answer = exchange(port, head, DATA)
        finally:
            for sock in idle:
                sock.close()
    assert status == 202, answer


def test_an_idempotency_key_header_sent_twice_is_refused(server):
    """Two `Idempotency-Key` lines reach the application joined with a comma: 400
    `bad_key`, and no batch is stored under either key."""
    _, port = server
    tenant, issued = tenant_create(name="two-keys")
    body = ndjson_bytes([customer_row(customer_id=uid("two-keys"))])
    head = request_head(
        "POST",
        "/api/v1/ingest/records/customers/",
        {
            "X-API-Key": issued.raw,
            "Content-Type": "application/x-ndjson",
            "Content-Length": len(body),
        },
    )
    head = head.replace("\r\n\r\n", "\r\nIdempotency-Key: first\r\nIdempotency-Key: second\r\n\r\n")
    status, _, answer = exchange(port, head, body)
    assert (status, answer["code"]) == (400, "bad_key"), answer
    assert not RecordBatch.objects.filter(tenant=tenant).exists()


def test_100_continue_is_sent_only_when_the_body_is_read(server):
    """`Expect: 100-continue`: a request refused before its body is read (a wrong key, a
    body over the limit) is answered at once, without `100 Continue`, and its connection
    closed (the client was never told to send the body); one that is taken gets `100
    Continue`, then, once its body is sent, its answer."""
    _, port = server
    _, issued = tenant_create(name="expecting")
    # bodies over WEB_BUFFER_BODY_BYTES: one up to it is read before the view checks the key
    for key, length, status in (("nope", 20_000_000, 401), (issued.raw, 6_442_450_944, 413)):
        head = request_head(
            "POST",
            "/api/v1/ingest/comprehensive/?filename=customers_expecting.ndjson",
            {"X-API-Key": key, "Content-Length": length, "Expect": "100-continue"},
        )
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(head.encode("latin-1"))
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
        assert b"\r\nConnection: close\r\n" in raw
    head = request_head(
        "POST",
        "/api/v1/ingest/comprehensive/?filename=customers_expecting.ndjson",
        {"X-API-Key": issued.raw, "Content-Length": len(DATA), "Expect": "100-continue"},
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1"))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(DATA)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:80]
    assert Upload.objects.filter(filename="customers_expecting.ndjson").count() == 1


@pytest.mark.parametrize("expect", [True, False], ids=["expect", "no-expect"])
def test_a_live_batch_over_its_limit_is_refused_before_its_body_is_read(server, expect):
    """A live batch whose Content-Length is over `LIVE_MAX_BYTES` (but within what the web
    server reads into memory first) is answered 413 at once, without `100 Continue` and
    without waiting for its body, and its connection closed: the unread body is not taken
    for the next request."""
    _, port = server
    tenant, issued = tenant_create(name=f"over-the-limit-{expect}")
    length = settings.LIVE_MAX_BYTES + 1  # the server's defaults, as the tests' settings
    assert length < settings.WEB_BUFFER_BODY_BYTES
    headers = {"X-API-Key": issued.raw, "Content-Length": length}
    if expect:
        headers["Expect"] = "100-continue"
    head = request_head("POST", "/api/v1/ingest/records/customers/", headers)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1"))  # and no body at all
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:80]
    assert b"100 Continue" not in raw
    assert b"\r\nConnection: close\r\n" in raw
    assert b"larger than the limit" in raw
    assert not RecordBatch.objects.filter(tenant_id=tenant.id).exists()


def _hold_slow_clients(port: int, idle: int, trickle: int, stop: threading.Event) -> list:
    """Open `idle` sockets that send half a request line and wait, and `trickle` uploads
    that send a byte every 0.2 s; keep them open until `stop`."""
    sockets = []
    for n in range(idle):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HT" if n % 2 else b"")
        sockets.append(sock)
    uploads = []
    for _ in range(trickle):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /api/v1/ingest/comprehensive/ HTTP/1.1\r\nHost: x\r\n"
            b"X-API-Key: nope\r\nContent-Length: 100000\r\n\r\n"
        )
        uploads.append(sock)

    def trickle_bytes():
        while not stop.wait(0.2):
            for sock in uploads:
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")

    threading.Thread(target=trickle_bytes, daemon=True).start()
    return sockets + uploads


@pytest.mark.parametrize(
    "flags", [(), ("--workers", "1", "--threads", "2")], ids=["conf", "threads-flag"]
)
def test_slow_and_idle_clients_never_stop_a_fast_one(tmp_path, flags):
    """300 idle connections and 20 uploads trickling a byte at a time hold sockets open;
    a fast client still gets /healthz and a whole upload answered at once, also when
    gunicorn is started with `--workers 1 --threads 2` added on the command line."""
    _, issued = tenant_create(name="fast")
    stop = threading.Event()
    with gunicorn(tmp_path, *flags) as (base, port):
        held = _hold_slow_clients(port, idle=300, trickle=20, stop=stop)
        try:
            time.sleep(1)  # let the server take them all in
            started = time.monotonic()
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            upload = httpx.post(
                f"{base}/api/v1/ingest/comprehensive/?filename=customers_fast.ndjson",
                content=DATA,
                headers={"X-API-Key": issued.raw},
                timeout=10,
            )
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            for sock in held:
                sock.close()
    assert upload.status_code == 202, upload.text
    assert elapsed < 3, f"the fast client waited {elapsed:.1f}s behind slow ones"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_readyz_answers_503_soon_when_the_broker_takes_connections_and_never_answers(tmp_path):
    """A broker address whose listener accepts and then says nothing: /readyz is 503 within
    a few seconds (it waited for ever), and an upload is still answered (its task is sent
    later), instead of hanging its request."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(silent.accept()[0])

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    _, issued = tenant_create(name="silent-broker")
    env = {
        "DATABASE_URL": database_url_of_tests(),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
    }
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    base = f"http://127.0.0.1:{port}"
    try:
        with running_processes({"web": command}, env=env, log_dir=tmp_path):
            deadline = time.monotonic() + 30
            while not _answers(f"{base}/healthz"):  # not ready: up
                assert time.monotonic() < deadline, "the web server did not start"
                time.sleep(0.3)
            started = time.monotonic()
            ready = httpx.get(f"{base}/readyz", timeout=30)
            waited = time.monotonic() - started
            upload = httpx.post(
                f"{base}/api/v1/ingest/comprehensive/?filename=customers_silent_broker.ndjson",
                content=DATA,
                headers={"X-API-Key": issued.raw},
                timeout=60,
            )
    finally:
        stop.set()
        acceptor.join()
        for sock in [*held, silent]:
            sock.close()
    assert (ready.status_code, ready.json()["database"]) == (503, "ok"), ready.text
    assert ready.json()["broker"].startswith("error")
    assert waited < 5
    assert upload.status_code == 202, upload.text
    assert Upload.objects.get().state == "queued"


def test_a_database_that_refuses_connections_is_503_with_retry_after(tmp_path):
    """With PostgreSQL unreachable (refused, as when it is restarting or has no free
    connection slot), a keyed request is 503 problem+json with Retry-After, not a 500."""
    port = free_port()
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    with running_processes({"web": command}, env={"DATABASE_URL": nowhere}, log_dir=tmp_path):
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        response = httpx.get(
            f"{base}/api/v1/ingest/uploads/", headers={"X-API-Key": "ck_0123456789ab_" + "A" * 43}
        )
    assert (response.status_code, response.headers["content-type"]) == (
        503,
        "application/problem+json",
    )
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "database_unavailable"


def _slow_big_uploads(port: int, key: str, count: int) -> list[socket.socket]:
    """`count` raw uploads that announce 50 MB and send 100 bytes: each streams into
    PostgreSQL, holding a pooled connection, while the rest of its body does not come."""
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = request_head(
            "POST",
            f"/api/v1/ingest/comprehensive/?filename=customers_big_{n}.ndjson",
            {"X-API-Key": key, "Content-Length": 50_000_000},
        )
        sock.sendall(head.encode() + DATA[:100])
        sockets.append(sock)
    return sockets


def test_a_request_finding_every_pooled_connection_busy_is_503_saying_so(tmp_path):
    """Two slow big uploads hold the web process's two pooled connections: a keyed GET
    waits DATABASE_POOL_TIMEOUT for one, then is 503 `database_busy` with Retry-After. It
    said the database was unavailable, and an operator looked at the wrong thing."""
    _, issued = tenant_create(name="pool-busy")
    key = issued.raw
    env = {
        "WEB_MAX_STREAMING_BODIES": "2",
        "DATABASE_POOL_SIZE": "2",
        "DATABASE_POOL_TIMEOUT": "0.5",
        "WEB_CONCURRENCY": "1",
        "DATABASE_URL": database_url_of_tests(),
    }
    held = []
    with gunicorn_env(tmp_path, env) as (base, port):
        try:
            held += _slow_big_uploads(port, key, 2)
            time.sleep(1)  # both streaming, each with its connection
            response = httpx.get(f"{base}/api/v1/ingest/uploads/", headers={"X-API-Key": key})
        finally:
            for sock in held:
                sock.close()
    assert (response.status_code, response.json()["code"]) == (503, "database_busy")
    assert response.json()["detail"] == (
        "Every database connection of this server is busy; retry shortly."
    )
    assert response.headers["retry-after"] == "5"


def _database_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_slow_bodies_never_use_up_the_database_connections(tmp_path):
    """60 keyed clients that send a part of a small JSON body and stop hold no database
    connection while they wait; 10 slow big uploads hold at most WEB_MAX_STREAMING_BODIES
    (here 4; the rest answer 503 with Retry-After); a fast client is served meanwhile, and
    a client silent for WEB_CLIENT_TIMEOUT is dropped with its request refused."""
    _, issued = tenant_create(name="slow-bodies")
    key = issued.raw
    env = {"WEB_MAX_STREAMING_BODIES": "4", "WEB_CLIENT_TIMEOUT": "3", "WEB_CONCURRENCY": "1"}
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    env["DATABASE_URL"] = database_url_of_tests()
    held = []
    with running_processes({"web": command}, env=env, log_dir=tmp_path) as processes:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, processes)
        idle = _database_connections()
        try:
            for _ in range(60):
                sock = socket.create_connection(("127.0.0.1", port))
                head = request_head(
                    "POST",
                    "/api/v1/ingest/sessions/",
                    {"X-API-Key": key, "Content-Type": "application/json", "Content-Length": 1000},
                )
                sock.sendall(head.encode() + b"{")
                held.append(sock)
            big = []
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                head = request_head(
                    "POST",
                    "/api/v1/ingest/comprehensive/?filename=customers_slow.ndjson",
                    {"X-API-Key": key, "Content-Length": 50_000_000},
                )
                sock.sendall(head.encode() + DATA[:100])
                big.append(sock)
            held += big
            time.sleep(1)
            busy = _database_connections()
            fast = httpx.get(f"{base}/api/v1/ingest/uploads/", headers={"X-API-Key": key})
            refused = []
            for sock in big:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    refused.append(sock.recv(65536))
        finally:
            for sock in held:
                sock.close()
    assert fast.status_code == 200
    assert busy - idle <= 4 + 1, f"{busy - idle} database connections held by slow clients"
    assert len(refused) == 6
    assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused)
    assert all(b"Retry-After: 5" in answer for answer in refused)


def test_big_uploads_streaming_at_once_leave_a_connection_for_a_small_request(tmp_path):
    """As many slow big uploads as a web process streams at once (here 10, each holding a
    pooled database connection while its body arrives) still leave the pool a connection
    for a small request: the pool is sized for them plus the rest."""
    _, issued = tenant_create(name="streaming-pool")
    key = issued.raw
    env = {
        "WEB_MAX_STREAMING_BODIES": "10",
        "WEB_CONCURRENCY": "1",
        "DATABASE_URL": database_url_of_tests(),
    }
    big = []
    with gunicorn_env(tmp_path, env) as (base, port):
        idle = _database_connections()
        try:
            big += _slow_big_uploads(port, key, 10)
            time.sleep(1)
            streaming = _database_connections() - idle
            started = time.monotonic()
            fast = httpx.get(f"{base}/api/v1/ingest/uploads/", headers={"X-API-Key": key})
            waited = time.monotonic() - started
        finally:
            for sock in big:
                sock.close()
    assert fast.status_code == 200, fast.text
    # (with the pool at 8, as before it was sized for them, the small request was a 503)
    assert streaming >= 8, f"only {streaming} connections held: the uploads did not stream"
    assert waited < 1.5


def test_a_client_silent_mid_body_is_dropped_after_the_client_timeout(tmp_path):
    """A body that stops arriving for WEB_CLIENT_TIMEOUT (here 2 s) is refused as
    incomplete and its connection closed; nothing is stored."""
    _, issued = tenant_create(name="silent")
    env = {"WEB_CLIENT_TIMEOUT": "2", "DATABASE_URL": database_url_of_tests()}
    with gunicorn_env(tmp_path, env) as (_, port):
        head = request_head(
            "POST",
            "/api/v1/ingest/comprehensive/?filename=customers_silent.ndjson",
            {"X-API-Key": issued.raw, "Content-Length": 20_000_000},
        )
        started = time.monotonic()
        status, headers, problem = exchange(port, head, DATA, half_close=False)
        waited = time.monotonic() - started
    assert (status, problem["code"]) == (400, "incomplete_body")
    # not how many bytes were read whole before the read that failed: the server had
    # some of that read's bytes too
    detail = "The request body of 20000000 bytes broke off before its end (timed out)."
    assert problem["detail"] == detail
    assert headers["connection"] == "close"
    assert 1.5 < waited < 10
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def _answer(sock: socket.socket) -> tuple[dict, bool]:
    """Read one answer off a kept-alive socket: its status and headers (lower-cased names),
    and whether the server closed the connection after it (rather than a second of quiet)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer"
        raw += chunk
    head_part, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of an answer"
        rest += chunk
    assert len(rest) == int(headers["content-length"]), "more than the answer arrived"
    sock.settimeout(1)
    try:
        closed = sock.recv(65536) == b""
    except TimeoutError:
        closed = False
    finally:
        sock.settimeout(15)
    return {"status": int(lines[0].split()[1]), **headers}, closed


def test_a_kept_alive_connection_is_closed_after_its_share_of_requests(tmp_path):
    """After WEB_KEEPALIVE_REQUESTS answers (here 3) on one connection the last says
    `Connection: close` and the server closes it, so that a client's next connection goes
    to whichever process is free; a new connection is served again."""
    env = {"WEB_KEEPALIVE_REQUESTS": "3", "DATABASE_URL": database_url_of_tests()}
    with gunicorn_env(tmp_path, env) as (_, port):
        head = request_head("GET", "/healthz", {}).encode()
        seen = []
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            for _ in range(3):
                sock.sendall(head)
                answer, closed = _answer(sock)
                seen.append((answer["status"], answer["connection"], closed))
        kept, closed = (200, "keep-alive", False), (200, "close", True)
        assert seen == [kept, kept, closed]
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(head)
            assert _answer(sock)[0]["status"] == 200
