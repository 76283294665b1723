"""Fixtures of the client's tests: the live stack its command runs against."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def live_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """The web server (gunicorn) and a Celery worker on the test database, started once for
    the client's tests that run it as operators do; yields the base URL."""
    from scripts.stack import running_stack
    from tests.factories import database_url_of_tests

    with django_db_blocker.unblock():
        url = database_url_of_tests()
    with running_stack(
        env={"DATABASE_URL": url}, workers=1, log_dir=tmp_path_factory.mktemp("stack-logs")
    ) as base:
        yield base
