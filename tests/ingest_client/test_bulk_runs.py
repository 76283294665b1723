"""bulk_ingest.py as an operator runs it: a subprocess against a live web server and Celery
worker on the test database, asserting its exit code, its output and the rows it loaded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from apps.ingestions.models import Customer, Order, OrderItem, Product, Upload, UploadSession
from apps.ingestions.sample_data import Sizes, WrittenFile, write_tenant_files
from apps.tenants.services import tenant_create
from scripts.stack import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# the command through its main(), with the test hook set (-c: the project is on sys.path)
HOOKED = (
    "import sys; from ingest_client import main; "
    "sys.exit(main(sys.argv[1:], prog='bulk_ingest.py', stop_after_chunks={chunks}))"
)
MODELS = {"customers": Customer, "products": Product, "orders": Order, "order_items": OrderItem}


def make_data(
    folder: Path, *, tenants: int = 1, fault_rate: float = 0.0, seed: int = 1, customers: int = 20
) -> tuple[Path, dict[str, list[WrittenFile]]]:
    """A data directory as `generate_data` writes it, small; returns it and the files
    written per tenant id."""
    sizes = Sizes(
        customers=customers, products=5, orders=40, items_per_order=2, fault_rate=fault_rate
    )
    manifest, written = [], {}
    for n in range(tenants):
        tenant, issued = tenant_create(name=f"cli-{n}")
        written[str(tenant.id)] = write_tenant_files(folder / f"t{n}", sizes=sizes, seed=seed + n)
        manifest.append(
            {"tenant_id": str(tenant.id), "name": f"t{n}", "api_key": issued.raw, "dir": f"t{n}"}
        )
    (folder / "tenants.json").write_text(json.dumps(manifest))
    return folder, written


def bulk_ingest(*args: str, stop_after_chunks: int | None = None) -> subprocess.CompletedProcess:
    """`python bulk_ingest.py --no-progress ARGS`. With `stop_after_chunks`, the same
    command's main() is run with that test hook (it is no option of the command): the run
    stops as if interrupted after that many session chunks."""
    command = [sys.executable, str(ROOT / "bulk_ingest.py")]
    if stop_after_chunks is not None:
        command = [sys.executable, "-c", HOOKED.format(chunks=stop_after_chunks)]
    return subprocess.run(
        [*command, "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )


def assert_loaded_once(written: dict[str, list[WrittenFile]]) -> None:
    """Every tenant's final tables hold exactly the valid rows of its files."""
    for tenant_id, files in written.items():
        for f in files:
            rows = MODELS[f.record_type].objects.filter(tenant_id=tenant_id).count()
            assert rows == f.rows - f.faults, (tenant_id, f.record_type)


def test_a_dry_run_prints_the_plan_in_dependency_order_and_uploads_nothing(tmp_path, live_stack):
    """--dry-run lists tenant, stage, file, type and size, sends nothing, writes no state."""
    data, _ = make_data(tmp_path)
    done = bulk_ingest("--data-dir", str(data), "--api-url", live_stack, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "_1.ndjson" in line]
    assert [line.split("│")[2:5] for line in lines] == [
        [" 1     ", " customers_1.ndjson   ", " customers   "],
        [" 1     ", " products_1.ndjson    ", " products    "],
        [" 2     ", " orders_1.ndjson      ", " orders      "],
        [" 3     ", " order_items_1.ndjson ", " order_items "],
    ]
    assert "4 file(s)" in done.stdout
    assert Upload.objects.count() == 0
    assert not (data / ".bulk_ingest_state.json").exists()


def test_a_run_loads_exactly_the_valid_rows_and_a_rerun_loads_nothing_twice(tmp_path, live_stack):
    """Bad lines are rejected (exit 1), the rest loaded; rerunning, with or without the
    state file, processes nothing again."""
    data, written = make_data(tmp_path, tenants=2, fault_rate=0.1)
    args = ("--data-dir", str(data), "--api-url", live_stack)
    first = bulk_ingest(*args)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "completed_with_errors" in first.stdout
    assert "overall:" in first.stdout
    assert "rows/s" in first.stdout
    assert_loaded_once(written)
    uploads = {u.id: u.updated_at for u in Upload.objects.all()}
    assert len(uploads) == 8
    assert {u.state for u in Upload.objects.all()} <= {"completed", "completed_with_errors"}
    table = [line for line in first.stdout.splitlines() if "_1.ndjson" in line]

    rerun = bulk_ingest(*args)
    assert rerun.returncode == 1
    assert "nothing new to load: all 8 file(s) were loaded before" in rerun.stdout
    assert [line for line in rerun.stdout.splitlines() if "_1.ndjson" in line] == table

    (data / ".bulk_ingest_state.json").unlink()
    without_state = bulk_ingest(*args)  # the Idempotency-Keys alone recognise every file
    assert without_state.returncode == 1
    assert {u.id: u.updated_at for u in Upload.objects.all()} == uploads
    assert_loaded_once(written)


