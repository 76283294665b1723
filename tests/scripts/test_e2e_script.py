"""tests/test_comprehensive_ingestion.py, the standalone end-to-end check, run as operators
run it: a subprocess against a live web server and worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.ingestions.models import Customer, Upload
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[1] / "test_comprehensive_ingestion.py"


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **env},
        cwd="/",  # it finds the project by its own path, not the working directory
    )


def test_the_e2e_script_creates_its_tenant_and_passes_every_check(live_stack):
    """With database access it makes a tenant, uploads in the wrong order and checks the
    API's counts and the final tables: exit 0 and `N passed, 0 failed`."""
    done = run_script("--api-url", live_stack, env={"DATABASE_URL": database_url_of_tests()})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"API {live_stack}; database checks: on"
    assert not [line for line in lines if line.startswith("FAIL")]
    assert lines[-1].endswith(" passed, 0 failed")
    assert int(lines[-1].split()[0]) >= 40
    assert "PASS  database: order_items gained the valid rows" in done.stdout
    (tenant,) = Tenant.objects.filter(name__startswith="e2e-check-")
    assert Upload.objects.filter(tenant=tenant).count() == 4
    assert Customer.objects.filter(tenant=tenant).exists()


def test_the_e2e_script_with_a_key_and_no_database_checks_the_api_only(live_stack):
    """Given a key and --no-db, it runs on the API alone; a wrong expectation would fail."""
    tenant, issued = tenant_create(name="e2e-by-key")
    done = run_script(
        "--api-url", live_stack, "--api-key", issued.raw, "--no-db", "--orders", "20", env={}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database checks: off (disabled with --no-db)" in done.stdout
    assert "database:" not in done.stdout.replace("database checks", "")
    assert done.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert Upload.objects.filter(tenant=tenant).count() == 4


def test_the_e2e_script_reports_a_failure_with_a_non_zero_exit(live_stack):
    """A refused key is a failed check, not a crash: `0 passed`-style summary, exit 1."""
    done = run_script("--api-url", live_stack, "--api-key", "ck_0123456789ab_x", "--no-db", env={})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  order_items: answered 202" in done.stdout
    assert done.stdout.splitlines()[-1].endswith(" failed")
    assert not done.stdout.splitlines()[-1].endswith(" 0 failed")
