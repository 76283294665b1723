"""HTTP at the edges (SPEC 5, "Details that clients rely on"): HEAD answers without a
body, NUL bytes and non-ASCII digits, paths with or without their trailing slash, unknown
filter values, two files in one form, and wrong methods. The HEAD cases run through a real
gunicorn on a kept-alive connection: Django's test client strips HEAD bodies by itself."""

from __future__ import annotations

import json
import re
import socket

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Blob, Upload, UploadSession
from apps.tenants.services import tenant_create
from tests.factories import ingest_stored
from tests.web_server import running_web_server

PROBLEM = "application/problem+json"
TOKEN = "0123456789abcdef0123456789abcdef"  # well-formed, but no such session
UPLOAD_ID = "00000000-0000-4000-8000-000000000000"  # well-formed, but no such upload

# --- a real gunicorn, read byte by byte ------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    with running_web_server(log_dir=tmp_path_factory.mktemp("gunicorn")) as base:
        yield int(base.rsplit(":", 1)[1])


class Connection:
    """One kept-alive HTTP/1.1 connection, answers read exactly as framed."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: testserver"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def answer(self, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the next answer; a HEAD answer has headers only."""
        status_line = self._line()
        assert status_line.startswith(b"HTTP/1.1 "), f"illegal status line: {status_line[:80]!r}"
        status = int(status_line.split()[1])
        headers = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                self._take(2)
            self._line()
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def nothing_more(self) -> bool:
        """No stray bytes follow the last answer (waits a moment for them)."""
        self.sock.settimeout(0.3)
        try:
            self._fill()
        except TimeoutError:
            return self.buffer == b""
        finally:
            self.sock.settimeout(10)
        return False


@pytest.fixture
def connect(server):
    opened = []

    def make() -> Connection:
        opened.append(Connection(server))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


@pytest.fixture
def stored(transactional_db):
    """A tenant with its key and one upload that has rejects, committed for gunicorn."""
    tenant, issued = tenant_create(name="Edges")
    rows = [customer_row(customer_id=uid("edge-1")), customer_row(customer_id="nope")]
    upload = ingest_stored(tenant, "customers_1.ndjson", ndjson_bytes(rows))
    return issued.raw, upload


HEAD_PATHS = [
    ("/healthz", {}),
    ("/readyz", {}),
    ("/metrics", {}),
    ("/api/v1/schema/", {}),
    ("/api/v1/schema/?format=yaml", {}),
    ("/api/v1/nope/", {}),
    ("/api/v1/ingest/uploads/", {}),
    ("/api/v1/ingest/uploads/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/errors/", {"X-API-Key": "{key}"}),
    ("/api/v1/ingest/uploads/{upload}/errors/?format=ndjson", {"X-API-Key": "{key}"}),
    (f"/api/v1/ingest/sessions/{TOKEN}/status/", {"X-API-Key": "{key}"}),
    ("/dashboard/", {}),
    ("/dashboard/login/", {}),
    ("/dashboard/login/", {"Accept": "text/html"}),
    ("/dashboard/data/", {}),
    ("/static/dashboard/dashboard.css", {}),
]


@pytest.mark.parametrize(("path", "headers"), HEAD_PATHS)
def test_a_head_answer_has_the_get_answers_headers_and_no_body(connect, stored, path, headers):
    """HEAD answers as GET does, headers only; the next answer on the same kept-alive
    connection is read cleanly."""
    key, upload = stored
    path = path.format(upload=upload.id)
    headers = {name: value.format(key=key) for name, value in headers.items()}
    connection = connect()
    connection.send("GET", path, headers)
    get_status, get_headers, get_body = connection.answer()
    connection.send("HEAD", path, headers)
    status, head_headers, _ = connection.answer(head=True)
    assert connection.nothing_more(), f"HEAD {path} sent a body: {connection.buffer[:80]!r}"
    assert status == get_status
    assert head_headers.get("content-type") == get_headers.get("content-type")
    if "content-length" in head_headers and path != "/metrics":  # counts the GET itself
        assert head_headers["content-length"] == str(len(get_body))
    connection.send("GET", "/healthz")
    status, _, body = connection.answer()
    assert (status, body) == (200, b'{"status": "ok"}')


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-API-Key": "{key}", "Tus-Resumable": "1.0.0"}, 404),
        ({"X-API-Key": "{key}"}, 412),
        ({"Tus-Resumable": "1.0.0"}, 401),
    ],
)
def test_a_tus_head_error_has_no_body(connect, stored, headers, status):
    """The failure a tus client saw: the problem+json of a tus HEAD answer read as the
    next status line (`illegal status line: {"type":...}HTTP/1.1 401`)."""
    key, _ = stored
    connection = connect()
    headers = {name: value.format(key=key) for name, value in headers.items()}
    connection.send("HEAD", f"/api/v1/ingest/tus/{TOKEN}", headers)
    assert connection.answer(head=True)[0] == status
    assert connection.nothing_more()
    connection.send("GET", "/healthz")
    assert connection.answer()[0] == 200


