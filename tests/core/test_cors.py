"""CORS (SPEC 13) through Django's test client: the origins of CORS_ALLOWED_ORIGINS (none by
default) may call /api/ from a browser, with the API key and tus request headers allowed and
the tus and rate-limit answer headers exposed, on error answers too; the tus protocol's own
OPTIONS still reaches the tus view. The browser itself: tests/browser/test_tus_cors.py."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys

import pytest
from django.test import Client

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload
from apps.tenants.services import tenant_create
from main.env import env_list
from scripts.stack import ROOT

pytestmark = pytest.mark.django_db

ORIGIN = "http://127.0.0.1:3000"
OTHER = "http://127.0.0.1:3001"
TUS = "/api/v1/ingest/tus/"
UPLOADS = "/api/v1/ingest/uploads/"
CHUNK = "application/offset+octet-stream"
V = {"Tus-Resumable": "1.0.0"}
DATA = ndjson_bytes([customer_row(customer_id=uid(f"cors-{n}")) for n in range(20)])
EXPOSED = {
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Upload-Result",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Retry-After",
    "X-Request-Id",
    "Link",
    "ETag",
}
TUS_REQUEST_HEADERS = (
    "tus-resumable,upload-length,upload-offset,upload-metadata,upload-defer-length,"
    "upload-checksum,upload-concat"
)


@pytest.fixture
def allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]


@pytest.fixture
def key(db) -> str:
    return tenant_create(name="Cors Shop")[1].raw


def cors_headers(response) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def exposed(response) -> set[str]:
    return {name.strip() for name in response["Access-Control-Expose-Headers"].split(",")}


def preflight(path: str, *, origin: str, method: str, headers: str):
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        (TUS, "POST", f"x-api-key,content-type,{TUS_REQUEST_HEADERS}"),
        (f"{TUS}0123456789abcdef0123456789abcdef", "PATCH", "x-api-key,content-type,upload-offset"),
        (f"{TUS}0123456789abcdef0123456789abcdef", "HEAD", "x-api-key,tus-resumable"),
        (UPLOADS, "GET", "x-api-key,x-request-id"),
        ("/api/v1/ingest/comprehensive/", "POST", "x-api-key,idempotency-key,content-type"),
        ("/api/v1/contract/customers/", "GET", "if-none-match"),
    ],
)
def test_a_preflight_from_an_allowed_origin_allows_the_key_and_tus_headers(
    allowed, path, method, headers, caplog
):
    """Answered by the middleware (200, no body, no view): the origin, every header and
    method the API takes, a day's max-age, no credentials; and logged like any request."""
    with caplog.at_level(logging.INFO, logger="apps.access"):
        response = preflight(path, origin=ORIGIN, method=method, headers=headers)
    assert (response.status_code, response.content) == (200, b"")
    allowed_headers = set(response["Access-Control-Allow-Headers"].split(", "))
    assert set(headers.split(",")) <= allowed_headers
    assert cors_headers(response) == {
        "access-control-allow-origin": ORIGIN,
        "access-control-allow-headers": response["Access-Control-Allow-Headers"],
        "access-control-allow-methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
        "access-control-max-age": "86400",
        "access-control-expose-headers": response["Access-Control-Expose-Headers"],
    }
    assert "Tus-Version" not in response  # the tus view did not answer it
    assert response["Vary"] == "origin"
    assert response["X-Request-Id"]
    assert [r.getMessage() for r in caplog.records if r.name == "apps.access"] == [
        f"OPTIONS {path} 200"
    ]


def test_every_header_a_request_to_the_api_may_send_is_allowed(allowed):
    """The whole list: the key, idempotency and request ids, and tus 1.0's request headers."""
    response = preflight(TUS, origin=ORIGIN, method="POST", headers="x-api-key")
    assert set(response["Access-Control-Allow-Headers"].split(", ")) == {
        "accept",
        "content-type",
        "x-api-key",
        "idempotency-key",
        "x-request-id",
        *TUS_REQUEST_HEADERS.split(","),
        "if-none-match",
    }


