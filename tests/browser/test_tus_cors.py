"""A tus upload from a web page on another origin, in a real browser: headless Chromium
(Debian's `chromium` package) driven by Playwright loads a page from a small HTTP server on
one loopback port, with tus-js-client (installed from this folder's package.json by `make
install`, served by that server, no CDN), and uploads an NDJSON file to gunicorn on another
port, started with CORS_ALLOWED_ORIGINS naming the page's origin; a Celery worker loads it.
The same page from an origin not listed is refused by the browser."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import TERMINAL_STATES, Upload, UploadSession
from apps.ingestions.tables import Customer
from apps.tenants.services import tenant_create
from scripts.stack import running_stack
from tests.conftest import CHROMIUM, needs_chromium, wait_for
from tests.factories import database_url_of_tests

HERE = Path(__file__).resolve().parent
TUS_JS = HERE / "node_modules" / "tus-js-client" / "dist" / "tus.min.js"
ROWS = 1_500
CHUNK = 64 * 1024  # several PATCHes for the file

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    needs_chromium,
    pytest.mark.skipif(
        not TUS_JS.exists(),
        reason="tus-js-client is not installed: `make install` runs "
        "`npm ci --prefix tests/browser` when npm is on PATH",
    ),
]

# The page: pick a file, upload it with tus-js-client, and report every answer's headers
# as the page's script can read them (a header not exposed by CORS reads as null).
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>tus upload from another origin</title>
<input type="file" id="file">
<script src="/tus.min.js"></script>
<script>
window.uploadWithTus = ({ endpoint, apiKey, chunkSize }) => new Promise((resolve) => {
  const file = document.getElementById("file").files[0];
  const answers = [];
  const upload = new tus.Upload(file, {
    endpoint,
    chunkSize,
    headers: { "X-API-Key": apiKey },
    metadata: { filename: file.name },
    retryDelays: null,  // a refusal is reported at once
    storeFingerprintForResuming: false,
    onAfterResponse(request, response) {
      const read = (name) => response.getHeader(name);
      answers.push({
        method: request.getMethod(),
        status: response.getStatus(),
        location: read("Location"),
        offset: read("Upload-Offset"),
        expires: read("Upload-Expires"),
        result: read("Upload-Result"),
        tusResumable: read("Tus-Resumable"),
        requestId: read("X-Request-Id"),
        remaining: read("RateLimit-Remaining"),
      });
    },
    onSuccess() { resolve({ ok: true, url: upload.url, answers }); },
    onError(error) { resolve({ ok: false, error: String(error), answers }); },
  });
  upload.start();
});
</script>
"""


class _PageHandler(BaseHTTPRequestHandler):
    """The page at / and tus-js-client's browser bundle at /tus.min.js; nothing else."""

    def do_GET(self):
        files = {"/": (PAGE, "text/html"), "/tus.min.js": (TUS_JS.read_bytes(), "text/javascript")}
        if self.path not in files:
            self.send_error(404)
            return
        body, content_type = files[self.path]
        self.send_response(200)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet: pytest shows failures, not page loads
        pass


@contextlib.contextmanager
def _page_server() -> Iterator[str]:
    """Serve the page from a thread on a free loopback port; yield its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def origins_and_api(django_db_setup, tmp_path_factory):
    """(allowed page origin, another page origin, API base URL): gunicorn and a worker on
    the test database, with CORS_ALLOWED_ORIGINS the first origin only."""
    with _page_server() as allowed, _page_server() as other:
        env = {"DATABASE_URL": database_url_of_tests(), "CORS_ALLOWED_ORIGINS": allowed}
        log_dir = tmp_path_factory.mktemp("stack")
        with running_stack(env=env, workers=1, log_dir=log_dir) as base:
            yield allowed, other, base


@contextlib.contextmanager
def _page(origin: str) -> Iterator:
    """A Chromium page on `origin`'s page; console messages collected in `page.console`."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.console = []
            page.on("console", lambda message: page.console.append(message.text))
            page.goto(f"{origin}/")
            assert page.evaluate("typeof tus.Upload") == "function"  # the library was served
            yield page
        finally:
            browser.close()


