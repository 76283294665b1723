"""Fixtures of the ingestion API tests: DRF clients authenticated as a tenant (here, not
in the root conftest, so pytest-django's plain `client` stays what it is elsewhere)."""

import contextlib
import uuid

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
