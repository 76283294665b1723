"""A request with an Idempotency-Key whose work is stored but not its answer (its web
process killed in between): the client's retry with the same key replays the answer, and
nothing is done twice.

The gap is held open from outside: a `SHARE` lock on `record_merge_requests` lets a live
batch be stored, and stops its request at the merge request it sends once the batch is
committed (an `INSERT` there). The web server's workers are killed while it waits."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time

import psutil
import psycopg
import pytest

from apps.core import idempotency
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import RecordBatch, UploadSession
from apps.tenants.services import tenant_create
from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)


def _post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _kill_workers(master: psutil.Process) -> None:
    """SIGKILL every worker of the web server; wait until gunicorn has started others."""
    killed = {worker.pid for worker in master.children()}
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: len({w.pid for w in master.children()} - killed) == len(killed))


@pytest.mark.slow
def test_a_batch_whose_web_process_died_after_storing_it_is_replayed_not_stored_again(
    tmp_path,
):
    """The batch is committed and the process dies before it answers: the retry with the
    same key answers that batch (`Idempotent-Replayed`), and the tenant has one batch."""
    tenant, key = tenant_create(name="killed-after-store")
    body = ndjson_bytes([customer_row(customer_id=uid("killed-1"), email="k1@example.com")])
    headers = {
        "X-API-Key": key.raw,
        "Content-Type": "application/x-ndjson",
        "Idempotency-Key": "killed-after-store-1",
    }
    port = free_port()
    command = [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
    env = {"DATABASE_URL": database_url_of_tests(), "LIVE_MERGE_DELAY_SECONDS": "0"}
    with (
        running_processes({"web": command}, env=env, log_dir=tmp_path) as processes,
        psycopg.connect(database_url_of_tests()) as holder,
    ):
        wait_ready(f"http://127.0.0.1:{port}", processes)
        master = psutil.Process(processes["web"].pid)
        holder.execute("LOCK TABLE record_merge_requests IN SHARE MODE")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/ingest/records/customers/", body=body, headers=headers)
        _wait_for(lambda: RecordBatch.objects.filter(tenant=tenant).exists())
        time.sleep(0.2)  # its request is past the commit, waiting for the lock
        _kill_workers(master)
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.getresponse()  # the process died before it answered
        conn.close()
        holder.rollback()  # the lock given back

        status, answered, batch = _post(port, "/api/v1/ingest/records/customers/", body, headers)
    stored = list(RecordBatch.objects.filter(tenant=tenant).values_list("id", flat=True))
    assert (status, answered.get("Idempotent-Replayed"), [batch["id"]]) == (202, "true", stored)


@pytest.mark.parametrize(
    ("path", "content_type", "body", "model"),
    [
        (
            "/api/v1/ingest/records/customers/",
            "application/x-ndjson",
            ndjson_bytes([customer_row(customer_id=uid("unanswered-1"), email="u@example.com")]),
            RecordBatch,
        ),
        (
            "/api/v1/ingest/sessions/",
            "application/json",
            json.dumps({"filename": "customers.ndjson", "size": 100}).encode(),
            UploadSession,
        ),
    ],
)
def test_work_whose_answer_could_not_be_stored_is_undone_with_it(
    api, monkeypatch, path, content_type, body, model
):
    """A live batch or a session is one short transaction with its key's answer: when the
    answer cannot be stored, nothing of the request stays, and the retry makes it once."""
    tenant, key = tenant_create(name="unanswered")
    client = api.as_tenant(key.raw)
    real = idempotency.idempotency_finish

    def fails_once(**kwargs):
        monkeypatch.setattr(idempotency, "idempotency_finish", real)
        raise RuntimeError("the answer was not stored")

    monkeypatch.setattr(idempotency, "idempotency_finish", fails_once)
    headers = {"Idempotency-Key": "unanswered-1"}
    failed = client.generic("POST", path, body, content_type=content_type, headers=headers)
    assert failed.status_code == 500
    assert not model.objects.filter(tenant=tenant).exists()
    response = client.generic("POST", path, body, content_type=content_type, headers=headers)
    assert response.status_code in (201, 202)
    assert model.objects.filter(tenant=tenant).count() == 1