def _upload(page, path: Path, *, base: str, key: str) -> dict:
    page.set_input_files("#file", str(path))
    arguments = {"endpoint": f"{base}/api/v1/ingest/tus/", "apiKey": key, "chunkSize": CHUNK}
    return page.evaluate("(arguments) => window.uploadWithTus(arguments)", arguments)


def _is_uuid(text: str | None) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except (TypeError, ValueError):
        return False


def test_a_page_on_an_allowed_origin_uploads_a_file_with_tus(origins_and_api, tmp_path):
    """tus-js-client creates the upload and PATCHes it in chunks from the other origin; the
    page reads Location, Upload-Offset, Upload-Result, X-Request-Id and the rate-limit
    headers; a worker loads every row."""
    allowed, _, base = origins_and_api
    tenant, issued = tenant_create(name="Browser Tus Shop")
    rows = [
        customer_row(customer_id=uid(f"tus-{n}"), email=f"t{n}@example.com") for n in range(ROWS)
    ]
    path = tmp_path / "customers_browser.ndjson"
    path.write_bytes(ndjson_bytes(rows))
    size = path.stat().st_size

    with _page(allowed) as page:
        outcome = _upload(page, path, base=base, key=issued.raw)

    assert outcome["ok"], (outcome, page.console)
    answers = outcome["answers"]
    created, *patches = answers
    session = UploadSession.objects.get(tenant=tenant)
    assert (created["method"], created["status"]) == ("POST", 201)
    assert created["location"] == outcome["url"] == f"{base}/api/v1/ingest/tus/{session.token}"
    assert created["expires"] is not None
    offsets = [min(size, CHUNK * n) for n in range(1, -(-size // CHUNK) + 1)]
    assert len(offsets) > 2
    assert [(a["method"], a["status"], a["offset"]) for a in patches] == [
        ("PATCH", 204, str(offset)) for offset in offsets
    ]
    for answer in answers:
        assert answer["tusResumable"] == "1.0.0"
        assert _is_uuid(answer["requestId"]), answer
        assert answer["remaining"] is not None
    assert len({answer["requestId"] for answer in answers}) == len(answers)
    assert [a["result"] for a in patches[:-1]] == [None] * (len(patches) - 1)

    upload = wait_for(
        lambda: Upload.objects.filter(tenant=tenant, state__in=TERMINAL_STATES).first(),
        timeout=60,
    )
    assert patches[-1]["result"] == f"{base}/api/v1/ingest/uploads/{upload.id}/"
    assert (upload.state, upload.filename, upload.record_type, upload.size_bytes) == (
        "completed",
        "customers_browser.ndjson",
        "customers",
        size,
    )
    assert (upload.rows_inserted, upload.rows_rejected) == (ROWS, 0)
    assert Customer.objects.filter(tenant_id=tenant.id).count() == ROWS


def test_the_same_page_on_an_origin_not_allowed_is_refused_by_the_browser(
    origins_and_api, tmp_path
):
    """From another port, the preflight is answered without CORS headers: Chromium never
    sends the upload, the script reads no answer, and nothing is stored."""
    _, other, base = origins_and_api
    tenant, issued = tenant_create(name="Elsewhere Shop")
    path = tmp_path / "customers_elsewhere.ndjson"
    path.write_bytes(ndjson_bytes([customer_row(customer_id=uid("elsewhere"))]))

    with _page(other) as page:
        outcome = _upload(page, path, base=base, key=issued.raw)

    assert outcome["ok"] is False
    assert outcome["error"].startswith("Error: tus: failed to create upload"), outcome
    assert outcome["answers"] == []
    assert any("blocked by CORS policy" in text for text in page.console), page.console
    assert not UploadSession.objects.filter(tenant=tenant).exists()
