"""`bulk_ingest.py stream --type T [FILE] [--follow]`: NDJSON from stdin or a file, sent as
live records through `Client`, with one live line (records/s sent, batches merged).

With `--follow` the file is read as it grows, like `tail -F`: when it is replaced (another
inode) or truncated (smaller than what was read), what the old one still held is read, then
the file is reopened from its start. Ctrl-C
stops reading, then everything read is sent (a second Ctrl-C gives up on retries). With
`--position PATH` a stream started again goes on after the last line the server answered
for (`ingest_client.position`). Exit codes: 0 every record accepted, 1 some rows rejected,
2 records not sent or a bad option.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from ingest_client.live import Client, Counts, Reject, SendFailed
from ingest_client.merge_watch import POLL_EVERY, MergeWatch, wait_merged
from ingest_client.position import FileReader, Position, Start
from ingest_client.report import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from ingest_client.transport import KeyRefused, RetryPolicy, api_key_problem, api_url_arg

RECORD_TYPES = ("customers", "products", "orders", "order_items")


def parse_args(argv: Sequence[str], *, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{prog} stream" if prog else None,
        description="Send NDJSON records of one type as live records, from stdin or FILE "
        "(with --follow: as FILE grows, like tail -F).",
        epilog="Exit codes: 0 every record was accepted; 1 some rows were rejected; 2 some "
        "records could not be sent. Ctrl-C stops reading and sends what was read.",
    )
    parser.add_argument("--type", required=True, choices=RECORD_TYPES, dest="record_type")
    parser.add_argument("file", nargs="?", help="an NDJSON file (default or '-': stdin)")
    parser.add_argument(
        "--api-url",
        type=api_url_arg,
        default=os.environ.get("INGEST_API_URL", "http://localhost:8000"),
        help="the service's base URL (default: $INGEST_API_URL or %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("INGEST_API_KEY"), help="(default: $INGEST_API_KEY)"
    )
    parser.add_argument("--follow", "-F", action="store_true", help="keep reading as FILE grows")
    parser.add_argument("--batch-records", type=int, default=1000, help="(default: 1000)")
    parser.add_argument(
        "--batch-delay", type=float, default=0.2, help="seconds a batch waits (default: 0.2)"
    )
    parser.add_argument("--retries", type=int, default=8, help="attempts per batch (default: 8)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at the end, wait up to this long for the batches to be merged (default: 0)",
    )
    parser.add_argument(
        "--position",
        type=Path,
        metavar="PATH",
        help="keep in PATH how far into FILE the server has answered; a stream started "
        "again with it goes on from there",
    )
    parser.add_argument("--no-progress", action="store_true", help="no live line")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key (or $INGEST_API_KEY) is required")
    if (problem := api_key_problem(args.api_key)) is not None:
        parser.error(problem)
    if (args.follow or args.position) and args.file in (None, "-"):
        parser.error(f"{'--follow' if args.follow else '--position'} needs a FILE")
    if args.retries < 1 or args.batch_records < 1:  # 0 retries retried for ever
        parser.error("--retries and --batch-records must be at least 1")
    if not all(math.isfinite(v) and v >= 0 for v in (args.batch_delay, args.wait)):
        parser.error("--batch-delay and --wait must be a number of seconds, 0 or more")
    return args


def read_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a stream as they come (a last line without a newline included)."""
    yield from iter(stream.readline, b"")


def _status(client: Client, watch: MergeWatch, started: float) -> str:
    counts = client.counts
    elapsed = max(time.monotonic() - started, 1e-6)
    line = (
        f"{counts.sent:,} records sent ({counts.sent / elapsed:,.0f}/s), "
        f"{counts.rejected:,} rejected, {watch.merged:,}/{len(watch.urls):,} batches merged"
    )
    waiting = counts.queued - counts.sent - counts.failed
    line += f", {counts.failed:,} not sent" if counts.failed else ""
    return line + (f", {waiting:,} waiting" if waiting else "")


def main(argv: Sequence[str], *, prog: str | None = None) -> int:
    """Run the stream command; returns the exit code."""
    args = parse_args(argv, prog=prog)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    position = Position(args.position, Path(args.file)) if args.position else None
    try:
        if position:
            position.lock()
        start = position.load() if position else None
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        if position:
            position.release()
        return EXIT_FAILED
    try:
        return _stream(args, console, position, start)
    finally:
        if position:
            position.release()


