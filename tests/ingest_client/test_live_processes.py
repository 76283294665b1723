"""The live-records client across threads and processes: a `send` blocked on a full queue
never holds up `close` (nor the exit), a forked child (`os.fork`, a multiprocessing pool)
sends its own records, a callback cannot deadlock the sender, an in-flight 409 and a
`Retry-After: 0` are waited out, not counted or looped on, and a record type goes nowhere
but its own endpoint. Against a local HTTP server that counts what it is sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ingest_client.live import Client
from ingest_client.transport import RetryPolicy
from tests.ingest_client.test_live import (
    ROOT,
    LocalServer,
    QuietHandler,
    customer,
    lines,
    signalled,
    stream,
)


class Counting(LocalServer):
    """Answers each POST with the next of `statuses` (then the last again), counting the
    records of the bodies it took (a 202): `records`. A 429 carries `Retry-After: 0`, a
    409 the in-flight problem."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.seen, self.records, self.paths = list(statuses), 0, 0, []
        self.times: list[float] = []
        me = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = me.statuses[min(me.seen, len(me.statuses) - 1)]
                me.seen += 1
                me.paths.append(self.path)
                me.times.append(time.monotonic())
                count = len(body.splitlines())
                answer: dict = {"records": count, "rejected": 0, "rejects": []}
                if status == 202:
                    me.records += count
                    answer |= {"id": me.seen, "url": f"{me.url}/b/{me.seen}/"}
                elif status == 409:
                    answer = {"status": 409, "code": "idempotency_in_flight"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)


@pytest.fixture
def counting():
    servers: list[Counting] = []

    def make(statuses: list[int]) -> Counting:
        servers.append(Counting(statuses))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_close_is_not_held_up_by_a_send_waiting_for_room(counting):
    """A thread's `send` blocked on the full queue (the server answering 429 for ever):
    `close(timeout)` still returns after its timeout, and that `send` is refused. It
    waited for the `send`, for ever (the send held the lock `close` needs)."""
    server = counting([429])
    client = Client(
        server.url, "k", max_queue=3, max_records=1, flush_at_exit=False,
        policy=RetryPolicy(attempts=3, base=0.05, cap=0.1),
    )  # fmt: skip
    refused: list[Exception] = []

    def send_many() -> None:
        try:
            for n in range(100):
                client.send("customers", customer(n))
        except RuntimeError as exc:
            refused.append(exc)

    sender = threading.Thread(target=send_many, daemon=True)
    sender.start()
    time.sleep(0.5)  # the queue is full by now, the send waiting
    closing = threading.Thread(target=lambda: pytest.raises(TimeoutError, client.close, 1))
    started = time.monotonic()
    closing.start()
    closing.join(15)
    assert not closing.is_alive(), "close() is held up by the blocked send"
    assert time.monotonic() - started < 8
    sender.join(5)
    assert [str(e) for e in refused] == ["the client is closed"]


_FORKS = """
import os, sys
from ingest_client.live import Client
client = Client(sys.argv[1], "k", max_delay=0.05)  # made before the fork, as at import
pid = os.fork()
if pid == 0:
    for n in range(5):
        client.send("customers", {"n": n})
    sys.exit(0)  # the child's exit flushes its own records
_, status = os.waitpid(pid, 0)
for n in range(3):
    client.send("customers", {"n": n})
client.close()
print(os.waitstatus_to_exitcode(status))
"""

_POOL = """
import multiprocessing, sys
from ingest_client.live import Client
client = Client(sys.argv[1], "k", max_delay=0.05)

def send(n):
    client.send("customers", {"n": n})
    return n

if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(send, range(10)) == list(range(10))
        pool.close()
        pool.join()
    client.close()
"""


@pytest.mark.parametrize(("script", "records"), [(_FORKS, 8), (_POOL, 10)], ids=["fork", "pool"])
def test_a_forked_child_sends_its_own_records(counting, tmp_path, script, records):
    """Records sent in a child process are sent by the child (its own sender thread): a
    forked child's exit flushes them, and a pool's workers' end does. They went to a
    queue no thread read: lost without a word, and the child's exit hung a minute."""
    server = counting([202])
    path = tmp_path / "forks.py"
    path.write_text(textwrap.dedent(script))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(path), server.url], capture_output=True, text=True, timeout=60,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    assert server.records == records
    assert "not sent" not in done.stderr


