"""The live-records client and the `stream` command against the live stack (gunicorn and a
worker on the test database): batching, merging exactly once, a retried batch under the same
Idempotency-Key, rejects, stdin, and a followed file that grows, is replaced, and is
flushed on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from apps.ingestions.models import Customer, Order, RecordBatch
from apps.tenants.services import tenant_create
from ingest_client.live import Client, Problem, Reject, SendFailed
from ingest_client.outcomes import _problems
from ingest_client.stream import _describe
from ingest_client.transport import RetryPolicy
from scripts.stack import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=4, base=0.1, cap=0.5)


def customer(n: int) -> dict:
    return {
        "customer_id": str(uuid.UUID(int=n + 1)),
        "name": f"Live {n}",
        "email": f"live.{n}@example.com",
        "metadata": {"n": n},
        "created_at": "2024-03-01T10:00:00Z",
    }


def order(n: int, customer_n: int) -> dict:
    return {
        "order_id": str(uuid.UUID(int=(1 << 64) + n)),
        "external_order_id": f"LIVE-{n:06d}",
        "customer_id": str(uuid.UUID(int=customer_n + 1)),
        "customer_name_snapshot": f"Live {customer_n}",
        "customer_email_snapshot": f"live.{customer_n}@example.com",
        "total_amount": "10.00",
        "currency": "EUR",
        "order_status": "paid",
        "order_date": "2024-03-02T10:00:00Z",
        "raw_payload": {},
        "created_at": "2024-03-02T10:00:00Z",
    }


def lines(numbers) -> str:
    return "".join(json.dumps(customer(n)) + "\n" for n in numbers)


def wait_for(condition, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def read_to_end(pid: int, path: Path) -> bool:
    """Process `pid` has `path` open and has read it to its end (Linux's /proc)."""
    size = path.stat().st_size
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if Path(os.readlink(fd)) != path:
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue  # closed meanwhile
        if int(info.split("pos:", 1)[1].split()[0]) >= size:
            return True
    return False


def merged(base: str, key: str, urls: list[str]) -> bool:
    with httpx.Client(base_url=base, headers={"X-API-Key": key}) as http:
        return all(http.get(url).json()["state"] == "merged" for url in urls)


def test_the_client_batches_records_and_every_row_is_merged_exactly_once(live_stack):
    """2,500 records of customers and orders (50 orders before their customers), in
    batches of at most 400: after flush each row is in its table once, every batch merged."""
    tenant, issued = tenant_create(name="live-client")
    batches: list[dict] = []
    with Client(live_stack, issued.raw, max_records=400, on_batch=batches.append) as client:
        for n in range(1200):
            client.send("customers", customer(n))
        for n in range(1250):
            client.send("orders", order(n, customer_n=n))  # 1200..1249: customer comes later
        for n in range(1200, 1250):
            client.send("customers", customer(n))
        client.flush(timeout=60)
        assert client.counts.sent == client.counts.accepted == 2500
        assert client.counts.rejected == client.counts.failed == 0
        assert all(len(b["rejects"]) == 0 and b["records"] <= 400 for b in batches)
        assert len(batches) == client.counts.batches >= 7
    wait_for(lambda: merged(live_stack, issued.raw, [b["url"] for b in batches]))
    customers = Customer.objects.filter(tenant_id=tenant.id)
    orders = Order.objects.filter(tenant_id=tenant.id)
    assert customers.count() == customers.values("customer_id").distinct().count() == 1250
    assert orders.count() == orders.values("order_id").distinct().count() == 1250


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class LocalServer:
    """An HTTP server on a free loopback port, serving in a thread of its own."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForwardingProxy(LocalServer):
    """Forwards requests to the live server and gives their answers `delay` seconds later;
    with `drop_first`, the answer of the first POST is never given: the connection is
    closed instead. Logs (path, Idempotency-Key) of every POST."""

    def __init__(self, upstream: str, *, delay: float = 0.0, drop_first: bool = False):
        self.posts: list[tuple[str, str]] = []
        self.client = client = httpx.Client(base_url=upstream, timeout=60)
        proxy = self

        class Handler(QuietHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                skip = {"host", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                response = client.request(self.command, self.path, content=body, headers=headers)
                if self.command == "POST":
                    proxy.posts.append((self.path, self.headers.get("Idempotency-Key", "")))
                    if drop_first and len(proxy.posts) == 1:
                        self.close_connection = True  # stored upstream, the answer is lost
                        return
                time.sleep(delay)
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = handle_one  # noqa: N815

        self._serve(Handler)

    def close(self) -> None:
        super().close()
        self.client.close()


def test_a_batch_whose_answer_was_lost_is_retried_with_its_key_and_stored_once(live_stack):
    """The first answer is dropped after the server stored the batch: the client retries
    with the same Idempotency-Key, gets the stored batch back, and no row is doubled."""
    tenant, issued = tenant_create(name="live-dropped")
    proxy = ForwardingProxy(live_stack, drop_first=True)
    notes: list[str] = []
    try:
        with Client(proxy.url, issued.raw, policy=FAST, note=notes.append) as client:
            for n in range(30):
                client.send("customers", customer(5000 + n))
            client.flush(timeout=30)
    finally:
        proxy.close()
    assert [path for path, _ in proxy.posts] == ["/api/v1/ingest/records/customers/"] * 2
    assert proxy.posts[0][1] == proxy.posts[1][1] != ""
    assert any("retrying in" in note for note in notes)
    assert client.counts.batches == 1
    assert client.counts.accepted == 30
    assert RecordBatch.objects.filter(tenant_id=tenant.id).count() == 1
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == 30)
    time.sleep(0.5)
    assert Customer.objects.filter(tenant_id=tenant.id).count() == 30


def test_rejected_rows_are_reported_and_unsent_records_are_never_silent(live_stack):
    """Bad rows come back in `rejects` (and `on_reject`) with their line in the batch;
    records refused with the batch (a wrong key) are in `failures` and flush raises."""
    _, issued = tenant_create(name="live-rejects")
    seen = []
    with Client(live_stack, issued.raw, on_reject=seen.append) as client:
        client.send("customers", customer(7000))
        client.send("customers", {**customer(7001), "email": "not-an-email", "created_at": "x"})
        client.send_line("customers", b'{"customer_id": "broken json')
        client.send("customers", customer(7002))
        client.flush(timeout=30)
    assert client.counts.accepted == 2
    assert client.counts.rejected == 2
    assert [(r.record_type, r.line) for r in client.rejects] == [("customers", 2), ("customers", 3)]
    assert seen == client.rejects
    assert [(p.field, p.code) for p in client.rejects[0].errors] == [
        ("email", "invalid_email"),
        ("created_at", "invalid_timestamp"),
    ]
    assert [(p.field, p.code) for p in client.rejects[1].errors] == [("", "invalid_json")]
    wrong = Client(live_stack, "ck_0123456789ab_wrong", policy=FAST, flush_at_exit=False)
    wrong.send("customers", customer(7003))
    with pytest.raises(SendFailed, match="1 records in 1 batches not sent: the API key was"):
        wrong.close(timeout=30)
    assert [len(f.lines) for f in wrong.failures] == [1]
    assert wrong.counts.failed == 1


def test_a_reject_is_described_with_every_problem_of_its_row():
    """The CLI's line for a reject: its first problem, then each other one on its own line;
    an answer without `errors` (an older server) has the one it names."""
    answer = {
        "line": 3,
        "field": "email",
        "code": "invalid_email",
        "message": "email is not a valid email address: 'x'",
        "raw": "{}",
        "errors": [
            {"field": "email", "code": "invalid_email", "message": "bad email"},
            {"field": "name", "code": "missing_field", "message": "name is required"},
        ],
    }
    first = (answer["field"], answer["code"], answer["message"], answer["raw"])
    several = Reject("customers", 5, 3, *first, errors=_problems(answer))
    assert _describe(several) == (
        "rejected: batch 5 line 3: invalid_email (email): email is not a valid email "
        "address: 'x'\n  also missing_field (name): name is required"
    )
    older = {k: v for k, v in answer.items() if k != "errors"}
    one = Reject("customers", 6, 3, *first, errors=_problems(older))
    assert _describe(one) == (
        "rejected: batch 6 line 3: invalid_email (email): email is not a valid email address: 'x'"
    )
    assert one.errors == (Problem("email", "invalid_email", answer["message"]),)


def stream(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bulk_ingest.py"), "stream", "--no-progress", *args]


def test_stream_sends_ndjson_from_stdin(live_stack):
    """`bulk_ingest.py stream --type customers` reads stdin to its end, sends it, and exits
    1 because one row was rejected; the others are merged."""
    tenant, issued = tenant_create(name="live-stdin")
    data = lines(range(8000, 8150)) + '{"customer_id": "x"}\n' + lines(range(8150, 8300))
    done = subprocess.run(
        stream(
            "--type",
            "customers",
            "--api-url",
            live_stack,
            "--api-key",
            issued.raw,
            "--batch-records",
            "100",
        ),  # fmt: skip
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "301 records sent" in done.stdout
    assert "300 accepted, 1 rejected, 0 not sent" in done.stdout
    # its line in the input, then in its batch (the second batch: lines 101-200)
    assert "rejected: line 151 (batch " in done.stderr
    assert " line 51): invalid_uuid (customer_id)" in done.stderr
    assert "\n  also missing_field (name): name is required\n" in done.stderr
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == 300)


def following(path: Path, api_url: str, api_key: str) -> subprocess.Popen:
    """`stream --follow` of `path` in batches of 50 (or after 60 s), started."""
    command = stream(
        "--type", "customers", str(path), "--follow", "--api-url", api_url,
        "--api-key", api_key, "--batch-records", "50", "--batch-delay", "60",
    )  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def ended_by(process: subprocess.Popen, path: Path, signum: int) -> tuple[str, str]:
    """Once `process` has read `path` to its end, `signum` to it; its output."""
    return signalled(process, signum, ready=lambda: read_to_end(process.pid, path), settle=0.3)


def signalled(
    process: subprocess.Popen, *signums: int, ready=lambda: True, settle: float = 0.0
) -> tuple[str, str]:
    """Once `ready()` (then `settle` seconds: from its read buffer into a batch), each of
    `signums` to `process`, 0.3 s apart; its output. Killed if it is still running (an
    assertion failed first, or it did not end)."""
    try:
        wait_for(ready, timeout=30)
        time.sleep(settle)
        for number, signum in enumerate(signums):
            time.sleep(0.3 if number else 0)
            process.send_signal(signum)
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()  # its pipes closed, not left to the garbage collector


def test_stream_follows_a_growing_replaced_file_and_flushes_on_ctrl_c(tmp_path, live_stack):
    """--follow sends lines as they are appended, reopens the file when it is replaced
    (rotation), and on SIGINT sends the lines still waiting in a batch, then exits 0."""
    tenant, issued = tenant_create(name="live-follow")
    path = tmp_path / "customers.ndjson"
    path.write_text(lines(range(100)))
    process = following(path, live_stack, issued.raw)
    rows = Customer.objects.filter(tenant_id=tenant.id)
    try:
        wait_for(lambda: rows.count() == 100)  # two full batches of 50
        with path.open("a") as grown:
            grown.write(lines(range(100, 150)))
        wait_for(lambda: rows.count() == 150)
        rotated = tmp_path / "next.ndjson"
        rotated.write_text(lines(range(150, 200)))
        os.replace(rotated, path)  # another inode: read from its start
        wait_for(lambda: rows.count() == 200)
        with path.open("a") as grown:
            grown.write(lines(range(200, 230)))  # less than a batch: waits for 60 s
    except BaseException:
        process.kill()
        process.communicate()
        raise
    out, err = ended_by(process, path, signal.SIGINT)
    assert process.returncode == 0, out + err
    assert "230 accepted, 0 rejected, 0 not sent" in out
    wait_for(lambda: rows.count() == 230)
    assert rows.values("customer_id").distinct().count() == 230


def test_records_sent_without_close_are_flushed_when_the_program_exits(live_stack):
    """A program that sends and exits without flush or close: atexit sends its records."""
    tenant, issued = tenant_create(name="live-atexit")
    program = (
        "import sys; from ingest_client import Client; "
        "c = Client(sys.argv[1], sys.argv[2], max_delay=60); "
        "[c.send('customers', {'customer_id': '00000000-0000-4000-8000-%012d' % n, "
        "'name': 'x', 'email': 'x%d@example.com' % n, 'created_at': '2024-03-01T10:00:00Z'}) "
        "for n in range(20)]"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, live_stack, issued.raw],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert RecordBatch.objects.filter(tenant_id=tenant.id).count() == 1
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == 20)
