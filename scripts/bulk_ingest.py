"""Bulk ingestion: upload a data directory through the HTTP API.

    python bulk_ingest.py --data-dir generated_data --api-url http://localhost:8000

The data directory holds one folder per tenant and a manifest, `tenants.json` (a list of
`{"tenant_id", "name", "api_key", "dir"}`), as `manage.py generate_data` writes it.

- Per tenant, files are sent in dependency order (customers and products, then orders,
  then order items), the files of one stage in parallel; a stage's uploads are waited for
  server-side before the next stage starts.
- Files above `--session-threshold` go through resumable upload sessions. A state file
  keeps each file's session token and upload id, so a run stopped by Ctrl-C, a dropped
  connection or a server restart continues where it stopped.
- Each file's `Idempotency-Key` derives from the tenant, the record type and the file's
  sha256: a rerun never loads anything twice.
- Connection errors, 5xx and 429 are retried with exponential backoff and jitter
  (`Retry-After` honoured); other 4xx (a refused API key included) fail the file at once
  with the server's explanation.

Exit codes: 0 every file completed with no rejected or pending rows; 1 every file was
processed but some rows were rejected or are still pending; 2 a file failed or could not
be sent (a refused API key included), or the run was interrupted (run it again to resume).

Needs only httpx and rich: it runs on any machine that can reach the API.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import gzip
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

API = "/api/v1/ingest"
# Dependency order: a stage's parents are all in earlier stages.
STAGES: tuple[tuple[str, ...], ...] = (("customers", "products"), ("orders",), ("order_items",))
RECORD_TYPES = tuple(t for stage in STAGES for t in stage)
DATA_SUFFIXES = (".ndjson", ".jsonl")
COMPRESSED_SUFFIXES = ("", ".gz", ".zst")
TERMINAL = frozenset({"completed", "completed_with_errors", "failed"})
PROCESSED = frozenset({"completed", "completed_with_errors"})
STATE_FILE_NAME = ".bulk_ingest_state.json"
MiB = 1 << 20

EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2


# --- the plan -------------------------------------------------------------------------


class ConfigError(Exception):
    """The data directory or the options cannot be used; nothing was sent."""


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    api_key: str
    folder: Path


@dataclass(frozen=True)
class FileJob:
    """One file to upload for one tenant."""

    tenant: Tenant
    path: Path
    record_type: str | None  # None: the server decides from the first rows
    size: int
    stage: int
    via_session: bool

    @property
    def label(self) -> str:
        return f"{self.tenant.name}/{self.path.name}"


@dataclass(frozen=True)
class TenantPlan:
    tenant: Tenant
    stages: tuple[tuple[FileJob, ...], ...]  # non-empty stages, in order

    @property
    def jobs(self) -> list[FileJob]:
        return [job for stage in self.stages for job in stage]


def load_tenants(
    data_dir: Path, *, tenant_id: str | None = None, api_key: str | None = None
) -> list[Tenant]:
    """The tenants of the manifest (`tenants.json`), or, without one, the data directory as
    the one tenant of `api_key`. `tenant_id` (an id or a name) selects one tenant; `api_key`
    replaces the manifest's key."""
    manifest = data_dir / "tenants.json"
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory")
    if not manifest.exists():
        if not api_key:
            raise ConfigError(f"{manifest} does not exist; give --api-key to upload {data_dir}")
        return [Tenant(tenant_id or "", data_dir.name, api_key, data_dir)]
    try:
        entries = json.loads(manifest.read_text())
        tenants = [
            Tenant(
                tenant_id=str(entry["tenant_id"]),
                name=str(entry.get("name") or entry["tenant_id"]),
                api_key=api_key or str(entry.get("api_key") or ""),
                folder=data_dir / str(entry.get("dir") or entry.get("name") or entry["tenant_id"]),
            )
            for entry in entries
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{manifest} is not a list of {{tenant_id, name, api_key, dir}}: {exc}"
        ) from exc
    if tenant_id is not None:
        tenants = [t for t in tenants if tenant_id in (t.tenant_id, t.name)]
        if not tenants:
            raise ConfigError(f"no tenant {tenant_id!r} in {manifest}")
    for tenant in tenants:
        if not tenant.api_key:
            raise ConfigError(f"no api_key for tenant {tenant.name} in {manifest}; use --api-key")
        if not tenant.folder.is_dir():
            raise ConfigError(f"the folder of tenant {tenant.name}, {tenant.folder}, is missing")
    return tenants


