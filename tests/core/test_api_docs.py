"""The API's documentation pages (SPEC 13): Swagger UI at /api/v1/docs/ and Redoc at
/api/v1/redoc/, without a key, every file they load served by the service itself (no CDN);
the API key declared once, as a security scheme; and Swagger UI rendering the operations in
Chromium with no request leaving the server."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from tests.conftest import CHROMIUM, needs_chromium

_ASSET = re.compile(rb'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_docs_pages_load_only_the_services_own_files(db, path):
    client = Client()
    page = client.get(path)
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assets = [a.decode() for a in _ASSET.findall(page.content)]
    assert assets, page.content
    assert b"http://" not in page.content
    assert b"https://" not in page.content
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert b"".join(served.streaming_content)
        served.close()
    assert "default-src 'self'" in page["Content-Security-Policy"]
    assert b"/api/v1/schema/" in page.content


@pytest.mark.parametrize("version", ["zz\r\nX: 1", "\x00", "1", ""])
def test_a_schema_version_is_refused_never_written_into_a_header(db, version):
    """The API has one schema: `?version=` (which drf-spectacular writes into the answer's
    Content-Disposition, where CR/LF was a 500) is a 400 problem."""
    answer = Client().get("/api/v1/schema/", {"version": version})
    assert (answer.status_code, answer["Content-Type"]) == (400, "application/problem+json")
    refused = (
        "holds a NUL byte (%00)."
        if "\x00" in version
        else "This API has one version: leave it out."
    )
    assert answer.json()["errors"] == {"version": [refused]}


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
@pytest.mark.parametrize(
    ("method", "query", "headers", "status"),
    [
        ("post", "", {}, 405),
        ("options", "", {}, 405),
        ("get", "?format=json", {}, 400),
        ("get", "", {"HTTP_ACCEPT": "application/json"}, 406),
    ],
)
def test_the_docs_pages_errors_are_problem_documents(db, path, method, query, headers, status):
    """A docs page's error is a problem+json document, not its HTML renderer's text."""
    answer = getattr(Client(), method)(path + query, **headers)
    assert (answer.status_code, answer["Content-Type"]) == (status, "application/problem+json")
    assert answer.json()["status"] == status


def test_the_api_key_is_a_security_scheme(db):
    schema = json.loads(Client().get("/api/v1/schema/").content)
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "the tenant's API key (`manage.py create_tenant` or `rotate_api_key` "
        "prints it once)",
    }
    operations = [op for ops in schema["paths"].values() for op in ops.values()]
    keyed = [op for op in operations if op.get("security")]
    assert {op["operationId"] for op in keyed} >= {"uploads_list", "rules_update"}
    assert all(op["security"] == [{"ApiKey": []}] for op in keyed)
    # declared once: no operation repeats it as a header parameter
    assert not [
        op["operationId"]
        for op in operations
        if any(p.get("name") == "X-API-Key" for p in op.get("parameters", []))
    ]
    public = {op["operationId"] for op in operations if not op.get("security")}
    assert {"contract_list", "contract_retrieve"} <= public


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@needs_chromium
def test_swagger_ui_renders_the_operations_with_nothing_from_elsewhere(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.web_server import running_web_server

    env = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "docs-test-secret"}
    with running_web_server(log_dir=tmp_path, env=env) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            # every request for anything but this server's files: the page's policy must
            # have blocked each one before it left (no internet here to tell otherwise)
            elsewhere: dict[str, str | None] = {}

            def sent(request) -> None:
                if not request.url.startswith((base, "data:", "blob:")):
                    elsewhere[request.url] = None

            def failed(request) -> None:
                if request.url in elsewhere:
                    elsewhere[request.url] = request.failure

            page.on("request", sent)
            page.on("requestfailed", failed)
            page.goto(f"{base}/api/v1/docs/")
            expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=15_000)
            paths = page.locator(".opblock-summary-path").all_text_contents()
            assert any("/api/v1/ingest/rules/" in p for p in paths)
            expect(page.locator("button.authorize")).to_be_visible()
            page.goto(f"{base}/api/v1/redoc/")
            expect(page.get_by_text("commerce-ingest API").first).to_be_visible(timeout=15_000)
            page.wait_for_timeout(500)  # a blocked request's failure event may come late
            assert all(f == "csp" for f in elsewhere.values()), elsewhere
        finally:
            browser.close()


def test_the_schema_validates_with_no_warning(tmp_path):
    """`manage.py spectacular --validate --fail-on-warn`: valid OpenAPI 3, and nothing
    drf-spectacular had to guess (an authenticator, an enum's name, an operation id)."""
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert b"ApiKey" in out.read_bytes()
