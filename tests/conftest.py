from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apps.ingestions.engine.testing import ndjson_bytes
from apps.ingestions.models import Upload
from apps.ingestions.services import upload_ingest_path
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create

# The standalone end-to-end script runs against a live deployment, not under pytest.
collect_ignore = ["test_comprehensive_ingestion.py"]

# The browser tests drive Debian's `chromium` (never a browser download) with Playwright.
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` on PATH: install Debian's package (`apt-get install chromium`); "
    ".ci/run installs it",
)


@pytest.fixture
def tenant(db) -> Tenant:
    return tenant_create(name="Acme")[0]


@pytest.fixture
def other_tenant(db) -> Tenant:
    return tenant_create(name="Globex")[0]


@pytest.fixture
def ndjson(tmp_path: Path) -> Callable[..., Path]:
    """Write rows (dicts or raw lines) to a file in tmp_path and return its path."""

    def make(filename: str, rows: list[Any], *, compression: str | None = None) -> Path:
        path = tmp_path / filename
        path.write_bytes(ndjson_bytes(rows, compression=compression))
        return path

    return make


@pytest.fixture
def load() -> Callable[..., Upload]:
    """Ingest a file for a tenant through the service and engine; returns the upload."""

    def run(
        tenant: Tenant,
        path: Path,
        *,
        type: str | None = None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> Upload:
        outcome = upload_ingest_path(
            tenant=tenant, path=path, record_type=type, strict=strict, dry_run=dry_run
        )
        return outcome.upload

    return run


@pytest.fixture(scope="session", autouse=True)
def _staging_tables_dropped(django_db_setup, django_db_blocker):
    """Tests roll their transactions back, and with them the DROP of each load's staging
    table: drop what they leave once the session ends (the test database is reused)."""
    yield
    from django.db import connection, transaction
    from django.db.backends.base.creation import TEST_DATABASE_PREFIX

    from apps.ingestions.engine import staging_drop_stale

    if not connection.settings_dict["NAME"].startswith(TEST_DATABASE_PREFIX):
        return  # no test used the database, so pytest-django never made the test one
    with django_db_blocker.unblock(), transaction.atomic(), connection.cursor() as cursor:
        staging_drop_stale(cursor.cursor)


@pytest.fixture(scope="session")
def _celery_worker_thread(django_db_setup, django_db_blocker):
    """The session's Celery worker (a thread of this process, solo pool) and its queue."""
    from celery.contrib.testing.worker import start_worker

    from main.celery import app

    @app.task(name="tests.backend_pid", shared=False)
    def backend_pid(token: str):
        """The server process behind the worker's database connection, for `worker_backend`."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            _BACKENDS[token] = cursor.fetchone()[0]

    queue = f"tests-{uuid.uuid4().hex[:8]}"
    with (
        django_db_blocker.unblock(),
        start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=[queue],
            loglevel="WARNING",
        ),
    ):
        yield app, queue
    _close_thread_connections()


def _close_thread_connections() -> None:
    """The worker keeps its database connection between tasks, in each thread that ran
    them: the worker's own and, on the embedded filesystem transport, Celery's timer
    thread (a task sent with a countdown runs there). A real worker closes its connection
    at shutdown; the test worker's threads end without, so their connections are closed
    here (each thread's own, now that the thread is gone)."""
    import gc

    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    for wrapper in gc.get_objects():
        if (
            issubclass(type(wrapper), BaseDatabaseWrapper)  # type(): weak proxies are about
            and wrapper is not connection  # this thread's: pytest-django's to close
            and wrapper.connection is not None
            and not wrapper.connection.closed
        ):
            wrapper.connection.close()


_BACKENDS: dict[str, int] = {}


def worker_backend(app) -> int:
    """Run a task on the session's worker (`celery_worker`); the pid of the server process
    its database connection talks to."""
    token = uuid.uuid4().hex
    app.send_task("tests.backend_pid", args=[token])
    return wait_for(lambda: _BACKENDS.pop(token, None), timeout=30)


@pytest.fixture
def celery_worker(_celery_worker_thread):
    """A real Celery worker (in a thread of this process) on the configured broker: Redis in
    CI, the embedded filesystem transport when nothing is set. Its own queue keeps it away
    from any other worker on the same broker, and the app sends there only during the tests
    that ask for it: a later test's task never runs behind that test's back (as when it
    flushes the database). Afterwards what was left queued is dropped and the task in hand
    is waited for. Use with `transactional_db`."""
    from celery.worker import state

    from apps.webhooks.senders import senders_idle

    app, queue = _celery_worker_thread
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        yield app
    finally:
        app.conf.task_default_queue = previous
        with app.connection_for_write() as conn:
            app.amqp.queues[queue](conn.default_channel).purge()
        wait_for(lambda: not state.active_requests, timeout=60)
        wait_for(senders_idle, timeout=60)  # deliveries made beside the worker's slot


@pytest.fixture
def api(db):
    """A DRF test client; `api.as_tenant(key)` sets the X-API-Key header."""
    from rest_framework.test import APIClient

    client = APIClient()

    def as_tenant(key: str) -> APIClient:
        client.credentials(HTTP_X_API_KEY=key)
        return client

    client.as_tenant = as_tenant
    return client


def stack_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """The body of a package's `_stack_server` fixture: one stack per package that runs the
    project's commands against it, stopped when its tests are done (the other packages'
    tests expect no worker on the default queue)."""
    from scripts.stack import running_stack
    from tests.factories import database_url_of_tests

    with django_db_blocker.unblock():
        url = database_url_of_tests()
    with running_stack(
        env={"DATABASE_URL": url}, workers=1, log_dir=tmp_path_factory.mktemp("stack-logs")
    ) as base:
        yield base


@pytest.fixture
def live_stack(_stack_server, django_db_blocker):
    """The web server (gunicorn) and a Celery worker on the test database, started once for
    the tests that run the project's commands as operators do; yields the base URL. After
    each test, waits for the stack's work in the database to end (a merge, the statistics
    after it): the test database's flush (TRUNCATE) would otherwise deadlock with it."""
    yield _stack_server
    with django_db_blocker.unblock():
        _database_quiet()


def _database_quiet(timeout: float = 30.0) -> None:
    """Until no other session of this database has been in a transaction for 0.3 s."""
    import time

    from django.db import connection

    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                "AND backend_type = 'client backend'"
            )
            busy = cursor.fetchone()[0]
        if busy:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 0.3:
            return
        time.sleep(0.05)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1):
    """Poll until `predicate()` is truthy; returns its value or fails the test."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {predicate}")


_TERMINAL = frozenset({"completed", "completed_with_errors", "failed"})


def upload_finished(client, upload: dict, *, timeout: float = 60.0) -> dict:
    """The upload resource, read through the API, once a worker has brought it to a
    terminal state."""

    def done():
        body = client.get(upload["url"]).json()
        return body if body["state"] in _TERMINAL else None

    return wait_for(done, timeout=timeout)