def test_an_interrupted_session_upload_resumes_where_it_stopped(tmp_path, live_stack):
    """Stopped after two chunks of the orders file (exit 2), the next run continues its
    session from byte 8,192 and the file is loaded once; clean data ends with exit 0."""
    data, written = make_data(tmp_path)
    args = (
        "--data-dir",
        str(data),
        "--api-url",
        live_stack,
        "--session-threshold",
        "4KiB",
        "--chunk-size",
        "4KiB",
    )
    first = bulk_ingest(*args, stop_after_chunks=2)
    assert first.returncode == 2
    assert "interrupted: run the same command again to continue" in first.stderr
    (session,) = UploadSession.objects.all()
    assert (session.filename, session.offset, session.state) == ("orders_1.ndjson", 8192, "open")
    state = json.loads((data / ".bulk_ingest_state.json").read_text())["files"]
    assert {v["token"]: v["offset"] for v in state.values() if "token" in v} == {
        session.token: 8192
    }
    assert not Upload.objects.filter(record_type="orders").exists()

    second = bulk_ingest(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "orders_1.ndjson: resuming session at byte 8,192" in second.stdout
    assert UploadSession.objects.filter(filename="orders_1.ndjson").count() == 1
    assert Upload.objects.filter(record_type="orders").count() == 1
    assert_loaded_once(written)


def test_ctrl_c_stops_the_run_cleanly_and_the_next_run_resumes(tmp_path, live_stack):
    """SIGINT in the middle of a session upload: exit 2 with a hint, the state saved; the
    same command then finishes the file from where the server is, loading it once."""
    data, written = make_data(tmp_path, customers=3000)  # ~570 KiB of customers
    args = ["--data-dir", str(data), "--api-url", live_stack, "--session-threshold", "64KiB"]
    state_file = data / ".bulk_ingest_state.json"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bulk_ingest.py"), "--no-progress", *args, "--chunk-size=4KiB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    # until the server holds a chunk: the token is saved before the first one is sent
    sent = UploadSession.objects.filter(offset__gt=0)
    while not (state_file.exists() and '"token"' in state_file.read_text() and sent.exists()):
        assert time.monotonic() < deadline, "no session was started"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert "interrupted: run the same command again to continue" in err
    (session,) = UploadSession.objects.all()
    assert 0 < session.offset < session.size
    assert session.state == "open"

    second = bulk_ingest(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"customers_1.ndjson: resuming session at byte {session.offset:,}" in second.stdout
    assert UploadSession.objects.count() == 1
    assert_loaded_once(written)


class FlakyProxy:
    """Forwards every request to the live server, except that the first request matching
    each fault is answered by the proxy itself (e.g. 429 with Retry-After). Logs every
    request as (monotonic time, method, path, status)."""

    def __init__(self, upstream: str, faults: list[tuple[str, str, int, dict]]):
        self.faults = list(faults)
        self.log: list[tuple[float, str, str, int]] = []
        proxy = self
        self.client = client = httpx.Client(base_url=upstream, timeout=60)

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, content = proxy.answer(client, self, body)
                proxy.log.append((time.monotonic(), self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = handle_one  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, client: httpx.Client, request, body: bytes):
        for fault in self.faults:
            method, prefix, status, headers = fault
            if request.command == method and request.path.startswith(prefix):
                self.faults.remove(fault)
                problem = {"status": status, "title": "injected", "detail": "by the test proxy"}
                return (
                    status,
                    {**headers, "Content-Type": "application/problem+json"},
                    (json.dumps(problem).encode()),
                )
        skip = {"host", "content-length", "connection", "transfer-encoding"}
        response = client.request(
            request.command,
            request.path,
            content=body,
            headers={k: v for k, v in request.headers.items() if k.lower() not in skip},
        )
        hop = {"content-length", "connection", "transfer-encoding", "content-encoding"}
        keep = {k: v for k, v in response.headers.items() if k.lower() not in hop}
        return response.status_code, keep, response.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()  # its kept-alive sockets, else closed (and warned of) by the GC


def test_a_429_with_retry_after_and_a_503_are_retried(tmp_path, live_stack):
    """The first upload gets 429 with Retry-After: 1 and the first status poll a 503: the
    CLI waits the full second, retries both, and the run succeeds."""
    data, written = make_data(tmp_path)
    proxy = FlakyProxy(
        live_stack,
        [
            ("POST", "/api/v1/ingest/comprehensive/", 429, {"Retry-After": "1"}),
            ("GET", "/api/v1/ingest/uploads/", 503, {}),
        ],
    )
    try:
        done = bulk_ingest("--data-dir", str(data), "--api-url", proxy.url, "--parallel", "1")
    finally:
        proxy.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HTTP 429; retrying in 1.0s" in done.stdout
    assert "HTTP 503; retrying in" in done.stdout
    posts = [(t, status) for t, method, path, status in proxy.log if method == "POST"]
    assert posts[0][1] == 429
    assert posts[1][1] in (200, 202)
    assert posts[1][0] - posts[0][0] >= 1.0
    assert_loaded_once(written)


def test_a_refused_api_key_ends_with_a_clear_message_and_exit_2(tmp_path, live_stack):
    """401 is not retried: the tenant's files are not sent, the reason is said once."""
    data, _ = make_data(tmp_path)
    done = bulk_ingest(
        "--data-dir", str(data), "--api-url", live_stack, "--api-key", "ck_0123456789ab_wrong"
    )
    assert done.returncode == 2
    assert "t0 (4 files): the API key was refused (401" in done.stderr
    assert "check the manifest's api_key or --api-key" in done.stderr
    assert Upload.objects.count() == 0


def test_an_unreachable_server_is_retried_then_reported_with_exit_2(tmp_path):
    """Connection errors are retried with backoff, then the file is reported not sent."""
    data, _ = make_data(tmp_path)
    started = time.monotonic()
    done = bulk_ingest(
        "--data-dir", str(data), "--api-url", f"http://127.0.0.1:{free_port()}", "--retries", "3"
    )
    assert done.returncode == 2
    assert "ConnectError" in done.stdout
    assert "gave up after 3 attempts (ConnectError" in done.stderr
    assert time.monotonic() - started < 30


def test_a_rerun_processes_again_a_session_upload_that_failed(tmp_path):
    """The first run's gzip customers file fails in the worker (the server's decompressed
    limit is too low); with the limit raised, the rerun resumes its session, the worker
    processes the stored bytes again and the run ends with exit 0."""
    import gzip

    from scripts.stack import running_stack
    from tests.factories import database_url_of_tests

    data, written = make_data(tmp_path)
    plain = data / "t0" / "customers_1.ndjson"
    (data / "t0" / "customers_1.ndjson.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    args = ("--data-dir", str(data), "--session-threshold", "1KiB", "--chunk-size", "4KiB")
    # a queue of its own: the module's shared stack must not take these uploads
    env = {"DATABASE_URL": database_url_of_tests(), "CELERY_QUEUE": f"rerun-{tmp_path.name}"}

    with running_stack(
        env={**env, "INGEST_MAX_DECOMPRESSED_BYTES": "100"}, workers=1, log_dir=tmp_path
    ) as base:
        first = bulk_ingest(*args, "--api-url", base)
    assert first.returncode == 2, first.stdout + first.stderr
    failed = Upload.objects.get(record_type="customers")
    assert (failed.state, failed.error_code) == ("failed", "decompression_bomb")

    with running_stack(env=env, workers=1, log_dir=tmp_path) as base:
        second = bulk_ingest(*args, "--api-url", base)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "customers_1.ndjson.gz: its processing failed last time (decompression_bomb)" in (
        second.stdout
    )
    failed.refresh_from_db()
    assert (failed.state, failed.error_code) == ("completed", "")
    assert Upload.objects.filter(record_type="customers").count() == 1
    assert_loaded_once(written)