# --- through Django's test client ------------------------------------------------------------

UPLOADS = "/api/v1/ingest/uploads/"
SESSIONS = "/api/v1/ingest/sessions/"
TUS = "/api/v1/ingest/tus/"
COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
CHUNK = "application/offset+octet-stream"
V = {"Tus-Resumable": "1.0.0"}
CUSTOMERS = ndjson_bytes([customer_row()])


@pytest.fixture
def api(db):
    """A DRF test client sending a key of a fresh tenant."""
    from rest_framework.test import APIClient

    tenant, issued = tenant_create(name="Edges")
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_X_API_KEY=issued.raw)
    client.tenant = tenant
    return client


def session_of(api, **body) -> str:
    body = {"filename": "customers_1.ndjson", "size": len(CUSTOMERS), **body}
    response = api.post(SESSIONS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["token"]


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


def send(api, method: str, path: str, *, data=b"", content_type=CHUNK, headers=None):
    return api.generic(method, path, data, content_type=content_type, headers=headers or {})


# NUL bytes wherever a client's string could reach a text column: 400 or 404, never 500.
NUL_REQUESTS = [
    ("GET", f"{UPLOADS}?state=%00", {}, 400),
    ("GET", f"{UPLOADS}?type=%00", {}, 400),
    ("GET", f"{UPLOADS}%00/", {}, 404),
    ("GET", f"{UPLOADS}%00/errors/", {}, 404),
    ("GET", f"{UPLOADS}{UPLOAD_ID}/errors/?code=%00", {}, 400),
    ("GET", f"{SESSIONS}%00/", {}, 404),
    ("PATCH", f"{SESSIONS}%00/", {"Upload-Offset": "0"}, 404),
    ("DELETE", f"{SESSIONS}%00/", {}, 404),
    ("GET", f"{SESSIONS}%00/status/", {}, 404),
    ("POST", f"{SESSIONS}%00/resume/", {}, 404),
    ("HEAD", f"{TUS}%00", V, 404),
    ("PATCH", f"{TUS}%00", {**V, "Upload-Offset": "0"}, 404),
    ("DELETE", f"{TUS}%00", V, 404),
    ("POST", f"{COMPREHENSIVE}?filename=customers_a%00b.ndjson", {}, 400),
    ("POST", f"{COMPREHENSIVE}?filename=customers_a%01b.ndjson", {}, 400),
    ("POST", f"{COMPREHENSIVE}?type=%00", {}, 400),
    (
        "POST",
        COMPREHENSIVE,
        {"Content-Disposition": "attachment; filename*=UTF-8''customers_a%00b.ndjson"},
        400,
    ),
    ("POST", COMPREHENSIVE, {"Idempotency-Key": "a\x00b"}, 400),
    ("POST", COMPREHENSIVE, {"Upload-Token": "\x00", "Upload-Offset": "0"}, 404),
    ("POST", COMPREHENSIVE, {"Upload-Token": TOKEN[:-1] + "\x00", "Upload-Offset": "0"}, 404),
    ("POST", TUS, {**V, "Upload-Length": "9", "Upload-Metadata": "filename YQBiLm5kanNvbg=="}, 400),
    ("POST", TUS, {**V, "Upload-Length": "9", "Upload-Metadata": "file\x00name YQ=="}, 400),
    ("GET", UPLOADS, {"X-API-Key": "ck_\x00_x"}, 401),
    # in a parameter nothing reads, refused all the same
    ("GET", "/api/v1/analytics/summary/?unknown=%00", {}, 400),
    ("GET", "/healthz?x=a%00", {}, 400),
    ("GET", f"{UPLOADS}?limit=10&note=%00", {}, 400),
]


@pytest.mark.parametrize(("method", "path", "headers", "status"), NUL_REQUESTS)
def test_a_nul_byte_anywhere_is_a_client_error(api, method, path, headers, status):
    """NUL bytes (PostgreSQL refuses them in text) are 400 or 404 problem+json, never 500."""
    chunk = "tus" in path or "sessions" in path or "Upload-Token" in headers
    if "X-API-Key" in headers:
        api.credentials()
    content_type = CHUNK if chunk else "application/x-ndjson"
    response = send(api, method, path, data=CUSTOMERS, content_type=content_type, headers=headers)
    assert response.status_code == status, response.content
    if method != "HEAD":
        assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize(
    "filename", ["a\\u0000b", "a\\u0001b", "a\\nb", "a\\u0085b", "a\\ud800b", "a\\udc00"]
)
def test_a_control_character_in_a_session_file_name_is_400(api, filename):
    """The session JSON's file name is checked like every other file name; a lone
    surrogate (valid JSON, no UTF-8 form) is refused with them."""
    body = f'{{"filename": "{filename}.ndjson", "size": 9}}'
    response = api.post(SESSIONS, body, content_type="application/json")
    assert_problem(response, 400)
    assert not UploadSession.objects.exists()


@pytest.mark.parametrize("via", ["session", "comprehensive", "tus"])
@pytest.mark.parametrize("digits", ["²", "٣", "-1", "1.0", " 1 2", "9" * 30])
def test_a_non_ascii_digit_in_upload_offset_is_400(api, via, digits):
    """Only ASCII digits make a number: `'²'.isdigit()` is True and `int('٣')` is 3."""
    if via == "tus":
        created = api.post(
            TUS, headers={**V, "Upload-Length": "9", "Upload-Metadata": "filename YQ=="}
        )
        path, headers = created["Location"], {**V, "Upload-Offset": digits}
        response = send(api, "PATCH", path, headers=headers, data=b"x")
    elif via == "session":
        token = session_of(api)
        response = send(api, "PATCH", f"{SESSIONS}{token}/", headers={"Upload-Offset": digits})
    else:
        token = session_of(api)
        headers = {"Upload-Offset": digits, "Upload-Token": token}
        response = send(api, "POST", COMPREHENSIVE, headers=headers, data=b"x")
    detail = assert_problem(response, 400)["detail"]
    assert detail.startswith("Upload-Offset must be a non-negative integer (ASCII digits")


@pytest.mark.parametrize("size", ["²", "٣", "1٣", " ٣ "])
def test_a_non_ascii_digit_in_a_session_size_is_400(api, size):
    """A size sent as a string is read as ASCII digits only (DRF alone reads '٣' as 3)."""
    response = api.post(SESSIONS, {"filename": "customers_1.ndjson", "size": size}, format="json")
    assert assert_problem(response, 400)["errors"] == {"size": ["A valid integer is required."]}


@pytest.mark.parametrize("digits", ["²", "٣", "-1", "", "1e3"])
def test_a_non_ascii_digit_in_upload_length_is_400(api, digits):
    """tus creation: Upload-Length is read by the same parser as every number."""
    response = api.post(
        TUS, headers={**V, "Upload-Length": digits, "Upload-Metadata": "filename YQ=="}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize("digits", ["²", "٣", "x"])
def test_a_non_ascii_digit_in_content_length_is_400(api, digits):
    """A Content-Length that is no number (gunicorn refuses it first; the app must too)."""
    response = api.generic(
        "POST",
        f"{COMPREHENSIVE}?filename=customers_1.ndjson",
        CUSTOMERS,
        content_type="application/x-ndjson",
        CONTENT_LENGTH=digits,
    )
    assert_problem(response, 400)


# --- paths with or without their trailing slash ------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
def test_a_post_without_the_trailing_slash_is_answered_like_with_it(api, settings, debug):
    """No redirect that would drop the body, and no 500 in debug mode."""
    settings.DEBUG = debug
    response = api.post(
        COMPREHENSIVE.rstrip("/"),
        {"file": SimpleUploadedFile("customers_1.ndjson", CUSTOMERS)},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    assert response.json()["url"].endswith(f"{UPLOADS}{response.json()['id']}/")


@pytest.mark.parametrize("debug", [True, False])
def test_every_api_route_answers_with_and_without_its_trailing_slash(api, settings, debug):
    """Each API operation works from both spellings of its path: same status as the
    canonical one, never a redirect or a 5xx."""
    settings.DEBUG = debug
    token = session_of(api)
    upload = ingest_stored(api.tenant, "customers_1.ndjson", CUSTOMERS)
    session = json.dumps({"filename": "customers_1.ndjson", "size": 3})
    for method, path, body, headers, status in [
        ("GET", UPLOADS, "", {}, 200),
        ("GET", f"{UPLOADS}{upload.id}/", "", {}, 200),
        ("GET", f"{UPLOADS}{upload.id}/errors/", "", {}, 200),
        ("GET", f"{SESSIONS}{token}/", "", {}, 200),
        ("GET", f"{SESSIONS}{token}/status/", "", {}, 200),
        ("POST", f"{SESSIONS}{token}/resume/", "", {}, 200),
        ("POST", SESSIONS, session, {}, 201),
        ("GET", "/api/v1/schema/", "", {}, 200),
        ("HEAD", f"{TUS}{token}", "", V, 200),
        ("POST", "/api/v1/ingest/orders/", "{}", {}, 400),
    ]:
        for spelling in (path, path.rstrip("/") if path.endswith("/") else path + "/"):
            response = api.generic(
                method, spelling, body, content_type="application/json", headers=headers
            )
            assert response.status_code == status, (method, spelling, response.content)


def test_a_form_post_to_the_dashboard_without_its_slash_is_no_500(client, settings):
    """The sign-in form posted to /dashboard/login (no slash), in debug mode."""
    settings.DEBUG = True
    response = client.post("/dashboard/login", {"api_key": "nope"})
    assert response.status_code == 200
    assert b"The API key is unknown or revoked." in response.content


def test_a_get_on_the_dashboard_without_its_slash_still_redirects(db, client):
    """A page keeps one address: GET /dashboard redirects, as APPEND_SLASH does."""
    assert client.get("/dashboard").status_code == 301


# --- unknown filter values, pagination -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name", "allowed"),
    [
        ("state=bogus", "state", "received, queued, waiting, processing, completed"),
        ("type=order", "type", "customers, products, orders, order_items"),
        ("state=queued&state=failed", "state", "once"),
    ],
)
def test_an_unknown_filter_value_on_the_uploads_list_is_400(api, query, name, allowed):
    """The problem names the parameter and the values it takes."""
    body = assert_problem(api.get(f"{UPLOADS}?{query}"), 400)
    assert body["detail"].startswith(f"{name}: ")
    assert allowed in body["detail"]
    assert body["errors"][name]


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=-1",
        "limit=0",
        "limit=1001",
        "limit=٣",
        "limit=²",
        "limit=",
        "offset=x",
        "offset=-1",
        "offset=٣",
        "offset=1.5",
        "offset=9223372036854775807",  # 19 digits
        "limit=1&limit=2",
    ],
)
@pytest.mark.parametrize("path", [UPLOADS, f"{UPLOADS}{{upload}}/errors/"])
def test_a_bad_limit_or_offset_is_400(api, query, path):
    """Pagination refuses what is no page (DRF alone falls back to the default)."""
    upload = ingest_stored(api.tenant, "customers_1.ndjson", CUSTOMERS)
    body = assert_problem(api.get(f"{path.format(upload=upload.id)}?{query}"), 400)
    assert body["detail"].startswith(query.split("=")[0] + ": ")
    if query.startswith("offset="):
        assert "Must be a non-negative integer of at most 18 digits" in body["detail"]


