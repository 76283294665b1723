"""Resumable uploads over a real network against gunicorn and a Celery worker: the real
tuspy client interrupted and resumed, and a session whose connection drops mid-chunk. A
multi-megabyte file ends loaded, every row exactly once."""

from __future__ import annotations

import gc
import hashlib
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, Upload
from apps.tenants.services import tenant_create
from scripts.stack import running_stack
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROWS = 24_000  # about 4 MB


def big_file(label: str) -> bytes:
    return ndjson_bytes(
        [
            customer_row(customer_id=uid(f"{label}-{n}"), email=f"{label}{n}@example.com")
            for n in range(ROWS)
        ]
    )


def wait_until_loaded(base: str, key: str, token: str) -> Upload:
    """Poll the session's status until its upload has finished; return that upload."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{base}/api/v1/ingest/sessions/{token}/status/", headers={"X-API-Key": key}
        ).json()
        if status["upload_id"]:
            upload = Upload.objects.get(id=status["upload_id"])
            if upload.is_terminal:
                return upload
        time.sleep(0.2)
    pytest.fail(f"session {token} did not end in a finished upload")


# tuspy opens the file again for each chunk and leaves the handles to the garbage collector
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tuspy_interrupted_and_resumed_loads_every_row_once(tmp_path):
    """tuspy sends part of a 4 MB file in 512 KiB checksummed chunks and stops; a new
    uploader finds the upload URL in its store, asks the server for the offset and sends
    the rest. The rows are loaded exactly once."""
    tenant, issued = tenant_create(name="tuspy")
    data = big_file("tus")
    path = tmp_path / "customers_big.ndjson"
    path.write_bytes(data)
    storage = FileStorage(str(tmp_path / "tus-urls.json"))

    with running_stack(
        env={"DATABASE_URL": database_url_of_tests()}, workers=1, log_dir=tmp_path
    ) as base:
        client = tus_client.TusClient(
            f"{base}/api/v1/ingest/tus/", headers={"X-API-Key": issued.raw}
        )

        def uploader():
            return client.uploader(
                str(path),
                chunk_size=512 * 1024,
                metadata={"filename": path.name},
                store_url=True,
                url_storage=storage,
                upload_checksum=True,
            )

        first = uploader()
        first.upload(stop_at=1_500_000)  # "interrupted": this client goes away here
        stopped_at = first.offset
        assert 1_500_000 <= stopped_at < len(data)

        second = uploader()  # as a new process would: the URL from the store
        assert (second.url, second.offset) == (first.url, stopped_at)
        second.upload()
        storage.close()
        gc.collect()  # collect tuspy's stray handles here, under this test's filters
        assert second.offset == len(data)

        token = second.url.rsplit("/", 1)[1]
        upload = wait_until_loaded(base, issued.raw, token)
    assert (upload.state, upload.rows_inserted, upload.rows_total) == ("completed", ROWS, ROWS)
    assert (upload.sha256, upload.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert Customer.objects.filter(tenant=tenant).count() == ROWS


def _send_then_drop(base: str, path: str, headers: dict, body: bytes, declared: int) -> None:
    """Send a request announcing `declared` body bytes, send only `body`, then hang up:
    a connection lost in the middle of a chunk."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = [f"PATCH {path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {declared}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def test_a_session_cut_mid_chunk_resumes_from_the_last_whole_chunk(tmp_path):
    """A first chunk of 1.5 MB arrives whole; the PATCH for the rest dies after another
    1 MB. A session chunk is stored whole or not at all, so resume answers 1.5 MB; the
    rest is sent from there, the checksum matches, and the worker loads every row once."""
    tenant, issued = tenant_create(name="dropped")
    data = big_file("drop")
    key = {"X-API-Key": issued.raw}
    chunk = {**key, "Content-Type": "application/offset+octet-stream"}

    with running_stack(
        env={"DATABASE_URL": database_url_of_tests()}, workers=1, log_dir=tmp_path
    ) as base:
        created = httpx.post(
            f"{base}/api/v1/ingest/sessions/",
            json={
                "filename": "customers_big.ndjson",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
            headers=key,
        )
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        first = httpx.patch(
            f"{base}/api/v1/ingest/sessions/{token}/",
            content=data[:1_500_000],
            headers={**chunk, "Upload-Offset": "0"},
        )
        assert first.headers["Upload-Offset"] == "1500000", first.text
        _send_then_drop(
            base,
            f"/api/v1/ingest/sessions/{token}/",
            {**chunk, "Upload-Offset": "1500000"},
            data[1_500_000:2_500_000],
            declared=len(data) - 1_500_000,
        )
        # the server may still be reading the dropped request: wait until it gave up on it
        time.sleep(1)
        resumed = httpx.post(f"{base}/api/v1/ingest/sessions/{token}/resume/", headers=key)
        assert resumed.status_code == 200, resumed.text
        offset = resumed.json()["offset"]
        assert offset == 1_500_000
        assert resumed.headers["Upload-Offset"] == str(offset)

        last = httpx.post(
            f"{base}/api/v1/ingest/comprehensive/",
            content=data[offset:],
            headers={
                **key,
                "Upload-Token": token,
                "Upload-Offset": str(offset),
                "Content-Type": "application/octet-stream",
            },
        )
        assert last.status_code == 202, last.text
        upload = wait_until_loaded(base, issued.raw, token)
    assert (upload.state, upload.rows_inserted, upload.rows_total) == ("completed", ROWS, ROWS)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()
    assert Customer.objects.filter(tenant=tenant).count() == ROWS
