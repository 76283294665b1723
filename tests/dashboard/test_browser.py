"""The dashboard in a real browser: headless Chromium (Debian's `chromium` package, never a
browser download) driven by Playwright, against gunicorn and a Celery worker started as
processes. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import expect, sync_playwright

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.tenants.services import tenant_create
from scripts.stack import ROOT, running_stack
from tests.conftest import CHROMIUM, needs_chromium
from tests.factories import database_url_of_tests

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
ROWS = 30_000
BAD_LINES = {2: "email", 29_000: "name"}  # line -> the field it breaks

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    needs_chromium,
]

# The per-tenant merge lock every load takes first (apps/ingestions/engine/merge.py).
_MERGE_LOCK = "SELECT pg_advisory_{}(hashtextextended('ingest:' || %s::text, 0))"

# Records every (state, rows done) the upload's row shows, to prove the page changed by
# itself, in one document, without a reload.
_WATCH_ROW = """(uploadId) => {
  window.__sameDocument = true;
  window.__seen = [];
  const record = () => {
    const row = document.querySelector(`#uploads tr[data-upload-id="${uploadId}"]`);
    if (!row) return;
    const seen = row.querySelector("[data-cell=state]").textContent + " "
      + row.querySelector("[data-cell=rows_done]").textContent;
    if (window.__seen[window.__seen.length - 1] !== seen) window.__seen.push(seen);
  };
  new MutationObserver(record).observe(document.getElementById("uploads"),
    { subtree: true, childList: true, characterData: true });
  record();
}"""


def _file() -> bytes:
    rows = []
    for line in range(1, ROWS + 1):
        row = customer_row(customer_id=uid(f"browser-{line}"), email=f"c{line}@example.com")
        if BAD_LINES.get(line) == "email":
            row["email"] = "not-an-email"
        elif BAD_LINES.get(line) == "name":
            del row["name"]
        rows.append(row)
    return ndjson_bytes(rows)


def _table(rows) -> list[list[str]]:
    return [[cell.strip() for cell in row.locator("td").all_text_contents()] for row in rows.all()]


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_a_tenant_signs_in_and_watches_an_upload_complete_then_reads_its_errors(
    tmp_path: Path,
):
    """Sign in with the API key; an upload sent through the API appears on the page, moves
    on to its final state with exact counts without a reload, and its errors page lists the
    two bad rows exactly."""
    tenant, issued = tenant_create(name="Browser Shop")
    # as deployed: DEBUG off, so WhiteNoise serves the static files from its startup index
    production_like = {
        "DATABASE_URL": database_url_of_tests(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "browser-test-secret",
    }
    data = _file()
    lines = data.decode().splitlines()

    with (
        running_stack(env=production_like, workers=1, log_dir=tmp_path) as base,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(f"{base}/dashboard/")
            expect(page).to_have_url(re.compile(r"/dashboard/login/\?next=%2Fdashboard%2F$"))
            page.get_by_label("API key").fill(issued.raw)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(f"{base}/dashboard/")
            expect(page.locator("header .who")).to_have_text("Tenant: Browser Shop")
            expect(page.locator("#no-uploads")).to_be_visible()
            header = "getComputedStyle(document.querySelector('header.top')).backgroundColor"
            assert page.evaluate(header) == "rgb(29, 35, 48)"  # the stylesheet was served
            _shot(page, "1-signed-in.png")

            # The test holds the tenant's merge lock, so the worker's load waits in
            # `processing` (however fast it would be) until the page has shown that state.
            with psycopg.connect(database_url_of_tests(), autocommit=True) as gate:
                gate.execute(_MERGE_LOCK.format("lock"), (str(tenant.id),))
                response = httpx.post(
                    f"{base}/api/v1/ingest/comprehensive/?filename=customers_browser.ndjson",
                    content=data,
                    headers={"X-API-Key": issued.raw, "Content-Type": "application/x-ndjson"},
                    timeout=60,
                )
                assert response.status_code == 202, response.text
                upload_id = response.json()["id"]
                page.evaluate(_WATCH_ROW, upload_id)

                row = page.locator(f'#uploads tr[data-upload-id="{upload_id}"]')
                expect(row).to_be_visible(timeout=10_000)
                state = row.locator("[data-cell=state]")
                expect(state).to_have_text("processing", timeout=60_000)
                _shot(page, "2-processing.png")
                gate.execute(_MERGE_LOCK.format("unlock"), (str(tenant.id),))
            expect(state).to_have_text("completed_with_errors", timeout=120_000)

            # the same document all along: no reload, and it saw the upload before the end
            assert page.evaluate("window.__sameDocument") is True
            seen = page.evaluate("window.__seen")
            assert seen[-1] == f"completed_with_errors {ROWS:,} rows", seen
            assert seen[0].split()[0] in {"received", "queued", "processing"}, seen
            cells = {
                name: row.locator(f"[data-cell={name}]").text_content()
                for name in ("progress", "rows_done", "inserted", "updated", "rejected", "pending")
            }
            assert cells == {
                "progress": "100%",
                "rows_done": f"{ROWS:,} rows",
                "inserted": f"{ROWS - 2:,}",
                "updated": "0",
                "rejected": "2",
                "pending": "0",
            }
            assert _table(page.locator("#reject-codes tr")) == [
                ["invalid_email", "1"],
                ["missing_field", "1"],
            ]
            expect(page.locator("#throughput-chart rect.bar").first).to_be_attached()
            _shot(page, "3-completed.png")

            row.get_by_role("link", name="errors").click()
            expect(page).to_have_url(f"{base}/dashboard/uploads/{upload_id}/errors/")
            expect(page.locator("h2")).to_have_text("2 rejected rows")
            rejects = page.locator("table.rejects tbody tr")
            expected = [
                [
                    "2",
                    "email",
                    "invalid_email",
                    "email is not a valid email address: 'not-an-email'",
                    lines[1],
                ],
                ["29000", "name", "missing_field", "name is required", lines[28_999]],
            ]
            assert _table(rejects) == expected
            _shot(page, "4-errors.png")

            page.get_by_role("button", name="Sign out").click()
            expect(page).to_have_url(f"{base}/dashboard/login/")
            page.goto(f"{base}/dashboard/uploads/{upload_id}/errors/")
            expect(page).to_have_url(re.compile(r"/dashboard/login/\?next="))
        finally:
            browser.close()
