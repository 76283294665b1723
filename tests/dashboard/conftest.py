"""Fixtures of the dashboard tests: two tenants, each with the raw key to sign in with."""

from __future__ import annotations

import pytest

from apps.tenants.services import tenant_create


@pytest.fixture
def acme(db):
    tenant, issued = tenant_create(name="Acme")
    return tenant, issued.raw


@pytest.fixture
def globex(db):
    tenant, issued = tenant_create(name="Globex")
    return tenant, issued.raw
