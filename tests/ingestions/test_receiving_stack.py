"""Process while receiving through the real stack: gunicorn (its gevent worker) takes a raw
body (or a tus PATCH) in two parts over a plain socket, a Celery worker (prefork) loads it
from PostgreSQL while the second part is held back; then the body ends, is cut, or a
process is SIGKILLed (docs/engine.md#process-while-receiving)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys

import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Blob, Customer, Upload, UploadSession
from apps.tenants.services import tenant_create
from scripts.stack import BIN, ROOT, free_port, wait_ready
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROWS = 40_000
STALL_SECONDS = 3  # INGEST_RECEIVE_STALL_SECONDS of the workers
WORKER_ENV = {
    "INGEST_RECEIVE_STALL_SECONDS": str(STALL_SECONDS),
    # the tests hold the second half back as long as they need: the worker waits for it
    "INGEST_RECEIVE_PATIENCE_SECONDS": "600",
    "UPLOAD_STUCK_SECONDS": "2",  # a dead worker's upload is sent again soon
    "WORKER_HOUSEKEEPING_SECONDS": "1",
}


@pytest.fixture
def web(queue, tmp_path):
    """gunicorn as configured (gevent worker), in a process group of its own, sending tasks
    to the test's queue; any body over 64 KiB is processed while it arrives. Yields
    (host, port, process)."""
    with _gunicorn(queue, tmp_path) as server:
        yield server


@contextlib.contextmanager
def _gunicorn(queue, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "CELERY_QUEUE": queue,
        "WEB_BUFFER_BODY_BYTES": str(64 * 1024),
        "WEB_CONCURRENCY": "1",
    }
    log = tmp_path / "web.log"
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", {"web": process})
        yield "127.0.0.1", port, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        sys.stdout.write(f"--- web.log ---\n{log.read_text(errors='replace')[-4000:]}\n")


def _customers(label: str) -> bytes:
    rows = [
        customer_row(customer_id=uid(f"{label}-{n}"), email=f"{label}{n}@example.com")
        for n in range(ROWS)
    ]
    return ndjson_bytes(rows)


def _start_post(web, api_key, data: bytes) -> http.client.HTTPConnection:
    """POST `data` as a raw body, sending its first half only."""
    host, port, _ = web
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.putrequest("POST", "/api/v1/ingest/comprehensive/?filename=customers_1.ndjson")
    conn.putheader("X-API-Key", api_key.raw)
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    conn.send(data[: len(data) // 2])
    return conn


def _finish_post(conn: http.client.HTTPConnection, data: bytes) -> tuple[int, dict]:
    conn.send(data[len(data) // 2 :])
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def _loading(tenant, *, besides=None) -> Upload:
    """The tenant's upload (other than `besides`) once a worker has loaded rows of it."""

    def found():
        upload = Upload.objects.filter(tenant=tenant).exclude(id=besides).first()
        return upload if upload and upload.state == "processing" and upload.rows_done else None

    return wait_for(found, timeout=60, interval=0.05)


def _finished(upload_id) -> Upload:
    return wait_for(
        lambda: (u := Upload.objects.get(id=upload_id)).is_terminal and u, timeout=60, interval=0.1
    )


def test_a_big_upload_is_loaded_while_its_body_arrives(web, celery_processes):
    celery_processes(WORKER_ENV)
    tenant, api_key = tenant_create(name="overlap")
    data = _customers("a")
    conn = _start_post(web, api_key, data)
    upload = _loading(tenant)  # rows loaded from the first half, the second not sent
    assert (upload.sha256, Customer.objects.filter(tenant=tenant).count()) == ("", 0)
    status, body = _finish_post(conn, data)
    assert status == 202
    assert body["id"] == str(upload.id)
    done = _finished(upload.id)
    assert (done.state, done.rows_inserted, done.bytes_done) == ("completed", ROWS, len(data))
    assert Customer.objects.filter(tenant=tenant).count() == ROWS


def test_bytes_found_at_the_end_to_be_received_before_answer_200_with_the_original(
    web, celery_processes
):
    celery_processes(WORKER_ENV)
    tenant, api_key = tenant_create(name="twice")
    data = _customers("b")
    status, first = _finish_post(_start_post(web, api_key, data), data)
    assert status == 202
    original = _finished(first["id"])
    conn = _start_post(web, api_key, data)
    again = _loading(tenant, besides=original.id)
    status, body = _finish_post(conn, data)
    assert (status, body["id"]) == (200, str(original.id))
    wait_for(lambda: not Upload.objects.filter(id=again.id).exists(), timeout=30)
    assert not Blob.objects.filter(id=again.blob_id).exists()
    assert list(Upload.objects.filter(tenant=tenant).values_list("id", flat=True)) == [original.id]
    original.refresh_from_db()
    assert (original.rows_inserted, original.rows_unchanged) == (ROWS, 0)
    assert Customer.objects.filter(tenant=tenant).count() == ROWS


def test_a_client_that_disconnects_mid_body_leaves_nothing_loaded(web, celery_processes):
    celery_processes(WORKER_ENV)
    tenant, api_key = tenant_create(name="cut")
    data = _customers("c")
    conn = _start_post(web, api_key, data)
    upload = _loading(tenant)
    conn.close()
    wait_for(lambda: not Upload.objects.filter(id=upload.id).exists(), timeout=30)
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert Customer.objects.filter(tenant=tenant).count() == 0