def test_a_client_that_accepts_only_problem_documents_gets_its_error_not_a_406(api):
    """`Accept: application/problem+json`: a bad request is its 400 problem, a good one
    JSON; an Accept that takes neither is still 406."""
    accept = {"HTTP_ACCEPT": "application/problem+json"}
    body = assert_problem(api.get(f"{UPLOADS}?limit=0", **accept), 400)
    assert body["detail"].startswith("limit: ")
    good = api.get(UPLOADS, **accept)
    assert (good.status_code, good["Content-Type"]) == (200, "application/json")
    assert api.get(UPLOADS, HTTP_ACCEPT="text/html").status_code == 406


def test_good_limits_and_offsets_page_through(api):
    """The bounds themselves are pages."""
    ingest_stored(api.tenant, "customers_1.ndjson", CUSTOMERS)
    ingest_stored(api.tenant, "customers_2.ndjson", ndjson_bytes([customer_row(email="z@x.io")]))
    page = api.get(f"{UPLOADS}?limit=1&offset=1").json()
    assert (page["count"], len(page["results"])) == (2, 1)
    assert api.get(f"{UPLOADS}?limit=1000&offset=0").status_code == 200


BAD_EMAIL = customer_row(customer_id=uid("bad-email"), email="nope")


@pytest.mark.parametrize("ndjson_format", [False, True])
def test_the_errors_list_filters_by_reject_code_and_refuses_unknown_codes(api, ndjson_format):
    """`?code=` keeps the rejects of one code; an unknown code is 400 naming the codes."""
    rows = [customer_row(customer_id="nope"), BAD_EMAIL, customer_row(customer_id=uid("ok"))]
    upload = ingest_stored(api.tenant, "customers_1.ndjson", ndjson_bytes(rows))
    url = f"{UPLOADS}{upload.id}/errors/?" + ("format=ndjson&" if ndjson_format else "")
    response = api.get(url + "code=invalid_email")
    assert response.status_code == 200
    lines = (
        [json.loads(line) for line in response.getvalue().splitlines()]
        if ndjson_format
        else response.json()["results"]
    )
    assert [(r["line"], r["code"]) for r in lines] == [(2, "invalid_email")]
    body = assert_problem(api.get(url + "code=bogus"), 400)
    assert body["detail"].startswith("code: ")
    assert "invalid_json, not_an_object" in body["detail"]


