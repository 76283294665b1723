"""`manage.py ingest_file`: exit statuses as the bulk CLI's (0 completed cleanly, 1 rows
rejected or pending, 2 failed or unreadable), only the result on stdout, the upload named
`id` in its JSON as the API names it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import Customer, Upload
from apps.tenants.services import tenant_create
from tests.factories import database_url_of_tests

ROOT = Path(__file__).resolve().parents[2]

GOOD = [customer_row(customer_id=uid(f"cmd-{n}"), email=f"c{n}@example.com") for n in range(3)]
BAD = {**customer_row(customer_id=uid("cmd-bad")), "email": "not an address"}


def _ingest(path: Path, tenant: str, *args: str) -> tuple[int, str, str]:
    """Run the command in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ingest_file", str(path), "--tenant", tenant, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return exc.code, out.getvalue(), err.getvalue()
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("filename", "lines", "args", "code", "state", "rows"),
    [
        ("customers_1.ndjson", GOOD, (), 0, "completed", {"inserted": 3}),
        ("customers_1.ndjson", [*GOOD, BAD], (), 1, "completed_with_errors", {"rejected": 1}),
        ("customers_1.ndjson", [*GOOD, "{not json"], (), 1, "completed_with_errors", {}),
        ("orders_1.ndjson", [order_row(customer_id=uid("nobody"))], (), 1, "completed", {}),
        ("customers_1.ndjson", [*GOOD, BAD], ("--strict",), 2, "failed", {"inserted": 0}),
    ],
    ids=["clean", "a-bad-row", "bad-json", "pending-rows", "strict-refused"],
)
def test_the_exit_status_says_how_the_upload_ended(
    tenant, ndjson, filename, lines, args, code, state, rows
):
    """0 completed with nothing rejected or pending, 1 rows rejected or pending, 2 failed."""
    status, out, _ = _ingest(ndjson(filename, lines), str(tenant.id), "--json", *args)
    result = json.loads(out)
    assert (status, result["state"]) == (code, state)
    assert Upload.objects.get(id=result["id"]).state == state
    assert rows.items() <= result["rows"].items()


@pytest.mark.django_db
def test_a_file_sent_again_exits_as_the_original_upload_ended(tenant, ndjson):
    """Identical bytes are not processed again; the status is the original upload's."""
    path = ndjson("customers_1.ndjson", [*GOOD, BAD])
    first = _ingest(path, str(tenant.id), "--json")
    again = _ingest(path, str(tenant.id), "--json")
    assert (first[0], again[0]) == (1, 1)
    assert json.loads(again[1])["id"] == json.loads(first[1])["id"]
    assert json.loads(again[1])["already_received"] is True
    assert Customer.objects.filter(tenant=tenant).count() == 3


@pytest.mark.django_db
def test_a_dry_run_exits_as_the_real_run_would_and_loads_nothing(tenant, ndjson):
    """--dry-run: the real run's counts and exit status, nothing loaded, and said so."""
    path = ndjson("customers_1.ndjson", [*GOOD, BAD])
    status, out, _ = _ingest(path, str(tenant.id), "--dry-run")
    assert status == 1
    assert "inserted=3 updated=0 unchanged=0 rejected=1" in out
    assert "dry run: the counts are a real run's; nothing was loaded" in out
    assert not Customer.objects.filter(tenant=tenant).exists()
    status, out, _ = _ingest(path, str(tenant.id))  # the same bytes run for real
    assert (status, Customer.objects.filter(tenant=tenant).count()) == (1, 3)


@pytest.mark.django_db
def test_a_file_level_failure_exits_2(tenant, tmp_path):
    """Bytes that are not gzip under a .gz name: the upload fails, nothing loads."""
    path = tmp_path / "customers_1.ndjson.gz"
    path.write_bytes(b"\x1f\x8b not really gzip" * 10)
    status, out, _ = _ingest(path, str(tenant.id), "--json")
    result = json.loads(out)
    assert (status, result["state"], result["error"]["code"]) == (
        2,
        "failed",
        "invalid_compression",
    )
    assert not Customer.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-file", "No such file"),
        ("a-folder", "is a folder, not a file."),
        ("a-pipe", "is not a regular file: give a file it can read twice."),
        ("unknown-tenant", "No tenant has the id or name"),
        ("undecidable-type", "Cannot tell the record type"),
    ],
)
def test_what_cannot_be_read_exits_2_with_nothing_on_stdout(
    tenant, ndjson, tmp_path, case, message
):
    """No file, a folder, a pipe, an unknown tenant, an undecidable type: status 2, a
    message saying which, no upload."""
    path = ndjson("customers_1.ndjson", GOOD)
    tenant_id = str(tenant.id)
    if case == "missing-file":
        path = tmp_path / "customers_9.ndjson"
    elif case == "a-folder":
        path = tmp_path
    elif case == "a-pipe":
        path = tmp_path / "customers_2.ndjson"
        os.mkfifo(path)
    elif case == "unknown-tenant":
        tenant_id = str(uid("no such tenant"))
    elif case == "undecidable-type":
        path = ndjson("data.ndjson", [{"a": 1}])
    status, out, err = _ingest(path, tenant_id, "--json")
    assert (status, out) == (2, "")
    assert message in err
    assert not Upload.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_from_a_shell_stdout_carries_only_the_result_and_logs_go_to_stderr(tmp_path):
    """The issue's case, as a shell runs it: a strict file refused with 39 rejects exits 2,
    stdout is the one JSON object (the upload's `id` as the API names it), logs on stderr."""
    tenant, _ = tenant_create(name="shell")
    lines = GOOD + [{**BAD, "customer_id": uid(f"bad-{n}")} for n in range(39)]
    path = tmp_path / "customers_strict.ndjson"
    path.write_bytes(ndjson_bytes(lines))
    env = {**os.environ, "DATABASE_URL": database_url_of_tests(), "LOG_LEVEL": "INFO"}
    command = [sys.executable, "manage.py", "ingest_file", str(path), "--tenant", str(tenant.id)]

    done = subprocess.run(
        [*command, "--strict", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.count("\n") == 1
    result = json.loads(done.stdout)
    assert (result["state"], result["rows"]["rejected"], result["rows"]["inserted"]) == (
        "failed",
        39,
        0,
    )
    assert result["error"]["code"] == "strict_rejected"
    assert "upload_id" not in result
    assert result["url"] == f"/api/v1/ingest/uploads/{result['id']}/"
    assert "upload failed" in done.stderr  # the service's log line, on stderr only

    clean = tmp_path / "customers_clean.ndjson"
    clean.write_bytes(ndjson_bytes(GOOD))
    done = subprocess.run(
        [sys.executable, "manage.py", "ingest_file", str(clean), "--tenant", str(tenant.id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    upload = Upload.objects.get(tenant=tenant, filename="customers_clean.ndjson")
    assert done.stdout.splitlines() == [
        f"upload={upload.id} type=customers state=completed",
        "total=3 inserted=3 updated=0 unchanged=0 rejected=0 pending=0 duplicates=0 warned=0",
    ]
    assert "upload completed" in done.stderr
