"""Fixtures of the ingestion API tests: DRF clients authenticated as a tenant (here, not
in the root conftest, so pytest-django's plain `client` stays what it is elsewhere)."""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def client_for(db):
    """`client_for(tenant)`: a DRF test client sending a fresh key of that tenant."""
    from rest_framework.test import APIClient

    from apps.tenants.services import api_key_rotate

    def make(tenant) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=api_key_rotate(tenant=tenant, revoke_existing=False).raw)
        return client

    return make


@pytest.fixture
def key_in_flight(db):
    """`key_in_flight(tenant, key)`: the key claimed by a request still running elsewhere
    (its row, unanswered, and its lock held by another connection until the test ends)."""
    import psycopg

    from apps.core.idempotency import IN_FLIGHT_LOCK
    from apps.core.models import IdempotencyKey
    from tests.factories import database_url_of_tests

    with contextlib.ExitStack() as held:

        def claim(tenant, key: str) -> None:
            IdempotencyKey.objects.create(tenant=tenant, key=key, fingerprint="")
            other = held.enter_context(psycopg.connect(database_url_of_tests(), autocommit=True))
            held_key = {"tenant": str(tenant.id), "key": key}
            other.execute(f"SELECT pg_advisory_lock({IN_FLIGHT_LOCK})", held_key)

        yield claim


@pytest.fixture
def tenant_client():
    """`tenant_client(name)`: a new tenant and an API client sending its key."""
    from rest_framework.test import APIClient

    from apps.tenants.services import tenant_create

    def make(name: str = "Acme"):
        tenant, issued = tenant_create(name=name)
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=issued.raw)
        return tenant, client

    return make


@pytest.fixture
def client(client_for, tenant):
    """A DRF test client authenticated as `tenant`."""
    return client_for(tenant)


@pytest.fixture
def queue(request):
    """A broker queue of this test's own: the app sends tasks there during the test and its
    workers read it; what no worker consumed is dropped with the queue afterwards."""
    from main.celery import app

    name = f"{request.module.__name__.rpartition('_')[2]}-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = name
    try:
        yield name
    finally:
        app.conf.task_default_queue = previous
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            bound = app.amqp.queues[name](conn.default_channel)
            bound.declare()
            bound.purge()
            bound.delete()


@pytest.fixture
def celery_processes(tmp_path, queue):
    """`start(env)`: a real `celery worker` process (prefork, 2 children, INFO log) in a
    process group of its own, on the test database, this process's broker and the test's
    queue, with `env` added; returns (process, log) once it is ready. Each is stopped after
    the test and the end of its log printed (shown when the test fails)."""
    from tests.conftest import wait_for
    from tests.factories import database_url_of_tests

    root = Path(__file__).resolve().parents[2]
    base = {**os.environ, "DATABASE_URL": database_url_of_tests(), "CELERY_QUEUE": queue}
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"worker-{len(started)}.log"
        command = [str(Path(sys.executable).parent / "celery"), "-A", "main", "worker"]
        command += ["--concurrency", "2", "--loglevel", "INFO", "-n", f"{queue}-{len(started)}@t"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=root,
                env={**base, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the pool dies with it
            )
        started.append((process, log))
        wait_for(lambda: " ready." in log.read_text(errors="replace"), timeout=60)
        return process, log

    try:
        yield start
    finally:
        for process, log in started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=15)
            sys.stdout.write(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}\n")
