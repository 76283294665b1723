"""Resilience of the asynchronous path, with real processes: a worker killed in the middle of
a large upload, the broker down when an upload arrives, and one upload run twice at once."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, OrderItem, Upload
from apps.ingestions.sample_data import Sizes, write_tenant_files
from apps.ingestions.services import (
    upload_create,
    upload_ingest_path,
    upload_requeue,
    upload_run,
)
from apps.tenants.services import tenant_create
from main.celery import app
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Worker:
    process: subprocess.Popen
    name: str
    log: Path

    def ready(self) -> bool:
        """The worker has connected to its broker and consumes its queue."""
        return " ready." in self.log.read_text(errors="replace")


def _kill(worker: Worker) -> None:
    """SIGKILL the worker and its pool processes (its own process group)."""
    if worker.process.poll() is None:
        os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)


def _stop(worker: Worker) -> None:
    """Warm shutdown (a finished task is acknowledged first), or SIGKILL if it hangs."""
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill(worker)


@pytest.fixture
def start_worker(tmp_path):
    """Start a real Celery worker process on the test database; every one is stopped after
    the test, and its log is printed (shown when the test fails)."""
    started: list[tuple[Worker, Path]] = []

    def start(queue: str, *, broker_url: str | None = None) -> Worker:
        name = f"{queue}-{len(started)}@resilience"
        env = {
            **os.environ,
            "DATABASE_URL": database_url_of_tests(),
            "CELERY_BROKER_URL": broker_url or app.conf.broker_url,
        }
        command = [
            str(BIN / "celery"),
            "-A",
            "main",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",  # its "ready." line tells the test the worker is consuming
            "-Q",
            queue,
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process=process, name=name, log=log)
        started.append((worker, log))
        return worker

    try:
        yield start
    finally:
        for worker, log in started:
            _stop(worker)
            sys.stdout.write(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}\n")


class RedisServer:
    """A redis-server process of the test's own, stopped and started again on one port."""

    def __init__(self, binary: str, folder: Path):
        self.binary, self.folder = binary, folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.folder),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def ready() -> bool:
            with contextlib.suppress(redis.RedisError):
                return client.ping()
            return False

        wait_for(ready, timeout=15)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def _use_broker(url: str, transport_options: dict) -> None:
    """Point this process's app at another broker, with fresh connection pools."""
    os.environ["CELERY_BROKER_URL"] = url  # read before app.conf.broker_url by Celery
    app.conf.broker_url = url
    app.conf.broker_transport_options = transport_options
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def redis_broker(tmp_path):
    """A Redis of the test's own as the app's broker; the configured broker is restored."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: the broker-down test needs a Redis to stop")
    server = RedisServer(binary, tmp_path)
    saved_env = os.environ.get("CELERY_BROKER_URL")
    saved_url = app.conf.get("broker_url")
    saved_options = app.conf.broker_transport_options
    switched = False
    try:
        server.start()
        _use_broker(server.url, {})
        switched = True
        yield server
    finally:
        server.stop()
        if switched:
            with contextlib.suppress(Exception):  # this Redis's pools; never used again
                app.amqp.producer_pool.force_close_all()
                app.pool.force_close_all()
            _use_broker(saved_url, saved_options)
            if saved_env is None:
                os.environ.pop("CELERY_BROKER_URL", None)
            else:
                os.environ["CELERY_BROKER_URL"] = saved_env


def _upload(upload_id) -> Upload:
    return Upload.objects.get(id=upload_id)


def _finished(upload_id) -> Upload | None:
    upload = _upload(upload_id)
    return upload if upload.is_terminal else None


def _counts(upload: Upload) -> dict:
    return {"state": upload.state, **upload.row_counts}


def _loaded_once(rows: int) -> dict:
    return {
        "state": "completed",
        "total": rows,
        "inserted": rows,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "pending": 0,
        "duplicates": 0,
        "warned": 0,
    }


@pytest.mark.slow
def test_a_large_upload_whose_worker_is_killed_completes_exactly_once_on_another_worker(
    tenant, tmp_path, queue, start_worker
):
    """A worker SIGKILLed mid-upload merges nothing; re-queued, another loads every row once."""
    first = start_worker(queue)
    files = {
        written.record_type: written
        for written in write_tenant_files(
            tmp_path / "data",
            sizes=Sizes(customers=100, products=50, orders=2_000, items_per_order=100.0),
            seed=11,
        )
    }
    for record_type in ("customers", "products", "orders"):
        parents = upload_ingest_path(tenant=tenant, path=files[record_type].path).upload
        assert parents.state == "completed", record_type
    items = files["order_items"]
    assert items.rows == 200_000
    with items.path.open("rb") as stream:
        upload = upload_create(tenant=tenant, stream=stream, filename=items.path.name).upload

    wait_for(
        lambda: (u := _upload(upload.id)).state == "processing" and u.rows_done > 0,
        timeout=60,
        interval=0.05,
    )
    _kill(first)

    assert _upload(upload.id).state == "processing"
    assert not OrderItem.objects.filter(tenant=tenant).exists()

    start_worker(queue)
    # What the periodic job does; it sends the upload once the dead worker's lock is gone.
    wait_for(lambda: upload_requeue(stuck_after=timedelta(0)), timeout=30, interval=0.2)
    done = wait_for(lambda: _finished(upload.id), timeout=90)
    assert _counts(done) == _loaded_once(items.rows)
    assert OrderItem.objects.filter(tenant=tenant).count() == items.rows


@pytest.mark.slow
def test_an_upload_sent_while_the_broker_is_down_is_queued_and_processed_once_it_is_back(
    api, queue, redis_broker, start_worker
):
    """With the broker down the request answers 202 `queued`; once back, a worker loads it."""
    worker = start_worker(queue, broker_url=redis_broker.url)
    wait_for(worker.ready, timeout=60)
    tenant, issued = tenant_create(name="brokerless")
    rows = [customer_row(customer_id=uid(f"down-{n}"), email=f"d{n}@example.com") for n in range(3)]

    redis_broker.stop()
    started = time.monotonic()
    response = api.as_tenant(issued.raw).post(
        "/api/v1/ingest/comprehensive/",
        {"file": SimpleUploadedFile("customers_down.ndjson", ndjson_bytes(rows))},
        format="multipart",
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "queued"
    assert elapsed < 10, f"the request took {elapsed:.1f}s with the broker down"
    upload_id = response.json()["id"]
    assert _upload(upload_id).state == "queued"

    redis_broker.start()
    # What the periodic job does: the queued upload is sent now that the broker is back.
    wait_for(lambda: upload_requeue(stuck_after=timedelta(0)), timeout=30, interval=0.5)
    done = wait_for(lambda: _finished(upload_id), timeout=60)
    assert _counts(done) == _loaded_once(3)
    assert Customer.objects.filter(tenant=tenant).count() == 3


def test_the_same_upload_run_twice_at_once_is_loaded_once(tenant, queue):
    """Two runs of one upload at the same moment: one loads it, the other leaves it alone."""
    count = 20_000
    rows = [customer_row(customer_id=uid(f"twice-{n}"), email=f"t{n}@x.org") for n in range(count)]
    upload = upload_create(
        tenant=tenant, stream=io.BytesIO(ndjson_bytes(rows)), filename="customers_twice.ndjson"
    ).upload  # also sent to the test's queue, which no worker consumes
    barrier = threading.Barrier(2)
    returned, errors = [], []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            returned.append(upload_run(upload_id=upload.id))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(returned) == 2
    assert _counts(_upload(upload.id)) == _loaded_once(count)
    assert Customer.objects.filter(tenant=tenant).count() == count


def test_an_upload_that_stops_making_progress_is_stopped_and_reported(tenant):
    """A worker that holds an upload but writes no progress for too long (here: stuck in a
    statement) is cancelled, and the upload ends failed with code `hung`."""
    import psycopg

    from apps.ingestions.services import Fingerprint, upload_register, upload_stop_hung

    upload = upload_register(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        fingerprint=Fingerprint(sha256="f" * 64, size=1),
        strict=False,
    ).upload
    Upload.objects.filter(id=upload.id).update(state="processing")
    hung = psycopg.connect(database_url_of_tests(), autocommit=True)
    try:
        hung.execute(
            "SELECT pg_advisory_lock(hashtextextended('upload:' || %s::text, 0))",
            (str(upload.id),),
        )
        result: list[BaseException] = []

        def stuck_statement() -> None:
            try:
                hung.execute("SELECT pg_sleep(60)")
            except BaseException as exc:
                result.append(exc)

        worker = threading.Thread(target=stuck_statement)
        worker.start()
        time.sleep(0.3)  # the statement is running
        assert upload_stop_hung(silent_for=timedelta(0)) == 1
        worker.join(timeout=10)
        assert not worker.is_alive(), "the stuck statement was not cancelled"
        assert isinstance(result[0], psycopg.errors.QueryCanceled)
    finally:
        hung.close()
    upload.refresh_from_db()
    assert (upload.state, upload.error_code) == ("failed", "hung")
    assert upload.error_detail.startswith("no progress for 0 s")
    assert upload_stop_hung(silent_for=timedelta(0)) == 0  # nothing left to stop
