"""Fixtures of the ingestion API tests: DRF clients authenticated as a tenant (here, not
in the root conftest, so pytest-django's plain `client` stays what it is elsewhere)."""

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
