"""A bulk run: every tenant at once, each tenant stage by stage, a stage's files in parallel.

A stage's uploads are waited for server-side before the next stage starts (its parents must
be loaded first). Ctrl-C (or the test hook) sets `stop`: every thread stops at its next
request or poll, the state file keeps what a rerun needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx

from ingest_client.plan import FileJob, TenantPlan
from ingest_client.report import TERMINAL, FileResult, Reporter
from ingest_client.state import MiB, StateFile
from ingest_client.transport import Interrupted, KeyRefused, RequestFailed, RetryPolicy, Transport
from ingest_client.upload import FileSender


@dataclass(frozen=True)
class Options:
    parallel: int = 4
    chunk_size: int = 4 * MiB
    session_threshold: int = 8 * MiB
    wait_timeout: float = 3600.0
    poll_interval: float = 0.25
    stop_after_chunks: int | None = None  # test hook: stop as if interrupted
    validate_only: bool = False  # every file a dry run: processed, reported, rolled back
    run_tag: str = ""  # a validation run's own, in its Idempotency-Keys


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
        self.reporter = reporter
        self.options = options
        self.stop = stop
        self.sender = FileSender(
            transport=Transport(client, policy=policy, stop=stop, note=reporter.note),
            state=state,
            reporter=reporter,
            chunk_size=options.chunk_size,
            on_chunk=self._count_chunk,
            dry_run=options.validate_only,
            run_tag=options.run_tag,
        )
        self._chunks = 0
        self._chunks_lock = threading.Lock()

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
            upload = self.sender.send(job)
            result.upload = upload
            result.fresh = upload["state"] not in TERMINAL
            self.reporter.loading(job, upload)
        except RequestFailed as exc:
            result.error = str(exc)
            result.key_refused = isinstance(exc, KeyRefused)
            self.reporter.failed(job)
        except Interrupted:
            result.error = "interrupted"
            self.reporter.failed(job)
        except OSError as exc:  # the file itself: gone, unreadable, a directory now
            result.error = f"cannot read {job.path}: {exc.strerror or exc}"
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
                if not self._poll(result):
                    waiting.remove(result)
            if waiting and time.monotonic() > deadline:
                for result in waiting:
                    result.error = f"not done after {self.options.wait_timeout:.0f}s"
                return

    def _poll(self, result: FileResult) -> bool:
        """Refresh one result's upload; False once there is nothing more to wait for."""
        try:
            upload = self.sender.get_upload(result.job, result.upload["id"])
        except (RequestFailed, Interrupted) as exc:
            result.error = str(exc) or "interrupted"
            return False
        if upload is None:
            result.error = "the upload disappeared from the server (404)"
            return False
        result.upload = upload
        self.reporter.loading(result.job, upload)
        return upload["state"] not in TERMINAL

    def _count_chunk(self) -> None:
        limit = self.options.stop_after_chunks
        if limit is None:
            return
        with self._chunks_lock:
            self._chunks += 1
            if self._chunks >= limit:
                self.stop.set()