def test_flush_from_a_callback_is_refused_not_a_deadlock(counting):
    """`on_batch` runs on the sender thread: a `flush()` there would wait for that thread
    itself. It raises instead (said on stderr, as any failing callback is), and the
    client goes on. It deadlocked the sender for good."""
    server = counting([202])
    client = Client(server.url, "k", max_records=1, flush_at_exit=False)
    client.on_batch = lambda batch: client.flush()
    client.send("customers", customer(1))
    client.send("customers", customer(2))
    time.sleep(0.5)  # both sent and answered, their callbacks run, before the close
    client.close(timeout=5)
    assert (client.counts.sent, client.counts.failed, server.records) == (2, 0, 2)


def test_an_in_flight_409_is_waited_out_and_not_counted_as_a_failed_attempt(counting):
    """The server still answering an earlier attempt of the batch (409 in flight), then
    its stored answer: with 2 attempts allowed, four 409s do not make the batch "not
    sent". They counted, and a batch the server stored was reported as failed."""
    server = counting([409, 409, 409, 409, 202])
    client = Client(
        server.url, "k", flush_at_exit=False, policy=RetryPolicy(attempts=2, base=0.01, cap=0.02)
    )
    client.send("customers", customer(1))
    client.close(timeout=10)
    assert (client.counts.sent, client.counts.failed, server.seen) == (1, 0, 5)


def test_a_retry_after_of_0_waits_the_policys_base_not_nothing(counting):
    """`Retry-After: 0` on a 429: the next attempt comes after the policy's base delay.
    There was no delay at all: hundreds of requests a second, each the whole batch."""
    server = counting([429] * 4 + [202])
    client = Client(
        server.url, "k", flush_at_exit=False, policy=RetryPolicy(attempts=2, base=0.2, cap=0.4)
    )
    client.send("customers", customer(1))
    client.close(timeout=10)
    gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
    assert (server.seen, len(gaps)) == (5, 4)
    assert min(gaps) >= 0.19


@pytest.mark.parametrize("record_type", ["customers/../orders", "../uploads", "customers?x=1", ""])
def test_a_record_type_that_is_none_of_the_four_is_refused_before_it_is_sent(counting, record_type):
    """It was put into the URL's path as it was: `../uploads` POSTed to the uploads list."""
    server = counting([202])
    client = Client(server.url, "k", flush_at_exit=False)
    with pytest.raises(ValueError, match="is not one of"):
        client.send(record_type, customer(1))
    client.close(timeout=10)
    assert server.paths == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_stream_while_it_waits_for_the_merge_still_gives_its_summary(
    counting, signum, tmp_path
):
    """`--wait` for batches that are not merged, then Ctrl-C (or SIGTERM): the wait ends,
    the summary is printed and the exit is 0 (every record accepted). It was a traceback
    and exit -2, or, for SIGTERM, nothing at all."""
    server = counting([202])
    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(3)))
    command = stream("--type", "customers", "--api-url", server.url, "--api-key", "k")
    with data.open() as stdin:
        process = subprocess.Popen(
            [*command, "--wait", "60"], stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
    out, err = signalled(process, signum, ready=lambda: server.records == 3, settle=1.0)
    assert process.returncode == 0, out + err
    assert "3 accepted, 0 rejected, 0 not sent; 0/1 batches merged" in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "option",
    [
        ("--retries", "0"),
        ("--retries", "-1"),
        ("--batch-records", "0"),
        ("--batch-delay", "-1"),
        ("--batch-delay", "nan"),
        ("--wait", "inf"),
    ],
)
def test_a_bad_stream_option_is_a_usage_error(option):
    """Exit 2 with the option named, before anything is read or sent. `--retries 0` retried
    for ever; the others were a ValueError traceback and exit 1 ("rows rejected")."""
    done = subprocess.run(
        stream("--type", "customers", "--api-url", "http://127.0.0.1:9", "--api-key", "k", *option),
        input="", capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert option[0] in done.stderr
    assert "Traceback" not in done.stderr
