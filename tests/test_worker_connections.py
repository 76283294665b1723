"""A worker keeps its database connection from one task to the next, as the web server's
processes keep theirs between requests (Celery's Django fixup would close it around every
task: a live merge every few tenths of a second would pay for a new connection and a cold
server process each time). A connection the server dropped meanwhile is replaced before
the next task uses it."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import worker_backend

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_keeps_its_database_connection_between_tasks(celery_worker):
    first = worker_backend(celery_worker)
    assert [worker_backend(celery_worker) for _ in range(3)] == [first] * 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [first])
        assert cursor.fetchone()[0] == 1  # open between tasks too, idle


def test_a_connection_the_server_dropped_is_replaced_before_the_next_task(celery_worker):
    first = worker_backend(celery_worker)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        assert cursor.fetchone()[0] is True
    second = worker_backend(celery_worker)  # the task succeeds, on a new connection
    assert second != first
    assert worker_backend(celery_worker) == second