def is_data_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and any(
        name.endswith(data + comp) for data in DATA_SUFFIXES for comp in COMPRESSED_SUFFIXES
    )


def record_type_of(path: Path) -> str | None:
    """The record type of a file: the longest type its name starts with, else the id field
    of its first row (plain or gzip files), else None (the server decides)."""
    name = path.name.lower()
    by_name = [t for t in RECORD_TYPES if name.startswith(t)]
    if by_name:
        return max(by_name, key=len)
    return _record_type_of_first_row(path)


def _record_type_of_first_row(path: Path) -> str | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    if path.name.lower().endswith(".zst"):
        return None
    try:
        with opener(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    keys = json.loads(line)
                    break
            else:
                return None
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(keys, dict):
        return None
    for key, record_type in (
        ("order_item_id", "order_items"),
        ("order_id", "orders"),
        ("product_id", "products"),
        ("customer_id", "customers"),
    ):
        if key in keys:
            return record_type
    return None


def stage_of(record_type: str | None) -> int:
    """The 0-based stage of a record type; files of undecided type go last."""
    for index, types in enumerate(STAGES):
        if record_type in types:
            return index
    return len(STAGES)


def build_plan(tenants: Sequence[Tenant], *, session_threshold: int) -> list[TenantPlan]:
    """Every data file of every tenant, grouped into stages in dependency order."""
    plans = []
    for tenant in tenants:
        jobs = []
        for path in sorted(p for p in tenant.folder.iterdir() if p.is_file() and is_data_file(p)):
            record_type = record_type_of(path)
            size = path.stat().st_size
            jobs.append(
                FileJob(
                    tenant=tenant,
                    path=path,
                    record_type=record_type,
                    size=size,
                    stage=stage_of(record_type),
                    via_session=size > session_threshold,
                )
            )
        stages = tuple(
            tuple(job for job in jobs if job.stage == index) for index in range(len(STAGES) + 1)
        )
        plans.append(TenantPlan(tenant, tuple(stage for stage in stages if stage)))
    return plans


def idempotency_key(*, tenant_id: str, record_type: str | None, sha256: str, route: str) -> str:
    """The file's Idempotency-Key: the same content for the same tenant and type gets the
    same key in every run. `route` ("upload" or "session", with a retry number for a
    replacement session) keeps the two endpoints' keys apart."""
    return f"bulk-ingest:{route}:{tenant_id}:{record_type or 'auto'}:{sha256}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def parse_size(text: str) -> int:
    """`8MiB`, `512k`, `1048576` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB, 512KiB, 1048576)")
    number, unit = int(match.group(1)), match.group(2)
    return number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- retries --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is waited in full."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.cap, self.base * 2**attempt)
        return ceiling / 2 + rand() * ceiling / 2  # "equal jitter": spread, never near zero


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None


def problem_of(response: httpx.Response) -> dict:
    """The problem+json body of an error response ({} when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# 409s that only mean "not now": the same Idempotency-Key, or another chunk of the same
# session, is still being received
BUSY_CODES = frozenset({"idempotency_in_flight", "session_busy"})


def is_retryable(response: httpx.Response) -> bool:
    """5xx, 429, and a 409 saying an earlier request is still in flight."""
    if response.status_code == 429 or response.status_code >= 500:
        return True
    return response.status_code == 409 and problem_of(response).get("code") in BUSY_CODES


# --- the state file -------------------------------------------------------------------


class StateFile:
    """Per file: its session token, upload id and offset, so a later run resumes. Written
    atomically (a temporary file renamed over it) after every change; thread-safe."""

    VERSION = 1

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._files: dict[str, dict] = read_state(path) if path is not None else {}

    def get(self, key: str) -> dict:
        with self._lock:
            return dict(self._files.get(key, {}))

    def update(self, key: str, **values: Any) -> None:
        with self._lock:
            self._files[key] = {**self._files.get(key, {}), **values}
            if self.path is not None:
                write_state(self.path, self._files)


def read_state(path: Path) -> dict[str, dict]:
    """The files recorded in a state file; {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != StateFile.VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def write_state(path: Path, files: dict[str, dict]) -> None:
    """Replace the state file in one step: a crash leaves the old or the new one whole."""
    text = json.dumps({"version": StateFile.VERSION, "files": files}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- results --------------------------------------------------------------------------


@dataclass
class FileResult:
    job: FileJob
    upload: dict | None = None  # the upload resource, last seen
    error: str | None = None  # why the file could not be sent or waited for
    fresh: bool = True  # processed in this run (False: it was already done before)
    key_refused: bool = False

    @property
    def state(self) -> str:
        if self.upload is not None and (self.error is None or self.upload["state"] in TERMINAL):
            return self.upload["state"]
        return "not sent" if self.upload is None else f"{self.upload['state']} (not waited for)"

    def rows(self, name: str) -> int:
        return int((self.upload or {}).get("rows", {}).get(name) or 0)


def exit_code(results: Sequence[FileResult]) -> int:
    """0 every file completed cleanly; 1 all processed, some rows rejected or pending; 2 a
    file failed or was not sent (or nothing was run at all)."""
    if not results or any(
        r.error is not None or r.upload is None or r.upload["state"] not in PROCESSED
        for r in results
    ):
        return EXIT_FAILED
    if any(
        r.upload["state"] != "completed" or r.rows("rejected") or r.rows("pending") for r in results
    ):
        return EXIT_REJECTED
    return EXIT_OK


def rows_per_second(upload: dict) -> float:
    return float((upload.get("progress") or {}).get("rows_per_second") or 0.0)


# --- talking to the API ---------------------------------------------------------------


class FileFailed(Exception):
    """This file cannot be sent or processed; the message says why."""


class KeyRefused(FileFailed):
    """401: the tenant's API key is wrong or revoked; nothing more is sent for the tenant."""


class Interrupted(Exception):
    """The run is stopping (Ctrl-C or the test hook); state is saved, a rerun resumes."""


class SessionGone(Exception):
    """The session is unknown (404) or expired (410): start a new one."""


def client_error(response: httpx.Response, what: str) -> FileFailed:
    """A clear exception for a 4xx a retry cannot fix."""
    problem = problem_of(response)
    detail = problem.get("detail") or response.text[:300] or response.reason_phrase
    if response.status_code == 401:
        return KeyRefused(
            f"the API key was refused (401 {problem.get('title') or 'Unauthorized'}: {detail}); "
            "check the manifest's api_key or --api-key"
        )
    return FileFailed(f"{what}: HTTP {response.status_code}: {detail}")


@dataclass(frozen=True)
class Options:
    parallel: int = 4
    chunk_size: int = 4 * MiB
    session_threshold: int = 8 * MiB
    wait_timeout: float = 3600.0
    poll_interval: float = 0.25
    stop_after_chunks: int | None = None  # test hook: stop as if interrupted


class Reporter:
    """Progress bars (bytes sent, then rows processed server-side) and notes."""

    def __init__(self, console: Console, *, enabled: bool = True):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.fields[label]}", style="bold"),
            TextColumn("{task.fields[phase]}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self._tasks: dict[FileJob, Any] = {}

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, job: FileJob) -> None:
        self._tasks[job] = self.progress.add_task(
            "", total=job.size or 1, label=escape(job.label), phase="waiting", start=False
        )

    def _update(self, job: FileJob, **values: Any) -> None:
        task = self._tasks.get(job)
        if task is not None:
            self.progress.start_task(task)
            self.progress.update(task, **values)

    def sending(self, job: FileJob, sent: int, *, phase: str = "sending") -> None:
        self._update(job, completed=sent, phase=phase)

    def loading(self, job: FileJob, upload: dict) -> None:
        rows = (upload.get("progress") or {}).get("rows_done") or upload["rows"]["total"]
        done = (upload.get("progress") or {}).get("bytes_done") or 0
        if upload["state"] in TERMINAL:
            done = job.size
        self._update(job, completed=done, phase=f"{upload['state']}, {rows:,} rows")

    def failed(self, job: FileJob) -> None:
        self._update(job, phase="[red]not sent[/]")

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)


