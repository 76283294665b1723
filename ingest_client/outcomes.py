"""What the live client tells its caller: counts, rows the server rejected (each with
every problem of its row), batches that could not be sent, and the exception that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class SendFailed(Exception):
    """Some records could not be sent (their batches are in `failures`); the message says
    how many and why."""

    def __init__(self, failures: list[Failure]):
        self.failures = failures
        records = sum(len(f.lines) for f in failures)
        reasons = "; ".join(sorted({f.error for f in failures}))
        super().__init__(f"{records} records in {len(failures)} batches not sent: {reasons}")


@dataclass(frozen=True)
class Problem:
    """One problem of a refused row: the field (empty for the whole line), code, message."""

    field: str
    code: str
    message: str


@dataclass(frozen=True)
class Reject:
    """A row the server refused: `line` is its 1-based position in batch `batch_id` (0,
    line 1: a record refused alone with 413, no batch stored); `errors` is every problem of
    the row, the first of them `field`, `code`, `message`;
    `source_line` is what the caller gave `send_line` for it (its line in the caller's
    input), if anything."""

    record_type: str
    batch_id: int
    line: int
    field: str
    code: str
    message: str
    raw: str
    errors: tuple[Problem, ...] = ()
    source_line: int | None = None


@dataclass(frozen=True)
class Failure:
    """A batch that could not be sent; `lines` are its records as NDJSON lines."""

    record_type: str
    lines: list[bytes]
    error: str


@dataclass
class Counts:
    """What the client did so far: records queued by `send`; sent (the server answered
    for them: in a batch, or refused alone with 413), accepted and rejected by it, not sent
    (failed); batches stored by the server."""

    queued: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    batches: int = 0


def rejects_of(record_type: str, sources: list[int | None], batch: dict) -> list[Reject]:
    """The rejects of a batch resource the server answered; `sources` are the batch's
    lines' `source_line`s."""
    return [
        Reject(
            record_type=record_type,
            batch_id=batch.get("id", 0),
            line=r.get("line", 0),
            field=r.get("field", ""),
            code=r.get("code", ""),
            message=r.get("message", ""),
            raw=r.get("raw", ""),
            errors=_problems(r),
            source_line=_source(sources, r.get("line", 0)),
        )
        for r in batch.get("rejects") or []
    ]


def too_large(response: httpx.Response, line: bytes) -> dict:
    """A batch resource, as the server would answer it, for one record it refused with
    413: rejected, by the server's reason (no retry or split could send it)."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = problem.get("code") or "payload_too_large"
    message = problem.get("detail") or problem.get("title") or "the record is too large"
    raw = line[:200].decode("utf-8", "replace") + ("..." if len(line) > 200 else "")
    reject = {"line": 1, "field": "", "code": code, "message": message, "raw": raw}
    return {"rejected": 1, "rejects": [reject]}


def _source(sources: list[int | None], line: Any) -> int | None:
    """The `source_line` of a batch's 1-based line `line`, if the caller gave one."""
    return sources[line - 1] if type(line) is int and 1 <= line <= len(sources) else None


def _problems(reject: dict) -> tuple[Problem, ...]:
    """Every problem of a rejected row as the server lists them (a server without the list:
    the one it names)."""
    listed = reject.get("errors") or [reject]
    return tuple(
        Problem(e.get("field", ""), e.get("code", ""), e.get("message", "")) for e in listed
    )
