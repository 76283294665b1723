"""The live-records client at its edges: `send` racing `close`, a backlog's 429 that lasts
longer than the retries, `flush` after `close`, NaN, a `close` that times out, and the
`stream` command stopped by SIGTERM (systemd, `docker stop`)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from apps.ingestions.models import Customer
from apps.tenants.services import tenant_create
from ingest_client.live import Client, SendFailed
from ingest_client.transport import RequestFailed, RetryPolicy, Transport, open_client
from scripts.stack import free_port
from tests.ingest_client.test_live import (
    FAST,
    ROOT,
    LocalServer,
    QuietHandler,
    customer,
    ended_by,
    following,
    lines,
    stream,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class Answers(LocalServer):
    """A local HTTP server answering every request with the next status of `statuses`
    (the last one again once they run out); 429s carry `Retry-After: 0`."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.seen = list(statuses), 0
        answers = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = answers.statuses[min(answers.seen, len(answers.statuses) - 1)]
                answers.seen += 1
                body = json.dumps({"status": status}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)


@pytest.mark.parametrize(
    ("statuses", "outcome"),
    [([429] * 12 + [202], 202), ([503, 429, 503, 429, 503, 202], "gave up after 3 attempts")],
    ids=["twelve-429s-then-202", "three-503s"],
)
def test_a_429_is_waited_out_and_only_other_failures_count_against_the_attempts(statuses, outcome):
    """The server's backpressure (429, Retry-After) lasts as long as it lasts: twelve of
    them in a row with 3 attempts allowed still end in the 202 (they used to give up, and
    a client's batch failed while the server was only busy). Three 503s do give up."""
    answers = Answers(statuses)
    notes: list[str] = []
    http = open_client(answers.url, timeout=5, connections=1)
    transport = Transport(
        http, policy=RetryPolicy(attempts=3, base=0.01, cap=0.02), stop=threading.Event(),
        note=notes.append,
    )  # fmt: skip
    try:
        if outcome == 202:
            response = transport.request("POST", "/x", api_key="k", label="batch")
            assert (response.status_code, answers.seen) == (202, 13)
            assert sum("HTTP 429; retrying" in note for note in notes) == 12
        else:
            with pytest.raises(RequestFailed, match=outcome):
                transport.request("POST", "/x", api_key="k", label="batch")
            assert answers.seen == 5  # the two 429s between did not count
    finally:
        http.close()
        answers.close()


def test_records_sent_while_the_client_closes_are_sent_or_refused_never_lost(live_stack):
    """Eight threads send while the main thread closes: every `send` that returned was
    sent (none was left behind the close's flush), the later ones raise; the table holds
    exactly the records sent."""
    tenant, issued = tenant_create(name="live-close-race")
    client = Client(live_stack, issued.raw, max_records=50, max_delay=0.05, policy=FAST)
    returned = [0] * 8
    started = threading.Barrier(9)

    def sender(number: int) -> None:
        started.wait()
        for n in range(number * 100_000, number * 100_000 + 5_000):
            try:
                client.send("customers", customer(n))
            except RuntimeError:
                return
            returned[number] += 1

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.3)
    client.close(timeout=120)
    for thread in threads:
        thread.join()
    assert 0 < sum(returned) < 40_000
    assert client.counts.sent == client.counts.queued == sum(returned)
    assert client.counts.failed == 0
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == sum(returned))


def test_flush_after_close_and_nan_are_refused_at_once(live_stack):
    """`flush` on a closed client raises instead of waiting for ever on a sender that has
    ended; NaN is not JSON and is refused by `send`, not sent for the server to reject;
    a line holding two records is refused by `send_line`."""
    _, issued = tenant_create(name="live-closed")
    client = Client(live_stack, issued.raw, flush_at_exit=False)
    with pytest.raises(ValueError, match="not JSON compliant"):
        client.send("customers", {**customer(1), "metadata": {"x": float("nan")}})
    with pytest.raises(ValueError, match="line break"):
        client.send_line("customers", json.dumps(customer(3)) + "\n" + json.dumps(customer(4)))
    client.send("customers", customer(2))
    client.close(timeout=60)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="closed"):
        client.flush(timeout=None)
    assert time.monotonic() - started < 1
    assert (client.counts.queued, client.counts.sent) == (1, 1)


def test_a_close_that_times_out_gives_the_rest_up_as_failures():
    """Nothing listens at the URL: `close(timeout)` raises TimeoutError, and the batch it
    was retrying is in `failures` as interrupted (its HTTP client was closed under it, and
    it failed for that reason instead)."""
    client = Client(
        f"http://127.0.0.1:{free_port()}", "k", policy=RetryPolicy(attempts=50, base=0.2, cap=0.5),
        flush_at_exit=False,
    )  # fmt: skip
    client.send("customers", customer(1))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.close(timeout=1)
    assert time.monotonic() - started < 8
    assert [(len(f.lines), f.error) for f in client.failures] == [(1, "interrupted (abort)")]


def test_a_split_batch_whose_second_half_fails_counts_only_that_half_as_failed():
    """A batch answered 413 is sent in halves: the first is taken (202), the second fails
    every attempt. Only the second half is a failure; the whole batch used to be counted
    failed too, its first half both sent and not sent."""
    answers = Answers([413, 202, 500])
    client = Client(
        answers.url, "k", max_records=10, policy=RetryPolicy(attempts=2, base=0.01, cap=0.02),
        flush_at_exit=False,
    )  # fmt: skip
    try:
        for n in range(10):
            client.send_line("customers", json.dumps(customer(n)), source_line=n + 1)
        with pytest.raises(SendFailed, match="5 records"):
            client.close(timeout=30)
    finally:
        answers.close()
    assert answers.seen == 4  # the batch, its first half, the second half twice
    assert (client.counts.queued, client.counts.sent, client.counts.failed) == (10, 5, 5)
    assert (client.counts.accepted, client.counts.batches) == (5, 1)
    assert [f.lines for f in client.failures] == [
        [json.dumps(customer(n)).encode() for n in range(5, 10)]
    ]


def test_stream_stopped_by_sigterm_sends_what_it_read(tmp_path, live_stack):
    """SIGTERM, as systemd or `docker stop` sends it, ends `stream` as Ctrl-C does: the
    lines read and waiting in a batch are sent, exit 0. It used to die at once, unsent."""
    tenant, issued = tenant_create(name="live-sigterm")
    path = tmp_path / "customers.ndjson"
    path.write_text(lines(range(30)))
    process = following(path, live_stack, issued.raw)
    out, err = ended_by(process, path, signal.SIGTERM)
    assert process.returncode == 0, out + err
    assert "30 accepted, 0 rejected, 0 not sent" in out
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == 30)


@pytest.mark.parametrize("follow", [True, False], ids=["follow", "stdin"])
def test_stream_stops_at_a_refused_key(tmp_path, live_stack, follow):
    """A wrong key: `stream` stops with exit 2 and the server's 401 once the first batch
    is refused, also when following a file that grows no more (it ran on for ever, each
    batch failing and the live line saying nothing of it)."""
    path = tmp_path / "customers.ndjson"
    path.write_text(lines(range(3000 if not follow else 30)))
    source = [str(path), "--follow"] if follow else []
    command = stream(
        "--type", "customers", *source, "--api-url", live_stack, "--api-key", "ck_wrong",
        "--batch-records", "20", "--batch-delay", "0.1",
    )  # fmt: skip
    with path.open("rb") as stdin:
        done = subprocess.run(
            command, stdin=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the API key was refused (401" in done.stderr
    assert "0 accepted, 0 rejected" in done.stdout