def _stream(
    args: argparse.Namespace, console: Console, position: Position | None, start: Start | None
) -> int:
    out = Console(highlight=False, soft_wrap=True)
    stop = threading.Event()
    reader = None
    if args.file not in (None, "-"):
        reader = FileReader(
            Path(args.file),
            stop=stop,
            follow=args.follow,
            start=start,
            partial_at_stop=position is None,
            note=lambda text: console.print(escape(text)),
        )
    saving = _Saving(position, stop)
    with httpx.Client(timeout=30) as http:
        watch = MergeWatch(http, args.api_key)
        client = Client(
            args.api_url,
            args.api_key,
            max_records=args.batch_records,
            max_delay=args.batch_delay,
            policy=RetryPolicy(attempts=args.retries),
            on_batch=lambda batch: (watch.add(batch), saving.settle(client.counts)),
            note=lambda text: console.print(escape(text)),
            flush_at_exit=False,
        )
        started = time.monotonic()
        live = Live(console=console, transient=True, auto_refresh=False)
        with live if not args.no_progress else contextlib.nullcontext():

            def show() -> None:
                if not args.no_progress:
                    live.update(_status(client, watch, started), refresh=True)

            ticker = _Ticker(show, watch, stop, client, saving)
            ticker.start()
            with _term_as_interrupt():
                failed = _pump(args, client, console, reader, position)
            stop.set()
            ticker.join()
        failed = saving.finish(failed, client.counts)
        # Ctrl-C or SIGTERM while waiting for the merge ends the wait, not the summary and
        # the exit code (it was a traceback, or nothing at all)
        with _term_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            wait_merged(watch, args.wait)
        out.print(_status(client, watch, started).split(", ", 1)[0] + _summary(client, watch))
        return _exit_code(client, failed, console)


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd's stop, `docker stop`) ends the stream as Ctrl-C does: what was read
    is sent first. It used to end the process at once, the lines read but unsent lost."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to take
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pump(
    args: argparse.Namespace,
    client: Client,
    console: Console,
    reader: FileReader | None,
    position: Position | None,
) -> str:
    """Read and send until the input ends or Ctrl-C, then flush; returns what failed. A
    line's `source_line` is its number in the file it was read from (or in stdin)."""
    interrupted = False
    try:
        try:
            lines = reader.lines() if reader else read_lines(sys.stdin.buffer)
            for number, line in enumerate(lines, 1):
                client.send_line(
                    args.record_type, line, source_line=reader.number if reader else number
                )
                if position is not None:
                    position.read(client.counts.queued, reader.mark)
        except KeyboardInterrupt:
            interrupted = True
            console.print("stopping: sending what was read...")
            if reader is not None and (partial := reader.take_partial()) is not None:
                with contextlib.suppress(KeyRefused):  # said once the client is closed
                    client.send_line(args.record_type, partial, source_line=reader.number)
        except KeyRefused as exc:  # it will not be taken later either: stop reading
            client.abort()
            with contextlib.suppress(SendFailed):
                client.close()
            return str(exc)
        except OSError as exc:
            client.close()
            return f"cannot read {args.file}: {exc}"
        if _drain(client, console, interrupted=interrupted):
            client.close()
        else:  # given up: what was waiting is counted as failed, a request under way ends
            with contextlib.suppress(TimeoutError, KeyboardInterrupt, SendFailed):
                client.close(timeout=_GIVING_UP_SECONDS)
    except SendFailed as failed:
        return str(failed)
    return _unsent(client)


_GIVING_UP_SECONDS = 5.0


def _drain(client: Client, console: Console, *, interrupted: bool) -> bool:
    """Wait until every record read is answered; False when a second Ctrl-C (or SIGTERM)
    gave up what was being sent. The first one may come only now, the input read to its
    end: what was read is still sent (it used to be given up at once)."""
    while True:
        try:
            client.flush()
            return True
        except SendFailed:  # kept in `failures`, said by `_unsent`
            return True
        except KeyboardInterrupt:
            if interrupted:
                client.abort()
                return False
            interrupted = True
            console.print("stopping: sending what was read (Ctrl-C again to give it up)...")


