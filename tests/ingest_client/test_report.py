"""The exit code (SPEC 6) from the files' results."""

from __future__ import annotations

from ingest_client.plan import FileJob, Tenant
from ingest_client.report import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    FileResult,
    exit_code,
    validation_exit_code,
)


def _result(tmp_path, state: str | None, *, rejected=0, pending=0, error=None) -> FileResult:
    job = FileJob(Tenant("t", "t", "k", tmp_path), tmp_path / "x.ndjson", "customers", 1, 0, False)
    upload = None
    if state is not None:
        upload = {"id": "u", "state": state, "rows": {"rejected": rejected, "pending": pending}}
    return FileResult(job, upload=upload, error=error)


def test_the_exit_code_is_0_clean_1_rejected_or_pending_2_failed_or_unsent(tmp_path):
    """SPEC 6: 0 all completed cleanly; 1 all processed with rejects or pending; 2 otherwise."""
    clean = _result(tmp_path, "completed")
    assert exit_code([clean, clean]) == EXIT_OK
    assert exit_code([clean, _result(tmp_path, "completed_with_errors", rejected=3)]) == 1
    assert exit_code([clean, _result(tmp_path, "completed", pending=2)]) == EXIT_REJECTED
    assert exit_code([clean, _result(tmp_path, "failed")]) == EXIT_FAILED
    assert exit_code([clean, _result(tmp_path, None, error="401")]) == EXIT_FAILED
    assert exit_code([clean, _result(tmp_path, "processing", error="timeout")]) == EXIT_FAILED
    assert exit_code([]) == EXIT_FAILED


def test_a_validation_runs_exit_code_is_1_only_when_rows_would_be_rejected(tmp_path):
    """--validate-only: rows that would be held pending do not count (nothing is loaded, so
    parents sent in the same run are not there); rejects are 1, failures 2."""
    clean = _result(tmp_path, "completed")
    assert validation_exit_code([clean, _result(tmp_path, "completed", pending=2)]) == EXIT_OK
    rejected = _result(tmp_path, "completed_with_errors", rejected=3, pending=1)
    assert validation_exit_code([clean, rejected]) == EXIT_REJECTED
    assert validation_exit_code([rejected, _result(tmp_path, "failed")]) == EXIT_FAILED
    assert validation_exit_code([clean, _result(tmp_path, None, error="401")]) == EXIT_FAILED
    assert validation_exit_code([]) == EXIT_FAILED
