from __future__ import annotations

import pytest

from tests.factories import shop_load
from tests.ingestions.conftest import client_for  # noqa: F401 - a fixture


@pytest.fixture
def shop(tenant, tmp_path):
    """`tests.factories.shop_load`'s small shop, loaded for `tenant`."""
    shop_load(tenant, tmp_path)
    return tenant