def test_an_unknown_format_on_the_errors_list_is_400(api):
    """`?format=` names a renderer or is a 400 listing them (DRF alone answers 404)."""
    upload = ingest_stored(api.tenant, "customers_1.ndjson", CUSTOMERS)
    body = assert_problem(api.get(f"{UPLOADS}{upload.id}/errors/?format=xml"), 400)
    assert body["detail"].startswith("format: ")
    assert "json, ndjson" in body["detail"]


# --- multipart ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "two_files",
        "file_and_other_file",
        "two_types",
    ],
)
def test_a_form_that_is_not_one_file_is_400(api, form):
    """Two `file` parts (the first would be dropped silently), a file under another
    name, or a form field given twice: 400, nothing stored."""
    first = SimpleUploadedFile("customers_1.ndjson", CUSTOMERS)
    second = SimpleUploadedFile("customers_2.ndjson", CUSTOMERS)
    body = {
        "two_files": {"file": [first, second]},
        "file_and_other_file": {"file": first, "other": second},
        "two_types": {"file": first, "type": ["customers", "products"]},
    }[form]
    response = api.post(COMPREHENSIVE, body, format="multipart")
    assert_problem(response, 400)
    assert not Upload.objects.exists()
    assert not Blob.objects.exists()


# --- wrong methods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/readyz", "GET, HEAD"),
        ("POST", "/dashboard/", "GET, HEAD"),
        ("DELETE", "/dashboard/data/", "GET, HEAD"),
        ("GET", "/dashboard/logout/", "POST"),
        ("POST", f"/dashboard/uploads/{UPLOAD_ID}/errors/", "GET, HEAD"),
        ("GET", COMPREHENSIVE, "POST, OPTIONS"),
        ("DELETE", UPLOADS, "GET, HEAD, OPTIONS"),
        ("POST", "/api/v1/schema/", "GET, HEAD, OPTIONS"),
    ],
)
def test_a_wrong_method_is_405_with_allow_as_problem_json(api, method, path, allow):
    """Probes and the dashboard answer only their methods, and every 405 says which."""
    response = api.generic(method, path)
    body = assert_problem(response, 405)
    assert response["Allow"] == allow
    assert body["detail"] == f'Method "{method}" not allowed.'


