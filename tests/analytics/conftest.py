from __future__ import annotations

import pytest

from tests.factories import shop_load


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
def shop(tenant, tmp_path):
    """`tests.factories.shop_load`'s small shop, loaded for `tenant`."""
    shop_load(tenant, tmp_path)
    return tenant
