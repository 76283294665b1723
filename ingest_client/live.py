"""Live records: `Client(api_url, api_key).send(type, record)` (SPEC 9).

    with Client("http://localhost:8000", api_key) as client:
        client.send("customers", {"customer_id": ..., ...})
        client.send("orders", {...})
    # leaving the block (or the program) flushes; a record that could not be sent raises

`send` puts the record on a bounded queue and returns; a background thread groups the
records of one type into batches (`max_records`, `max_bytes`, or `max_delay` seconds after
the batch's first record) and POSTs each to `/api/v1/ingest/records/{type}/` as NDJSON,
one at a time, so records of a type reach the server in the order sent. Each batch has its
own Idempotency-Key, the same on every retry (connection errors, 5xx, 429 with Retry-After:
`transport.Transport`), so a retried batch is never stored twice. A 413 splits the batch;
a record answered 413 alone is rejected with the server's reason (no batch stored).
When the queue is full, `send` blocks: that is the backpressure. Nothing is dropped
silently: rows the server rejects are in `rejects` (and `on_reject`), a batch that could not
be sent is in `failures` with its records, and `flush()`/`close()` raise `SendFailed`.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest_client.outcomes import (
    Counts,
    Failure,
    Problem,
    Reject,
    SendFailed,
    rejects_of,
    too_large,
)
from ingest_client.plan import RECORD_TYPES
from ingest_client.transport import (
    API,
    Interrupted,
    KeyRefused,
    RequestFailed,
    RetryPolicy,
    Transport,
    api_key_problem,
    client_error,
    open_client,
)

MiB = 1 << 20
# what callers import from here (the outcomes' classes too, defined in `outcomes`)
__all__ = ["Client", "Counts", "Failure", "MiB", "Problem", "Reject", "SendFailed"]


@dataclass
class _Pending:
    """Records of one type waiting to be sent."""

    lines: list[bytes] = field(default_factory=list)
    sources: list[int | None] = field(default_factory=list)  # each line's `source_line`
    size: int = 0
    since: float = 0.0


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()
_STOPPING = 5.0  # seconds a stopped sender gets to give up its request under way


class Client:
    """Sends live records in batches from a background thread; see the module's doc."""

    def __init__(  # long: every option is a keyword with a default, documented here
        self,
        api_url: str,
        api_key: str,
        *,
        max_records: int = 1000,
        max_bytes: int = MiB,
        max_delay: float = 0.2,
        max_queue: int = 10_000,
        policy: RetryPolicy | None = None,
        timeout: float = 60.0,
        on_batch: Callable[[dict], None] | None = None,
        on_reject: Callable[[Reject], None] | None = None,
        note: Callable[[str], None] | None = None,
        flush_at_exit: bool = True,
        exit_timeout: float | None = 60.0,
    ):
        """`on_batch` gets each batch resource the server answers (its `url` shows when it
        is merged); `on_reject` each rejected row; `note` each retry ("...; retrying in").
        At exit, what is still queued is sent for at most `exit_timeout` seconds (None: as
        long as it takes); what is not sent by then is said on stderr."""
        if max_records < 1 or max_bytes < 1 or max_delay < 0:
            raise ValueError("max_records and max_bytes must be positive, max_delay >= 0")
        if (problem := api_key_problem(api_key)) is not None:
            raise ValueError(problem)
        self.api_key = api_key
        self.max_records, self.max_bytes, self.max_delay = max_records, max_bytes, max_delay
        self.on_batch, self.on_reject = on_batch, on_reject
        self.counts = Counts()
        self.rejects: list[Reject] = []
        self.failures: list[Failure] = []
        self._raised = 0  # failures already raised by flush()
        # the server refused the API key (401): every later `send` raises it
        self.refused: KeyRefused | None = None
        self._lock = threading.Lock()
        # `send` against `close`, and the queue's bound: a `send` waiting for room waits on
        # `_room`, not holding the lock, so `close` (its timeout, and the exit's) is never
        # held up by it; closed meanwhile, that `send` is refused
        self._gate = threading.Lock()
        self._room = threading.Condition(self._gate)
        self._max_queue, self._queued_records = max_queue, 0
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._connect = (api_url, timeout, policy or RetryPolicy(), note or _ignore)
        self._start()
        self._at_exit = flush_at_exit
        self._exit_timeout = exit_timeout
        if flush_at_exit:
            atexit.register(self._close_at_exit)
        _CLIENTS.add(self)

    def _start(self) -> None:
        """The sender thread, and what it uses alone: its HTTP connections, the stop."""
        api_url, timeout, policy, note = self._connect
        self._stop = threading.Event()  # set by abort(): retries end, the rest fails
        self._http = open_client(api_url, timeout=timeout, connections=2)
        self._transport = Transport(self._http, policy=policy, stop=self._stop, note=note)
        self._thread = threading.Thread(target=self._run, name="ingest-live-sender", daemon=True)
        self._thread.start()

    def _forked(self) -> None:
        """In a child process (`fork`, a multiprocessing pool), where the parent's sender
        thread is not (and its locks may be held by a thread that is not either): new
        locks, a sender, connections and counts of its own; the parent's queue stays the
        parent's. The child's records went to a queue no thread read, and its exit hung."""
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._room = threading.Condition(self._gate)
        self._queued_records, self._queue = 0, queue.Queue()
        self.counts, self.rejects, self.failures, self._raised = Counts(), [], [], 0
        if self._closed:
            return
        self._start()
        if self._at_exit and "multiprocessing" in sys.modules:
            # A multiprocessing child ends with os._exit(): its finalizers run, not atexit.
            # Its start clears those registered so far (this hook's among them), then runs
            # its after-fork functions: one of those registers the flush.
            from multiprocessing import util

            util.register_after_fork(self, Client._flush_at_child_exit)

    def _flush_at_child_exit(self) -> None:
        from multiprocessing.util import Finalize

        Finalize(self, self._close_at_exit, exitpriority=100)

    # the caller's side

    def send(self, record_type: str, record: Any) -> None:
        """Queue one record (anything `json.dumps` takes, but NaN and infinities, which are
        not JSON); blocks only while the queue is full. Thread-safe."""
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
        self.send_line(record_type, text.encode())

    def send_line(
        self, record_type: str, line: bytes | str, *, source_line: int | None = None
    ) -> None:
        """Queue one record given as an NDJSON line, sent as it is (a bad line comes back as
        a reject, carrying `source_line`: say where the line came from); blank lines are
        skipped. Raises `KeyRefused` once the server has refused the API key: nothing more
        is sent."""
        if isinstance(line, str):
            line = line.encode()
        line = line.strip(b"\r\n")
        if not line.strip():
            return
        if b"\n" in line:  # the server would read two records, or more
            raise ValueError("a record's line holds a line break: give one record a line")
        if record_type not in RECORD_TYPES:  # it goes into the URL's path
            raise ValueError(f"record type {record_type!r} is not one of {RECORD_TYPES}")
        if self.refused is not None:
            raise self.refused
        with self._room:  # never queued once `close` has begun: its flush would miss it
            while not self._closed and self._queued_records >= self._max_queue:
                self._room.wait()
            if self._closed:
                raise RuntimeError("the client is closed")
            self._queued_records += 1
            self._queue.put((record_type, line, source_line))
        with self._lock:
            self.counts.queued += 1

    def flush(self, timeout: float | None = None) -> None:
        """Send every record queued so far and wait for the answers. Raises TimeoutError
        after `timeout` seconds, and SendFailed for batches that failed since the last
        flush (all of them stay in `failures`); RuntimeError once the client is closed."""
        if self._closed:
            raise RuntimeError("the client is closed")
        self._flush(timeout)

    def _flush(self, timeout: float | None) -> None:
        if threading.current_thread() is self._thread:  # it would wait for itself, for ever
            raise RuntimeError("flush() and close() cannot be called from on_batch or on_reject")
        marker = _Flush()
        self._queue.put(marker)
        if not marker.done.wait(timeout):
            raise TimeoutError(f"records still being sent after {timeout} seconds")
        with self._lock:
            new, self._raised = self.failures[self._raised :], len(self.failures)
        if new:
            raise SendFailed(new)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the thread; raises as `flush` does. Closing twice is harmless.
        Interrupted (Ctrl-C) while it waits, retries stop: what is queued or waiting for a
        retry fails at once; a request under way gets 5 s to end, then is left to itself
        (its records in neither `sent` nor `failures`: `queued` tells)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() and close() cannot be called from on_batch or on_reject")
        with self._room:  # a `send` under way queues its record first; one waiting is refused
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
        if self._at_exit:
            atexit.unregister(self._close_at_exit)
        try:
            self._flush(timeout)
        except (TimeoutError, KeyboardInterrupt):
            self._stop.set()  # what is still being retried fails now, into `failures`
            raise
        finally:
            self._queue.put(_STOP)
            self._thread.join(timeout if not self._stop.is_set() else _STOPPING)
            if not self._thread.is_alive():  # else the sender is mid-request: it has it
                self._http.close()

    def abort(self) -> None:
        """Stop waiting between retries: the batches being retried, and those queued,
        fail (into `failures`) instead of being sent. For a second Ctrl-C."""
        self._stop.set()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
            return
        try:  # an exception is already on its way: do not hide it behind ours
            self.close()
        except SendFailed as failed:
            sys.stderr.write(f"ingest_client: {failed}\n")

    def _close_at_exit(self) -> None:
        try:
            self.close(self._exit_timeout)
        except SendFailed as failed:
            sys.stderr.write(f"ingest_client: at exit: {failed}\n")
        except TimeoutError as late:  # the rest was given up: say what
            unsent = self.failures[self._raised :]
            said = f"{late}; {SendFailed(unsent)}" if unsent else str(late)
            sys.stderr.write(f"ingest_client: at exit: {said}\n")

    # the sender thread

    def _run(self) -> None:
        pending: dict[str, _Pending] = {}
        while True:
            item = self._next(pending)
            if item is None:  # the oldest batch's time is up
                self._send_due(pending)
            elif item is _STOP:  # after close's flush: anything left is sent, not dropped
                for record_type in list(pending):
                    self._send(record_type, pending.pop(record_type))
                return
            elif isinstance(item, _Flush):
                for record_type in list(pending):
                    self._send(record_type, pending.pop(record_type))
                item.done.set()
            else:
                with self._room:
                    self._queued_records -= 1
                    self._room.notify()
                record_type, line, source = item
                batch = pending.setdefault(record_type, _Pending(since=time.monotonic()))
                if batch.lines and batch.size + len(line) + 1 > self.max_bytes:
                    self._send(record_type, pending.pop(record_type))
                    batch = pending.setdefault(record_type, _Pending(since=time.monotonic()))
                batch.lines.append(line)
                batch.sources.append(source)
                batch.size += len(line) + 1
                if len(batch.lines) >= self.max_records or batch.size >= self.max_bytes:
                    self._send(record_type, pending.pop(record_type))

    def _next(self, pending: dict[str, _Pending]) -> Any:
        """The next queued item, or None when the oldest pending batch is due."""
        if not pending:
            return self._queue.get()
        due = min(p.since for p in pending.values()) + self.max_delay
        try:
            return self._queue.get(timeout=max(0.0, due - time.monotonic()))
        except queue.Empty:
            return None

    def _send_due(self, pending: dict[str, _Pending]) -> None:
        now = time.monotonic()
        for record_type in [t for t, p in pending.items() if now - p.since >= self.max_delay]:
            self._send(record_type, pending.pop(record_type))

    def _send(self, record_type: str, batch: _Pending) -> None:
        """POST one batch (split on 413); every outcome is counted once, none is lost."""
        lines = batch.lines
        try:
            self._post(record_type, lines, batch.sources)
        except (RequestFailed, Interrupted) as exc:
            if isinstance(exc, KeyRefused):  # no later batch can go either: stop at once
                self.refused = exc
                self._stop.set()
            error = str(exc) or "interrupted (abort)"
            with self._lock:
                self.failures.append(Failure(record_type, lines, error))
                self.counts.failed += len(lines)
        except Exception as exc:  # a bug must not lose records silently either
            with self._lock:
                self.failures.append(Failure(record_type, lines, f"{type(exc).__name__}: {exc}"))
                self.counts.failed += len(lines)

    def _post(self, record_type: str, lines: list[bytes], sources: list[int | None]) -> None:
        body = b"\n".join(lines) + b"\n"
        key = f"live-{uuid.uuid4()}"  # one per batch, the same on every retry of it
        response = self._transport.request(
            "POST",
            f"{API}/records/{record_type}/",
            api_key=self.api_key,
            label=f"{record_type} batch of {len(lines)}",
            body=lambda: body,
            headers={"Idempotency-Key": key, "Content-Type": "application/x-ndjson"},
        )
        if response.status_code == 413 and len(lines) > 1:  # each half sent, or failed, alone
            half = len(lines) // 2
            self._send(record_type, _Pending(lines[:half], sources[:half]))
            self._send(record_type, _Pending(lines[half:], sources[half:]))
            return
        if response.status_code == 413:  # one record, too large ever to be taken: a reject
            self._answered(record_type, sources, too_large(response, lines[0]), stored=False)
            return
        if response.status_code not in (200, 201, 202):
            raise client_error(response, f"POST {record_type} batch of {len(lines)}")
        self._answered(record_type, sources, response.json())

    def _answered(
        self, record_type: str, sources: list[int | None], batch: dict, *, stored: bool = True
    ) -> None:
        """Count a batch answered (`stored` False: a record refused alone, no batch made)."""
        count = len(sources)
        rejects = rejects_of(record_type, sources, batch)
        rejected = max(int(batch.get("rejected") or 0), len(rejects))
        with self._lock:
            self.counts.sent += count
            self.counts.batches += stored
            self.counts.rejected += rejected
            self.counts.accepted += count - rejected
            self.rejects.extend(rejects)
        try:  # the records are sent: a failing callback must not count them as not sent
            for reject in rejects:
                if self.on_reject:
                    self.on_reject(reject)
            if self.on_batch and stored:
                self.on_batch(batch)
        except Exception as exc:  # noqa: BLE001 - said, and the sender goes on
            sys.stderr.write(f"ingest_client: a callback failed: {type(exc).__name__}: {exc}\n")


def _ignore(_: str) -> None:
    pass


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()  # in this process, for `_forked`
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: [client._forked() for client in list(_CLIENTS)])
