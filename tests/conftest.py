from __future__ import annotations

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

    def run(tenant: Tenant, path: Path, *, type: str | None = None, strict: bool = False) -> Upload:
        return upload_ingest_path(tenant=tenant, path=path, record_type=type, strict=strict).upload

    return run