@pytest.mark.parametrize("origin", [OTHER, "http://localhost:3000", "https://127.0.0.1:3000"])
def test_another_origin_gets_no_cors_headers(allowed, key, origin):
    """An origin not listed exactly (another port, host name or scheme) gets no
    Access-Control-* header on a preflight or an answer, so the browser refuses."""
    answers = [
        preflight(TUS, origin=origin, method="POST", headers="x-api-key,tus-resumable"),
        Client().get(UPLOADS, headers={"Origin": origin, "X-API-Key": key}),
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert [cors_headers(a) for a in answers] == [{}, {}]


def test_no_origin_is_allowed_by_default(key):
    """CORS_ALLOWED_ORIGINS unset: no cross-origin access at all."""
    answers = [
        preflight(TUS, origin=ORIGIN, method="POST", headers="x-api-key,tus-resumable"),
        Client().get(UPLOADS, headers={"Origin": ORIGIN, "X-API-Key": key}),
    ]
    assert [cors_headers(a) for a in answers] == [{}, {}]


def test_the_dashboard_is_never_open_to_other_origins(allowed):
    """Only /api/ is: an allowed origin gets no CORS headers from the dashboard."""
    answers = [
        preflight("/dashboard/login/", origin=ORIGIN, method="POST", headers="content-type"),
        Client().get("/dashboard/login/", headers={"Origin": ORIGIN}),
    ]
    assert [a.status_code for a in answers] == [405, 200]
    assert [cors_headers(a) for a in answers] == [{}, {}]


def test_the_tus_discovery_options_still_reaches_the_tus_view(allowed):
    """An OPTIONS without Access-Control-Request-Method is tus discovery, not a preflight:
    the view answers its 204 and Tus-* headers, which the page may read."""
    response = Client().options(TUS, headers={"Origin": ORIGIN})
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert response["Tus-Extension"] == (
        "creation,creation-with-upload,checksum,termination,expiration"
    )
    assert response["Tus-Checksum-Algorithm"] == "md5,sha1,sha256,sha512"
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert exposed(response) == EXPOSED


def test_a_tus_upload_from_an_allowed_origin_exposes_its_headers(allowed, key):
    """POST, PATCH and HEAD answers carry the origin and expose the headers a tus client
    reads (Location, Upload-Offset, Upload-Length, ...), beside the rate-limit ones."""
    client = Client(headers={"Origin": ORIGIN, "X-API-Key": key, **V})
    name = base64.b64encode(b"customers_cors.ndjson").decode()
    created = client.generic(
        "POST",
        TUS,
        headers={"Upload-Length": str(len(DATA)), "Upload-Metadata": f"filename {name}"},
    )
    assert created.status_code == 201, created.content
    url = created["Location"]
    first = client.generic("PATCH", url, DATA[:100], CHUNK, headers={"Upload-Offset": "0"})
    head = client.head(url)
    last = client.generic("PATCH", url, DATA[100:], CHUNK, headers={"Upload-Offset": "100"})
    answers = [created, first, head, last]
    assert [a.status_code for a in answers] == [201, 204, 200, 204]
    assert [a["Upload-Offset"] for a in answers[1:]] == ["100", "100", str(len(DATA))]
    upload = Upload.objects.get()
    assert last["Upload-Result"].endswith(f"{UPLOADS}{upload.id}/")
    for answer in answers:
        assert answer["Access-Control-Allow-Origin"] == ORIGIN
        assert exposed(answer) == EXPOSED
        assert "Access-Control-Allow-Credentials" not in answer
        assert answer["RateLimit-Remaining"]


def test_error_answers_carry_the_cors_headers_too(allowed, key, settings):
    """A page can read why it was refused: a 401 (no key), a 404 (no route), a 429 (past the
    rate limit, with Retry-After) and a 503 (too many streaming bodies) all carry them."""
    settings.API_RATE_LIMIT = "1/min"
    settings.WEB_MAX_STREAMING_BODIES = 0  # read when a client's middleware is built
    browser = Client(headers={"Origin": ORIGIN})
    keyed = Client(headers={"Origin": ORIGIN, "X-API-Key": key})
    unauthorized = browser.get(UPLOADS)
    no_route = browser.get("/api/v1/nowhere/")
    keyed.get(UPLOADS)
    throttled = keyed.get(UPLOADS)
    streaming = browser.generic(
        "PATCH",
        f"{TUS}0123456789abcdef0123456789abcdef",
        b"x",
        CHUNK,
        headers={**V, "Upload-Offset": "0"},
    )
    answers = [unauthorized, no_route, throttled, streaming]
    assert [a.status_code for a in answers] == [401, 404, 429, 503]
    for answer in answers:
        assert answer["Content-Type"] == "application/problem+json"
        assert answer["Access-Control-Allow-Origin"] == ORIGIN
        assert exposed(answer) == EXPOSED
    assert throttled["Retry-After"] == throttled["RateLimit-Reset"]
    assert streaming["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        ("https://shop.example", ["https://shop.example"]),
        (" https://shop.example , http://127.0.0.1:3000,,", ["https://shop.example", ORIGIN]),
    ],
)
def test_cors_allowed_origins_is_a_comma_separated_list(monkeypatch, value, origins):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", value)
    assert env_list("CORS_ALLOWED_ORIGINS") == origins


def test_manage_py_check_refuses_an_origin_that_is_not_scheme_and_host():
    """An origin with no scheme or with a path never matches a browser's Origin: `check`
    (and so `migrate`) says so instead of CORS silently staying shut."""
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "CORS_ALLOWED_ORIGINS": "shop.example,https://a.example/"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "corsheaders.E013" in done.stderr
    assert "corsheaders.E014" in done.stderr