def test_a_browser_on_the_dashboard_gets_its_405_as_html_with_allow(db):
    """The HTML page a browser asked for keeps its Allow header too."""
    from django.test import Client

    response = Client().get("/dashboard/logout/", headers={"Accept": "text/html"})
    assert (response.status_code, response["Allow"]) == (405, "POST")


@pytest.fixture
def staff_browser(db, client):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("staff", password="a-staff-password-1")
    user.is_staff = True
    user.save()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/dashboard/?window=2h", "window"),
        ("/dashboard/data/?window=%00", "window"),
        ("/dashboard/?tenant=acme", "tenant"),
        ("/dashboard/data/?tenant=%00", "tenant"),
        ("/dashboard/uploads/{upload}/errors/?page=abc", "page"),
        ("/dashboard/uploads/{upload}/errors/?page=0", "page"),
        ("/dashboard/uploads/{upload}/errors/?page=٣", "page"),
    ],
)
def test_an_unknown_dashboard_filter_value_is_400(staff_browser, path, name):
    """The dashboard's filters refuse what they do not know, as the API's do."""
    tenant, _ = tenant_create(name="Shown")
    upload = ingest_stored(tenant, "customers_1.ndjson", CUSTOMERS)
    body = assert_problem(staff_browser.get(path.format(upload=upload.id)), 400)
    assert body["detail"].startswith(f"{name}: ")
    assert staff_browser.get(f"/dashboard/uploads/{upload.id}/errors/?page=9").status_code == 200


