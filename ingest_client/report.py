"""What the operator sees: progress bars, the plan and result tables, and the exit code.

Exit codes: 0 every file completed with no rejected or pending rows; 1 every file was
processed but some rows were rejected or are still pending; 2 a file failed or could not
be sent (a refused API key included), or the run was interrupted (run it again to resume).

A validation run (`--validate-only`, every file a dry run) exits 0 when no row would be
rejected, 1 when some would, 2 as above. Rows that would be held pending do not count:
a validation run loads nothing, so the children of parents sent in the same run are held
for them (`validation_exit_code`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingest_client.plan import FileJob, TenantPlan

# An upload's states as the API reports them
TERMINAL = frozenset({"completed", "completed_with_errors", "failed"})
PROCESSED = frozenset({"completed", "completed_with_errors"})

EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2


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


def validation_exit_code(results: Sequence[FileResult]) -> int:
    """A validation run's: 0 every file was checked and no row would be rejected; 1 some
    rows would be; 2 a file failed or was not sent (or nothing was run at all)."""
    if not results or any(
        r.error is not None or r.upload is None or r.upload["state"] not in PROCESSED
        for r in results
    ):
        return EXIT_FAILED
    if any(r.rows("rejected") for r in results):
        return EXIT_REJECTED
    return EXIT_OK


def rows_per_second(upload: dict) -> float:
    return float((upload.get("progress") or {}).get("rows_per_second") or 0.0)


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


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


def plan_summary(plans: Sequence[TenantPlan]) -> str:
    files = sum(len(plan.jobs) for plan in plans)
    size = sum(job.size for plan in plans for job in plan.jobs)
    return (
        f"{files} file(s), {format_size(size)}, for {len(plans)} tenant(s); per tenant the "
        "stages run in order, the files of a stage in parallel"
    )


def result_table(results: Sequence[FileResult], *, validation: bool = False) -> Table:
    title = "validation run (dry runs: nothing was loaded)" if validation else "bulk ingestion"
    table = Table(title=title)
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


def validation_summary(results: Sequence[FileResult], seconds: float) -> str:
    checked = [r for r in results if r.upload is not None]
    rows = sum(r.rows("total") for r in checked)
    rejected = sum(r.rows("rejected") for r in checked)
    pending = sum(r.rows("pending") for r in checked)
    line = (
        f"validated: {rows:,} rows of {len(checked)} file(s) in {seconds:.1f} s; "
        f"{rejected:,} would be rejected (see each upload's errors), nothing was loaded"
    )
    if pending:
        line += (
            f"; {pending:,} would be held pending: their parents are not in the tenant's "
            "data yet (parents in this run's files count only once they are loaded)"
        )
    return line


def failures(results: Sequence[FileResult]) -> dict[tuple[str, str], list[str]]:
    """Files that failed, grouped by tenant and message (a refused key is said once)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.error is not None:
            grouped.setdefault((r.job.tenant.name, r.error), []).append(r.job.label)
    return grouped


def print_results(
    results: Sequence[FileResult],
    seconds: float,
    *,
    console: Console,
    errors: Console,
    validation: bool = False,
) -> None:
    """The result table and the overall line on `console`; each failure once on `errors`."""
    console.print(result_table(results, validation=validation))
    summary = validation_summary if validation else summary_line
    console.print(summary(results, seconds), soft_wrap=True)
    for (tenant, error), labels in failures(results).items():
        which = labels[0] if len(labels) == 1 else f"{tenant} ({len(labels)} files)"
        errors.print(f"[red]{escape(which)}:[/] {escape(error)}")