def _unsent(client: Client) -> str:
    """What was not sent: the batches given up, and the records of a request left under
    way by a second Ctrl-C (in neither `sent` nor `failures`)."""
    said = [str(SendFailed(client.failures))] if client.failures else []
    counts = client.counts
    left = counts.queued - counts.sent - counts.failed
    if left > 0:
        said.append(f"{left} records given up while being sent (the server may have them)")
    return "; ".join(said)


class _Saving:
    """The position: moved past the lines answered for after each batch answered (in the
    sender's thread, where the counts hold still: see `Position.settle`), saved once a
    second by the ticker and at the end. One that cannot be saved ends the stream in error."""

    def __init__(self, position: Position | None, stop: threading.Event):
        self.position, self.stop = position, stop
        self.error = ""

    def settle(self, counts: Counts) -> None:
        if self.position is not None:
            sent = counts.sent  # before `failed`: see Position
            self.position.settle(sent, counts.failed)

    def save(self) -> None:
        if self.position is None:
            return
        try:
            self.position.save()
        except OSError as exc:
            self.error = f"cannot save the position in {self.position.path}: {exc}"
            self.stop.set()  # stop reading: what was read is sent, and the stream ends

    def finish(self, failed: str, counts: Counts) -> str:
        """What failed, with what became of the position. The last batch's answer may have
        come before its last line was noted: settled once more, the sender stopped."""
        self.settle(counts)
        self.save()
        if self.error:
            return "; ".join(filter(None, (failed, self.error)))
        if failed and self.position is not None and self.position.saved is not None:
            failed += (
                f"; {self.position.path} stays after line {self.position.saved.line} of the "
                "file it was saved for: a stream started again with it goes on from there"
            )
        return failed


class _Ticker(threading.Thread):
    """Refreshes the live line and checks merges every POLL_EVERY seconds until `stop`;
    sets `stop` itself once the server refused the key (a followed file that grows no more
    would otherwise be waited on for ever, every batch failing unseen)."""

    def __init__(
        self,
        show: Callable[[], None],
        watch: MergeWatch,
        stop: threading.Event,
        client: Client,
        saving: _Saving,
    ):
        super().__init__(name="ingest-stream-ticker", daemon=True)
        self.show, self.watch, self.stop, self.client = show, watch, stop, client
        self.saving = saving

    def run(self) -> None:
        last = 0.0
        while not self.stop.wait(0.2):
            if self.client.refused is not None:
                self.stop.set()
                return
            if time.monotonic() - last >= POLL_EVERY:
                self.saving.save()  # first: the merge check can take its timeouts
                with contextlib.suppress(Exception):  # the live line's only: saving goes on
                    self.watch.check()
                last = time.monotonic()
            self.show()


def _summary(client: Client, watch: MergeWatch) -> str:
    counts = client.counts
    return (
        f": {counts.accepted:,} accepted, {counts.rejected:,} rejected, "
        f"{counts.queued - counts.sent:,} not sent; {watch.merged:,}/{len(watch.urls):,} "
        "batches merged"
    )


def _exit_code(client: Client, failed: str, console: Console) -> int:
    for reject in client.rejects[:20]:
        console.print(escape(_describe(reject)))
    if len(client.rejects) > 20:
        console.print(f"... and {len(client.rejects) - 20:,} more rejected rows")
    if failed:
        console.print(f"[red]error:[/] {escape(failed)}")
        return EXIT_FAILED
    return EXIT_REJECTED if client.counts.rejected else EXIT_OK


def _describe(reject: Reject) -> str:
    """The reject's first problem, then each other one of its row on a line of its own."""
    also = "".join(f"\n  also {e.code} ({e.field}): {e.message}" for e in reject.errors[1:])
    where = f"batch {reject.batch_id} line {reject.line}" if reject.batch_id else "refused alone"
    if reject.source_line is not None:  # the line as read, then where the server has it
        where = f"line {reject.source_line} ({where})"
    return f"rejected: {where}: {reject.code} ({reject.field}): {reject.message}{also}"