class Runner:
    """One run: uploads every plan's files through one HTTP client."""

    def __init__(
        self,
        *,
        client: httpx.Client,
        policy: RetryPolicy,
        state: StateFile,
        reporter: Reporter,
        options: Options,
        stop: threading.Event,
    ):
        self.client = client
        self.policy = policy
        self.state = state
        self.reporter = reporter
        self.options = options
        self.stop = stop
        self._chunks = 0
        self._chunks_lock = threading.Lock()

    # -- the run

    def run(self, plans: Sequence[TenantPlan]) -> list[FileResult]:
        """Every tenant at once (up to --parallel), each tenant stage by stage; the files of
        a stage share a pool of --parallel uploads."""
        with (
            ThreadPoolExecutor(self.options.parallel, "file") as files,
            ThreadPoolExecutor(self.options.parallel, "tenant") as tenants,
        ):
            futures = [tenants.submit(self.run_tenant, plan, files) for plan in plans]
            pending = set(futures)
            while pending:  # short waits: Ctrl-C reaches this thread promptly
                try:
                    _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    if self.stop.is_set():
                        raise
                    self.stop.set()  # every thread stops at its next request or poll
                    self.reporter.note(
                        "interrupted: finishing the requests in flight (Ctrl-C again to quit)"
                    )
            return [result for future in futures for result in future.result()]

    def run_tenant(self, plan: TenantPlan, files: ThreadPoolExecutor) -> list[FileResult]:
        results: list[FileResult] = []
        refused: str | None = None
        for stage in plan.stages:
            if refused is not None or self.stop.is_set():
                reason = refused or "interrupted before this stage"
                results += [FileResult(job, error=reason) for job in stage]
                continue
            sent = [f.result() for f in [files.submit(self.send, job) for job in stage]]
            for result in sent:
                if result.key_refused:
                    refused = result.error
            self.wait_stage([r for r in sent if r.upload is not None and r.error is None])
            results += sent
        return results

    def send(self, job: FileJob) -> FileResult:
        """Send one file (or find it already sent); a result with the upload or the error."""
        result = FileResult(job)
        try:
            sha256 = file_sha256(job.path)
            key = f"{job.tenant.tenant_id or job.tenant.name}:{job.record_type}:{sha256}"
            upload = self._known_upload(job, key, sha256)
            if upload is not None and upload["state"] == "failed":
                upload = self._rerun_failed(job, key, upload)
            if upload is None:
                if job.via_session:
                    upload = self.send_session(job, key, sha256)
                else:
                    upload = self.send_whole(job, key, sha256)
            if upload["state"] not in TERMINAL:  # a replayed answer is stale: ask again
                upload = self.get_upload(job, upload["id"]) or upload
            result.upload = upload
            result.fresh = upload["state"] not in TERMINAL
            self.reporter.loading(job, upload)
        except FileFailed as exc:
            result.error = str(exc)
            result.key_refused = isinstance(exc, KeyRefused)
            self.reporter.failed(job)
        except Interrupted:
            result.error = "interrupted"
            self.reporter.failed(job)
        return result

    def wait_stage(self, results: list[FileResult]) -> None:
        """Poll the stage's uploads until each is completed or failed server-side."""
        deadline = time.monotonic() + self.options.wait_timeout
        interval = self.options.poll_interval
        waiting = [r for r in results if r.upload["state"] not in TERMINAL]
        while waiting:
            if self.stop.wait(interval):
                for result in waiting:
                    result.error = "interrupted while the server was processing it"
                return
            interval = min(interval * 1.5, 0.5)  # a stage's end is seen soon after
            for result in list(waiting):
                try:
                    upload = self.get_upload(result.job, result.upload["id"])
                except (FileFailed, Interrupted) as exc:
                    result.error = str(exc) or "interrupted"
                    waiting.remove(result)
                    continue
                if upload is None:
                    result.error = "the upload disappeared from the server (404)"
                    waiting.remove(result)
                    continue
                result.upload = upload
                self.reporter.loading(result.job, upload)
                if upload["state"] in TERMINAL:
                    waiting.remove(result)
            if waiting and time.monotonic() > deadline:
                for result in waiting:
                    result.error = f"not done after {self.options.wait_timeout:.0f}s"
                return

    # -- HTTP with retries

    def request(
        self,
        job: FileJob,
        method: str,
        url: str,
        *,
        body: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, retried on connection errors, 5xx, 429 and an in-flight 409.
        `body` makes a fresh request body for every attempt. Other answers are returned."""
        headers = {"X-API-Key": job.tenant.api_key, **(headers or {})}
        for attempt in range(self.policy.attempts):
            if self.stop.is_set():
                raise Interrupted
            try:
                response = self.client.request(
                    method, url, headers=headers, content=body() if body else None, **kwargs
                )
            except httpx.TransportError as exc:
                problem, retry_after = f"{type(exc).__name__}: {exc}".rstrip(": "), None
            else:
                if not is_retryable(response):
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt + 1 == self.policy.attempts:
                raise FileFailed(
                    f"{method} {url}: gave up after {self.policy.attempts} attempts ({problem})"
                )
            delay = self.policy.delay(attempt, retry_after=retry_after)
            self.reporter.note(f"{job.label}: {problem}; retrying in {delay:.1f}s")
            if self.stop.wait(delay):
                raise Interrupted
        raise AssertionError("unreachable")

    def post_idempotent(
        self, job: FileJob, url: str, *, key: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """POST with an Idempotency-Key. When the key was used for other parameters (the
        same content sent earlier under another file name) a key that adds the name is
        used instead; the server still recognises the identical bytes."""
        response = self.request(
            job, "POST", url, headers={**headers, "Idempotency-Key": key}, **kwargs
        )
        if response.status_code == 422 and problem_of(response).get("code") == (
            "idempotency_mismatch"
        ):
            named = f"{key}:{hashlib.sha256(job.path.name.encode()).hexdigest()[:16]}"
            response = self.request(
                job, "POST", url, headers={**headers, "Idempotency-Key": named}, **kwargs
            )
        return response

    def get_upload(self, job: FileJob, upload_id: str) -> dict | None:
        response = self.request(job, "GET", f"{API}/uploads/{upload_id}/")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise client_error(response, "reading the upload's status")
        return response.json()

    def _known_upload(self, job: FileJob, key: str, sha256: str) -> dict | None:
        """The upload an earlier run made of this very file, if the server still has it."""
        saved = self.state.get(key)
        if saved.get("upload_id"):
            upload = self.get_upload(job, saved["upload_id"])
            if upload is not None and upload.get("sha256") in (None, "", sha256):
                return upload
        return None

    def _rerun_failed(self, job: FileJob, key: str, upload: dict) -> dict:
        """An earlier run's upload failed in processing (a worker lost, a limit since
        raised): resuming its session runs it again from the stored bytes. Not a strict
        upload's bad rows, which the same bytes would fail again."""
        code = (upload.get("error") or {}).get("code")
        token = self.state.get(key).get("token")
        if not token or code == "strict_rejected":
            return upload
        response = self.request(job, "POST", f"{API}/sessions/{token}/resume/")
        if response.status_code != 202:
            return upload
        self.reporter.note(
            f"{job.label}: its processing failed last time ({code}); running it again"
        )
        return self.get_upload(job, upload["id"]) or upload

    # -- one request for the whole file

    def send_whole(self, job: FileJob, key: str, sha256: str) -> dict:
        def body() -> Iterator[bytes]:
            sent = 0
            self.reporter.sending(job, 0)
            with job.path.open("rb") as fh:
                while chunk := fh.read(MiB):
                    sent += len(chunk)
                    self.reporter.sending(job, sent)
                    yield chunk

        params = {"filename": job.path.name}
        if job.record_type:
            params["type"] = job.record_type
        compressed = job.path.name.lower().endswith((".gz", ".zst"))
        response = self.post_idempotent(
            job,
            f"{API}/comprehensive/",
            key=idempotency_key(
                tenant_id=job.tenant.tenant_id,
                record_type=job.record_type,
                sha256=sha256,
                route="upload",
            ),
            body=body,
            params=params,
            headers={
                # a generator body is sent chunked unless its length is given
                "Content-Length": str(job.size),
                "Content-Type": (
                    "application/octet-stream" if compressed else "application/x-ndjson"
                ),
            },
        )
        if response.status_code not in (200, 202):
            raise client_error(response, "uploading")
        upload = response.json()
        self.state.update(key, path=str(job.path), size=job.size, upload_id=upload["id"])
        return upload

    # -- resumable sessions

    def send_session(self, job: FileJob, key: str, sha256: str) -> dict:
        """Send the file in chunks through a session, continuing a saved one if it is
        still open; a new session replaces one that expired, failed or is unknown."""
        saved = self.state.get(key)
        attempt = int(saved.get("attempt", 0))  # replacement sessions get their own key
        session = None
        if saved.get("token"):
            session = self._session_continue(job, saved["token"])
            if session is None or session["state"] in ("failed", "expired"):
                attempt, session = attempt + 1, None
            elif session["state"] == "open" and session["offset"]:
                self.reporter.note(
                    f"{job.label}: resuming session at byte {session['offset']:,} of {job.size:,}"
                )
        for _ in range(3):
            if session is None:
                session = self._session_create(job, sha256, attempt)
                if session is None:  # the key's session is gone: a fresh key
                    attempt += 1
                    continue
                self.state.update(
                    key, path=str(job.path), size=job.size, token=session["token"], attempt=attempt
                )
            if session["state"] == "complete":
                return self._session_upload(job, key, session)
            if session["state"] in ("failed", "expired"):
                attempt, session = attempt + 1, None
                continue
            try:
                upload = self._send_chunks(job, key, session)
            except SessionGone:
                attempt, session = attempt + 1, None
                continue
            self.state.update(key, upload_id=upload["id"], offset=job.size)
            return upload
        raise FileFailed("upload sessions kept expiring or failing; giving up")

    def _session_continue(self, job: FileJob, token: str) -> dict | None:
        """The saved session as the server sees it now; an open one is resumed."""
        response = self.request(job, "GET", f"{API}/sessions/{token}/status/")
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise client_error(response, "reading the session's status")
        session = response.json()
        if session["state"] != "open":
            return session
        response = self.request(job, "POST", f"{API}/sessions/{token}/resume/")
        if response.status_code in (404, 410):
            return None
        if response.status_code not in (200, 202):
            raise client_error(response, "resuming the session")
        return response.json()

    def _session_create(self, job: FileJob, sha256: str, attempt: int) -> dict | None:
        payload: dict[str, Any] = {"filename": job.path.name, "size": job.size, "sha256": sha256}
        if job.record_type:
            payload["type"] = job.record_type
        route = "session" if attempt == 0 else f"session-{attempt}"
        response = self.post_idempotent(
            job,
            f"{API}/sessions/",
            key=idempotency_key(
                tenant_id=job.tenant.tenant_id,
                record_type=job.record_type,
                sha256=sha256,
                route=route,
            ),
            headers={},
            json=payload,
        )
        if response.status_code not in (200, 201):
            raise client_error(response, "creating an upload session")
        session = response.json()
        if response.headers.get("Idempotent-Replayed") == "true":
            # a replay shows the session as it was created: ask where it is now
            return self._session_continue(job, session["token"])
        return session

    def _session_upload(self, job: FileJob, key: str, session: dict) -> dict:
        if not session.get("upload_id"):
            raise FileFailed(f"session {session['token']} is complete but has no upload")
        self.state.update(key, upload_id=session["upload_id"], offset=job.size)
        upload = self.get_upload(job, session["upload_id"])
        if upload is None:
            raise FileFailed(f"the session's upload {session['upload_id']} is not found")
        return upload

    def _send_chunks(self, job: FileJob, key: str, session: dict) -> dict:
        """PATCH chunks from the session's offset until the server answers with the
        upload; a 409 moves to the offset the server has."""
        token = session["token"]
        offset = int(session["offset"])
        url = f"{API}/sessions/{token}/"
        stalled = 0
        with job.path.open("rb") as fh:
            while True:
                self.reporter.sending(job, offset)
                fh.seek(offset)
                data = fh.read(self.options.chunk_size)
                response = self.request(
                    job,
                    "PATCH",
                    url,
                    body=lambda data=data: data,
                    headers={
                        "Upload-Token": token,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                )
                status = response.status_code
                if status in (404, 410):
                    raise SessionGone
                if status == 422:
                    raise FileFailed(
                        "the server's sha256 of the received bytes does not match the file's "
                        f"(changed while it was sent?): {problem_of(response).get('detail', '')}"
                    )
                if status not in (200, 202, 409):
                    raise client_error(response, f"sending bytes {offset:,}+")
                if status == 409 and problem_of(response).get("code") == "session_failed":
                    detail = problem_of(response).get("detail", "")
                    raise FileFailed(f"the upload session failed: {detail}")
                body = response.json()
                if status in (200, 202) and "rows" in body:
                    self.reporter.sending(job, job.size, phase="sent")
                    return body  # the chunk that completed the file: the upload
                if body.get("state") == "complete" and body.get("upload_id"):
                    return self._session_upload(job, key, body)
                new_offset = offset_of(response)
                if new_offset is None:
                    raise FileFailed(f"the server gave no Upload-Offset (HTTP {status})")
                if status == 409 and new_offset >= job.size:
                    # every byte is there already (an answer lost on the way): ask for the result
                    current = self._session_continue(job, token)
                    if current is None:
                        raise SessionGone
                    if current["state"] == "complete":
                        return self._session_upload(job, key, current)
                stalled = stalled + 1 if new_offset <= offset or status == 409 else 0
                if stalled > 5:
                    raise FileFailed(f"the server does not take bytes at offset {offset:,}")
                offset = new_offset
                self.state.update(key, offset=offset)
                if status != 409:
                    self._count_chunk()

    def _count_chunk(self) -> None:
        limit = self.options.stop_after_chunks
        if limit is None:
            return
        with self._chunks_lock:
            self._chunks += 1
            if self._chunks >= limit:
                self.stop.set()


def offset_of(response: httpx.Response) -> int | None:
    """The server's offset: the Upload-Offset header, else `offset` in the body."""
    header = response.headers.get("Upload-Offset", "").strip()
    if header.isdigit():
        return int(header)
    value = problem_of(response).get("offset")
    return int(value) if isinstance(value, int) else None


# --- output ---------------------------------------------------------------------------


def plan_table(plans: Sequence[TenantPlan], *, chunk_size: int) -> Table:
    table = Table(title="plan (dry run: nothing is uploaded)")
    for name in ("tenant", "stage", "file", "type", "size", "route"):
        table.add_column(name, justify="right" if name == "size" else "left")
    for plan in plans:
        for number, stage in enumerate(plan.stages, start=1):
            for job in stage:
                chunks = -(-job.size // chunk_size)
                route = f"session ({chunks} chunks)" if job.via_session else "one request"
                table.add_row(
                    escape(plan.tenant.name),
                    str(number),
                    escape(job.path.name),
                    job.record_type or "(server decides)",
                    format_size(job.size),
                    route,
                )
    return table


def result_table(results: Sequence[FileResult]) -> Table:
    table = Table(title="bulk ingestion")
    for name in ("tenant", "file", "type", "state"):
        table.add_column(name, no_wrap=True)
    for name in ("inserted", "updated", "rejected", "pending"):
        table.add_column(name, justify="right")
    table.add_column("rows/s", justify="right")
    for r in results:
        state = r.state
        style = {"completed": "green", "completed_with_errors": "yellow"}.get(state, "red")
        table.add_row(
            escape(r.job.tenant.name),
            escape(r.job.path.name),
            (r.upload or {}).get("type") or r.job.record_type or "?",
            f"[{style}]{escape(state)}[/]",
            *(f"{r.rows(name):,}" for name in ("inserted", "updated", "rejected", "pending")),
            f"{rows_per_second(r.upload):,.0f}" if r.upload else "",
        )
    return table


def summary_line(results: Sequence[FileResult], seconds: float) -> str:
    fresh = [r for r in results if r.upload is not None and r.fresh]
    rows = sum(r.rows("total") for r in fresh)
    if not fresh:
        if all(r.upload is not None for r in results):
            return f"nothing new to load: all {len(results)} file(s) were loaded before"
        return "no rows were loaded in this run"
    return (
        f"overall: {rows:,} rows in {seconds:.1f} s, first request to last upload done: "
        f"{rows / max(seconds, 1e-9):,.0f} rows/s"
    )


def failures(results: Sequence[FileResult]) -> dict[tuple[str, str], list[str]]:
    """Files that failed, grouped by tenant and message (a refused key is said once)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.error is not None:
            grouped.setdefault((r.job.tenant.name, r.error), []).append(r.job.label)
    return grouped


# --- the command ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bulk_ingest.py",
        description="Upload a data directory (one folder per tenant and tenants.json) through "
        "the HTTP API, in dependency order, resumably and idempotently.",
        epilog="Exit codes: 0 every file completed with no rejected or pending rows; 1 every "
        "file was processed but some rows were rejected or are pending; 2 a file failed or "
        "could not be sent (a refused API key included), or the run was interrupted.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("generated_data"),
        help="one folder per tenant and tenants.json (default: %(default)s)",
    )
    parser.add_argument(
        "--api-url",
        default=os.environ.get("INGEST_API_URL", "http://localhost:8000"),
        help="the service's base URL (default: $INGEST_API_URL or %(default)s)",
    )
    parser.add_argument(
        "--tenant-id", help="upload only this tenant (its id or its name in tenants.json)"
    )
    parser.add_argument(
        "--api-key",
        help="use this API key instead of the manifest's (without tenants.json: upload the "
        "files of --data-dir itself for this key)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan in order and upload nothing"
    )
    parser.add_argument(
        "--parallel", type=int, default=4, help="files sent at once (default: %(default)s)"
    )
    parser.add_argument(
        "--session-threshold",
        type=parse_size,
        default=8 * MiB,
        help="files larger than this go through resumable sessions (default: 8MiB)",
    )
    parser.add_argument(
        "--chunk-size",
        type=parse_size,
        default=4 * MiB,
        help="bytes per session chunk (default: 4MiB)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        help=f"where the resume state is kept (default: DATA_DIR/{STATE_FILE_NAME})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=8,
        help="attempts per request on connection errors, 5xx and 429 (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for one HTTP response (default: %(default)s)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait for a stage's uploads to be processed (default: %(default)s)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the table still prints)"
    )
    parser.add_argument(
        "--stop-after-chunks",
        type=int,
        metavar="N",
        help="for testing resumption: stop as if interrupted after N session chunks",
    )
    args = parser.parse_args(argv)
    if args.parallel < 1 or args.retries < 1 or args.chunk_size < 1:
        parser.error("--parallel, --retries and --chunk-size must be at least 1")
    return args


def api_base(url: str) -> str:
    """The service's root URL; a URL ending in /api/v1 is accepted too."""
    url = url.rstrip("/")
    return url[: -len("/api/v1")] if url.endswith("/api/v1") else url


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run the command; returns the exit code."""
    args = parse_args(argv)
    width = None if sys.stdout.isatty() else 132  # piped: wide enough for the table
    console = console or Console(highlight=False, width=width)
    errors = Console(stderr=True, highlight=False, width=width, soft_wrap=True)
    try:
        tenants = load_tenants(args.data_dir, tenant_id=args.tenant_id, api_key=args.api_key)
        plans = build_plan(tenants, session_threshold=args.session_threshold)
    except (ConfigError, OSError) as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_FAILED
    if not any(plan.jobs for plan in plans):
        where = escape(str(args.data_dir))
        errors.print(f"[red]error:[/] no .ndjson or .jsonl files (or .gz, .zst) in {where}")
        return EXIT_FAILED
    if args.dry_run:
        console.print(plan_table(plans, chunk_size=args.chunk_size))
        files = sum(len(plan.jobs) for plan in plans)
        size = sum(job.size for plan in plans for job in plan.jobs)
        console.print(
            f"{files} file(s), {format_size(size)}, for {len(plans)} tenant(s); per tenant the "
            "stages run in order, the files of a stage in parallel"
        )
        return EXIT_OK

    options = Options(
        parallel=args.parallel,
        chunk_size=args.chunk_size,
        session_threshold=args.session_threshold,
        wait_timeout=args.wait_timeout,
        stop_after_chunks=args.stop_after_chunks,
    )
    stop = threading.Event()
    state = StateFile(args.state_file or args.data_dir / STATE_FILE_NAME)
    limits = httpx.Limits(max_connections=4 * args.parallel, max_keepalive_connections=None)
    timeout = httpx.Timeout(args.timeout, connect=min(args.timeout, 10.0))
    started = time.perf_counter()
    with (
        httpx.Client(base_url=api_base(args.api_url), timeout=timeout, limits=limits) as client,
        Reporter(console, enabled=not args.no_progress) as reporter,
    ):
        for plan in plans:
            for job in plan.jobs:
                reporter.add(job)
        runner = Runner(
            client=client,
            policy=RetryPolicy(attempts=args.retries),
            state=state,
            reporter=reporter,
            options=options,
            stop=stop,
        )
        try:
            results = runner.run(plans)
        except KeyboardInterrupt:
            errors.print("[red]stopped.[/] Run the same command again to continue.")
            return EXIT_FAILED
    seconds = time.perf_counter() - started
    console.print(result_table(results))
    console.print(summary_line(results, seconds), soft_wrap=True)
    for (tenant, error), labels in failures(results).items():
        which = labels[0] if len(labels) == 1 else f"{tenant} ({len(labels)} files)"
        errors.print(f"[red]{escape(which)}:[/] {escape(error)}")
    if stop.is_set():
        errors.print(
            f"[yellow]interrupted:[/] run the same command again to continue "
            f"(state: {escape(str(state.path))})"
        )
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
