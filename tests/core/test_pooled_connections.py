"""The web server's pooled connections (`apps.core.postgresql`): one used a moment ago is
taken without a round trip unless something arrived on its socket; one the server dropped
is replaced before a request uses it, whether it was quiet or not."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from django.db import connection

from apps.core.postgresql import base
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.tenants.services import tenant_create
from tests.core.test_web_server import gunicorn
from tests.factories import database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True


def _dropped(conn, timeout: float = 5.0) -> None:
    """Wait until the server's end of `conn` is gone (its socket then says so)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [conn.info.backend_pid])
            if cursor.fetchone() is None:
                return
            time.sleep(0.01)
    raise AssertionError("the server kept the connection")


def test_a_connection_given_back_a_moment_ago_is_quiet_until_the_server_drops_it():
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        now = time.monotonic()
        assert not base.quiet(conn, now)  # never given back: checked with a query
        base._returned[conn] = now
        assert base.quiet(conn, now)
        assert not base.quiet(conn, now + base.QUIET_SECONDS + 1)  # idle too long: checked
        assert base.answers(conn)

        _terminate(conn.info.backend_pid)
        _dropped(conn)
        assert not base.quiet(conn, time.monotonic())  # the server's goodbye is on the socket
        assert not base.answers(conn)


def test_a_wrapper_takes_a_connection_it_just_gave_back_without_a_query(monkeypatch):
    """Django's own path through the backend, with a pool of one: the time a connection is
    given back is kept (`_close`); taken again at once, it is not queried; terminated by
    the server, it is queried, given back, and a new one is taken."""
    checked = []
    real_answers = base.answers
    monkeypatch.setattr(base, "answers", lambda conn: checked.append(conn) or real_answers(conn))
    settings = {
        **connection.settings_dict,
        "CONN_HEALTH_CHECKS": False,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {**connection.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1}},
    }
    wrapper = base.DatabaseWrapper(settings, alias="pooled_test")
    try:
        wrapper.ensure_connection()
        first = wrapper.connection
        wrapper.close()
        assert time.monotonic() - base._returned[first] < 1
        checked.clear()
        wrapper.ensure_connection()
        assert wrapper.connection is first
        assert checked == []  # no round trip
        wrapper.close()

        _terminate(first.info.backend_pid)
        _dropped(first)
        wrapper.ensure_connection()
        assert checked[0] is first  # its socket told: queried, and failed
        assert wrapper.connection is not first
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        wrapper.close()
    finally:
        wrapper.close_pool()


def test_requests_after_the_server_dropped_every_pooled_connection_succeed(tmp_path):
    """gunicorn's pooled connections terminated between requests (as a restart does):
    the next requests are answered, none fails on a dead connection."""
    _, issued = tenant_create(name="pool")
    headers = {"X-API-Key": issued.raw, "Content-Type": "application/x-ndjson"}
    with gunicorn(tmp_path, "--workers", "1") as (base_url, _), httpx.Client() as client:

        def send(n: int) -> int:
            row = customer_row(customer_id=uid(f"pool-{n}"), email=f"pool{n}@example.com")
            return client.post(
                f"{base_url}/api/v1/ingest/records/customers/",
                content=ndjson_bytes([row]),
                headers=headers,
            ).status_code

        assert [send(n) for n in range(3)] == [202] * 3
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            assert cursor.fetchall()  # the web server's connections
        time.sleep(0.2)
        assert [send(n) for n in range(3, 8)] == [202] * 5
