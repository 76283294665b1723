"""The bulk ingestion command: its options (argparse) and `main()`, which runs a plan.

    bulk-ingest --data-dir generated_data --api-url http://localhost:8000

also reachable as `python bulk_ingest.py`, `scripts/bulk_ingest.py` and
`python -m ingest_client`. Exit codes: see `ingest_client.report`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ingest_client.plan import ConfigError, TenantPlan, build_plan, load_tenants
from ingest_client.report import (
    EXIT_FAILED,
    EXIT_OK,
    Reporter,
    exit_code,
    plan_summary,
    plan_table,
    print_results,
    validation_exit_code,
)
from ingest_client.runner import Options, Runner
from ingest_client.state import STATE_FILE_NAME, MiB, StateFile
from ingest_client.transport import RetryPolicy, api_url_arg, open_client


def parse_size(text: str) -> int:
    """`8MiB`, `512k`, `1048576` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB, 512KiB, 1048576)")
    number, unit = int(match.group(1)), match.group(2)
    return number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def _add_what_to_send(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("generated_data"),
        help="one folder per tenant and tenants.json (default: %(default)s)",
    )
    parser.add_argument(
        "--api-url",
        type=api_url_arg,
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
        "--validate-only",
        action="store_true",
        help="send every file as a dry run: the server processes and reports it as it would "
        "load it, then rolls it back (nothing is loaded); no state file is kept. Exit 0 when "
        "no row would be rejected, 1 when some would, 2 as below",
    )


def _add_how_to_send(parser: argparse.ArgumentParser) -> None:
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
        help="attempts per request on connection errors and 5xx (default: %(default)s); a "
        "429 is waited out for as long as the server says, and not counted",
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


def parse_args(argv: Sequence[str] | None, *, prog: str | None = None) -> argparse.Namespace:
    """The command's options; `prog` names the command in --help (default: argv[0])."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Upload a data directory (one folder per tenant and tenants.json) through "
        "the HTTP API, in dependency order, resumably and idempotently.",
        epilog="Exit codes: 0 every file completed with no rejected or pending rows; 1 every "
        "file was processed but some rows were rejected or are pending; 2 a file failed or "
        "could not be sent (a refused API key included), or the run was interrupted. With "
        "--validate-only: 0 no row would be rejected, 1 some would (rows that would be "
        "pending do not count), 2 as before. "
        "Live records from stdin or a growing file: %(prog)s stream --type T [FILE] "
        "(see %(prog)s stream --help).",
    )
    _add_what_to_send(parser)
    _add_how_to_send(parser)
    args = parser.parse_args(argv)
    if args.parallel < 1 or args.retries < 1 or args.chunk_size < 1:
        parser.error("--parallel, --retries and --chunk-size must be at least 1")
    return args


def main(
    argv: Sequence[str] | None = None,
    *,
    console: Console | None = None,
    prog: str | None = None,
    stop_after_chunks: int | None = None,
) -> int:
    """Run the command; returns the exit code. `stop_after_chunks` is a test hook, not an
    option: the run stops as if interrupted after that many session chunks. A first argument
    `stream` runs the live-records command instead (`ingest_client.stream`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stream"]:
        from ingest_client.stream import main as stream_main  # only what it needs, on demand

        return stream_main(argv[1:], prog=prog or os.path.basename(sys.argv[0]))
    args = parse_args(argv, prog=prog)
    width = None if sys.stdout.isatty() else 132  # piped: wide enough for the table
    console = console or Console(highlight=False, width=width)
    errors = Console(stderr=True, highlight=False, width=width, soft_wrap=True)
    try:
        tenants = load_tenants(args.data_dir, tenant_id=args.tenant_id, api_key=args.api_key)
        plans = build_plan(tenants, session_threshold=args.session_threshold)
    except (ConfigError, OSError) as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_FAILED
    for plan in plans:
        for path in plan.empty:
            console.print(f"{escape(plan.tenant.name)}/{escape(path.name)}: empty, skipped")
        for path, what in plan.unsendable:
            where = f"{escape(plan.tenant.name)}/{escape(path.name)}"
            errors.print(f"[red]{where}:[/] {escape(what)}, not sent")
    # a data-named entry that cannot be sent is a file that was not sent: the run fails
    unsendable = any(plan.unsendable for plan in plans)
    if not any(plan.jobs for plan in plans):
        if unsendable:
            return EXIT_FAILED
        if any(plan.empty for plan in plans):
            return EXIT_OK  # every file is empty: nothing to load, nothing failed
        where = escape(str(args.data_dir))
        errors.print(f"[red]error:[/] no .ndjson or .jsonl files (or .gz, .zst) in {where}")
        return EXIT_FAILED
    if args.dry_run:
        console.print(plan_table(plans, chunk_size=args.chunk_size))
        console.print(plan_summary(plans))
        return EXIT_FAILED if unsendable else EXIT_OK
    options = Options(
        parallel=args.parallel,
        chunk_size=args.chunk_size,
        session_threshold=args.session_threshold,
        wait_timeout=args.wait_timeout,
        stop_after_chunks=stop_after_chunks,
        validate_only=args.validate_only,
        run_tag=uuid.uuid4().hex if args.validate_only else "",
    )
    code = _upload(plans, args, options, console=console, errors=errors)
    return EXIT_FAILED if unsendable else code


def _upload(
    plans: Sequence[TenantPlan],
    args: argparse.Namespace,
    options: Options,
    *,
    console: Console,
    errors: Console,
) -> int:
    """Run the plans with progress bars, then print the results; the exit code. A
    validation run keeps its state in memory: a real run must never take its dry runs for
    uploads of the files, and a validation run again checks every file anew."""
    stop = threading.Event()
    if options.validate_only:
        state = StateFile(None)
    else:
        state = StateFile(args.state_file or args.data_dir / STATE_FILE_NAME)
    started = time.perf_counter()
    with (
        open_client(args.api_url, timeout=args.timeout, connections=4 * args.parallel) as client,
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
    validation = options.validate_only
    print_results(results, seconds, console=console, errors=errors, validation=validation)
    if stop.is_set():
        where = "" if state.path is None else f" (state: {escape(str(state.path))})"
        again = "run it again" if validation else "run the same command again to continue"
        errors.print(f"[yellow]interrupted:[/] {again}{where}")
    return validation_exit_code(results) if validation else exit_code(results)
