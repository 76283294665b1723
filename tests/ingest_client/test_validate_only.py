"""bulk_ingest.py --validate-only as an operator runs it, against a live web server and Celery
worker: every file is sent as a dry run (in one request or through a session), reported as
a real run would report it, nothing is loaded, and the exit code says whether any row would
be rejected."""

from __future__ import annotations

import pytest

from apps.ingestions.models import Upload, UploadSession
from tests.ingest_client.test_bulk_runs import MODELS, assert_loaded_once, bulk_ingest, make_data

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def table_rows(stdout: str, filename: str) -> list[str]:
    """The result table's cells of one file, but its rows/s."""
    (line,) = [line for line in stdout.splitlines() if f" {filename} " in line]
    return [cell.strip() for cell in line.split("│")[1:-2]]


def test_validate_only_checks_every_file_loads_nothing_and_exits_1_on_rejects(tmp_path, live_stack):
    """With bad rows: exit 1, each file reported as the real run then reports it (for the
    files whose parents need not be loaded first), nothing loaded, no state file; the real
    run that follows loads every valid row, since no dry run stands in for a file."""
    data, written = make_data(tmp_path, fault_rate=0.1)
    args = ("--data-dir", str(data), "--api-url", live_stack, "--session-threshold", "4KiB")

    check = bulk_ingest(*args, "--validate-only")

    assert check.returncode == 1, check.stdout + check.stderr
    assert "validation run (dry runs: nothing was loaded)" in check.stdout
    assert "would be rejected (see each upload's errors), nothing was loaded" in check.stdout
    assert "would be held pending" in check.stdout  # orders: their customers were not loaded
    uploads = list(Upload.objects.all())
    assert len(uploads) == 4
    assert all(u.dry_run for u in uploads)
    assert UploadSession.objects.filter(dry_run=True).exists()  # the bigger files' route
    assert not any(model.objects.exists() for model in MODELS.values())
    assert not (data / ".bulk_ingest_state.json").exists()

    real = bulk_ingest(*args)

    assert real.returncode == 1, real.stdout + real.stderr
    assert_loaded_once(written)
    for filename in ("customers_1.ndjson", "products_1.ndjson"):
        assert table_rows(check.stdout, filename) == table_rows(real.stdout, filename)
    assert Upload.objects.filter(dry_run=False).count() == 4


def test_validate_only_exits_0_when_no_row_would_be_rejected(tmp_path, live_stack):
    """Clean files: exit 0, though the children of parents sent in the same run would be
    held (nothing is loaded); a second validation checks every file again."""
    data, _ = make_data(tmp_path)
    args = ("--data-dir", str(data), "--api-url", live_stack, "--validate-only")

    first = bulk_ingest(*args)
    second = bulk_ingest(*args)

    assert (first.returncode, second.returncode) == (0, 0), first.stdout + first.stderr
    assert "would be held pending" in first.stdout
    assert Upload.objects.filter(dry_run=True).count() == 8
    assert not any(model.objects.exists() for model in MODELS.values())