def _routes() -> list[str]:
    """Every path of the URL configuration, its converters filled with well-formed values
    (a regular expression's group, as the admin's app pages have, with its first choice)."""
    from django.urls import URLResolver, get_resolver

    samples = {"uuid": UPLOAD_ID, "token": TOKEN, "str": "x", "int": "1", "path": "1"}

    def regex_filled(regex: str) -> str:
        first = re.sub(r"\(\?P<\w+>([^|)]*)[^)]*\)", r"\1", regex).replace(".*", "x")
        return first.removeprefix("^").removesuffix("$")

    def walk(patterns, prefix: str):
        for pattern in patterns:
            route = prefix + regex_filled(str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            else:
                route = re.sub(r"<(\w+)>", "x", route)  # no converter: str
                yield "/" + re.sub(r"<(\w+):\w+>", lambda m: samples[m[1]], route)

    return list(walk(get_resolver().url_patterns, ""))


def test_every_route_answers_every_method_without_a_5xx_and_each_405_says_allow(api):
    """Walks the URL configuration: HEAD answers as GET wherever GET is allowed, a 405
    carries Allow (and problem+json), and no method on any route is a server error."""
    wrong = []
    for path in _routes():
        answers = {method: api.generic(method, path) for method in METHODS}
        for method, response in answers.items():
            if response.status_code >= 500:
                wrong.append(f"{method} {path}: {response.status_code}")
            if response.status_code == 405 and not (
                response.get("Allow") and response["Content-Type"] == PROBLEM
            ):
                wrong.append(f"{method} {path}: a 405 without Allow or not problem+json")
        if answers["GET"].status_code != 405 and (
            answers["HEAD"].status_code != answers["GET"].status_code
        ):
            wrong.append(f"HEAD {path}: {answers['HEAD'].status_code}, GET {answers['GET']}")
    assert wrong == []


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.mark.parametrize("session_key", ["abcdefgh\x00ij", "ABCDEFGHIJ", "abcdefgh-ij"])
def test_a_session_cookie_django_never_made_is_no_session(db, client, session_key):
    """A NUL byte in the dashboard's session cookie reaches no query (gunicorn refuses it
    in a header; another server might not): the visitor is just not signed in."""
    response = client.get("/dashboard/", HTTP_COOKIE=f"sessionid={session_key}")
    assert response.status_code == 302
    assert response["Location"].startswith("/dashboard/login/")