def test_a_worker_sigkilled_mid_load_leaves_it_to_another_which_loads_it_once(
    web, celery_processes
):
    # The body's second half waits until the new worker is up, seconds on a loaded
    # machine: past STALL_SECONDS of silence, the new worker's housekeeping could fail the
    # upload as incomplete before it sends it again, which is not what this test is about.
    env = {**WORKER_ENV, "INGEST_RECEIVE_STALL_SECONDS": "60"}
    first, _ = celery_processes(env)
    tenant, api_key = tenant_create(name="killed")
    data = _customers("d")
    conn = _start_post(web, api_key, data)
    upload = _loading(tenant)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    celery_processes(env)  # no beat: its own housekeeping sends the upload again
    status, body = _finish_post(conn, data)
    assert (status, body.get("id")) == (202, str(upload.id)), body
    done = _finished(upload.id)
    assert (done.state, done.rows_inserted, done.rows_unchanged) == ("completed", ROWS, 0)
    assert done.started_at > upload.started_at  # run again, from the stored pieces
    assert Customer.objects.filter(tenant=tenant).count() == ROWS


def test_a_web_server_sigkilled_mid_body_leaves_the_upload_failed_and_nothing_loaded(
    web, celery_processes
):
    celery_processes(WORKER_ENV)
    tenant, api_key = tenant_create(name="web-killed")
    data = _customers("e")
    conn = _start_post(web, api_key, data)
    upload = _loading(tenant)
    os.killpg(web[2].pid, signal.SIGKILL)
    web[2].wait(timeout=30)
    conn.close()
    done = _finished(upload.id)  # the worker gives up after STALL_SECONDS with no byte
    assert (done.state, done.error_code) == ("failed", "incomplete_upload")
    assert done.blob_id is None
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert Customer.objects.filter(tenant=tenant).count() == 0


def _tus_create(web, api_key, size: int) -> str:
    host, port, _ = web
    conn = http.client.HTTPConnection(host, port, timeout=60)
    filename = base64.b64encode(b"customers_1.ndjson").decode()
    headers = {
        "X-API-Key": api_key.raw,
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(size),
        "Upload-Metadata": f"filename {filename}",
    }
    conn.request("POST", "/api/v1/ingest/tus/", headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 201
    return response.getheader("Location").rsplit("/", 1)[1]


def _tus_patch(web, api_key, token: str, data: bytes, offset: int) -> http.client.HTTPConnection:
    """A PATCH of `data` from `offset`; its first half sent only."""
    host, port, _ = web
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.putrequest("PATCH", f"/api/v1/ingest/tus/{token}")
    for name, value in (
        ("X-API-Key", api_key.raw),
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Offset", str(offset)),
        ("Content-Type", "application/offset+octet-stream"),
        ("Content-Length", str(len(data))),
    ):
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(data[: len(data) // 2])
    return conn


def _tus_finish(conn: http.client.HTTPConnection, data: bytes) -> http.client.HTTPResponse:
    conn.send(data[len(data) // 2 :])
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _tus_loading(web, name: str, label: str):
    """A new tenant's tus upload, its PATCH half sent and a worker loading it: (tenant, API
    key, the file, the session token, the PATCH's connection, the upload)."""
    tenant, api_key = tenant_create(name=name)
    data = _customers(label)
    token = _tus_create(web, api_key, len(data))
    conn = _tus_patch(web, api_key, token, data, 0)
    return tenant, api_key, data, token, conn, _loading(tenant)


def test_a_tus_upload_is_loaded_while_its_patch_arrives(web, celery_processes):
    celery_processes(WORKER_ENV)
    tenant, _, data, _, conn, upload = _tus_loading(web, "tus-overlap", "f")
    assert (upload.sha256, Customer.objects.filter(tenant=tenant).count()) == ("", 0)
    response = _tus_finish(conn, data)
    assert response.status == 204
    assert response.getheader("Upload-Result").endswith(f"/uploads/{upload.id}/")
    done = _finished(upload.id)
    assert (done.state, done.rows_inserted, done.bytes_done) == ("completed", ROWS, len(data))
    assert Customer.objects.filter(tenant=tenant).count() == ROWS


def test_a_tus_upload_whose_web_server_was_sigkilled_resumes_and_loads_once(
    web, celery_processes, queue, tmp_path
):
    """The web server dies mid-PATCH while a worker follows the bytes: the pieces stored
    stay, the upload waits (its session is open: no stall fails it), and the client
    resumes from the offset the session reports, through another server."""
    celery_processes(WORKER_ENV)
    tenant, api_key, data, token, conn, upload = _tus_loading(web, "tus-web-killed", "g")
    os.killpg(web[2].pid, signal.SIGKILL)
    web[2].wait(timeout=30)
    conn.close()
    # the worker's stall check (STALL_SECONDS) puts it back rather than failing it
    wait_for(lambda: Upload.objects.get(id=upload.id).state == "queued", timeout=30)
    offset = UploadSession.objects.get(token=token).offset
    assert 0 < offset < len(data)
    assert Customer.objects.filter(tenant=tenant).count() == 0
    with _gunicorn(queue, tmp_path) as again:
        rest = data[offset:]
        response = _tus_finish(_tus_patch(again, api_key, token, rest, offset), rest)
    assert response.status == 204
    done = _finished(upload.id)
    assert (done.state, done.rows_inserted, done.rows_unchanged) == ("completed", ROWS, 0)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert Customer.objects.filter(tenant=tenant).count() == ROWS
