"""The dashboard as staff see it, in headless Chromium (Debian's `chromium`, driven by
Playwright) against Django's live test server: every table fits a 1,400 px window, the
filters, an upload's page and a code's rows are a click away, and the chart has its axes.
Screenshots go to artifacts/screenshots/, or to DASHBOARD_SCREENSHOTS (docs/img for the
docs)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect, sync_playwright

from apps.ingestions.engine.testing import customer_row, uid
from apps.ingestions.services import session_create
from apps.tenants.services import tenant_create
from scripts.stack import ROOT
from tests.conftest import CHROMIUM, needs_chromium
from tests.dashboard.conftest import PASSWORD, _customers

SHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]

# Any element wider than its box: a table that would need scrolling sideways.
_OVERFLOWING = """() => [...document.querySelectorAll('.scroll, main')]
  .filter((box) => box.scrollWidth > box.clientWidth + 1)
  .map((box) => (box.querySelector('table') || box).className + ' '
    + box.scrollWidth + '>' + box.clientWidth)"""


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


@pytest.fixture
def shops(transactional_db, ndjson, load):
    """Three tenants with long names and uploads with long file names, rejects and a file
    still being received: the widest the staff table gets."""
    uploads = {}
    for name in ("Acme Garden Supplies International", "Globex Corporation", "Initech"):
        tenant, _ = tenant_create(name=name)
        bad = [
            customer_row(customer_id=uid(f"{name}-bad-{n}"), email=f"broken-{n}") for n in range(3)
        ]
        stem = f"{name.split()[0].lower()}_export_2026-12-04T09-30-00_full_customer_snapshot"
        uploads[name] = load(tenant, _customers(ndjson, stem, 40, bad))
        session_create(tenant=tenant, filename=f"orders_{stem}.ndjson.zst", size=3 << 30)
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    return uploads


def test_staff_see_every_table_within_1400_px_and_reach_an_uploads_rows(live_server, shops):
    """At 1,400 px nothing scrolls sideways; a state filter, an upload's page and its
    code's rows each take one click."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/dashboard/staff/login/")
            page.get_by_label("Username").fill("ops")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("header .who")).to_contain_text("Staff: ops")
            expect(page.locator("#uploads tr")).to_have_count(3)
            expect(page.locator("#tenant-rows tr")).to_have_count(3)
            expect(page.locator("#receiving tr")).to_have_count(3)
            # the chart is drawn once its figures are fetched: wait for it, not for luck
            page.wait_for_function(
                "document.querySelectorAll('#throughput-chart line.tick').length >= 5"
            )
            _shot(page, "dashboard-staff.png")
            assert page.evaluate(_OVERFLOWING) == []

            page.select_option("#state-filter", "completed")
            expect(page).to_have_url(re.compile(r"state=completed"))
            expect(page.locator("#no-uploads")).to_be_visible()
            page.select_option("#state-filter", "")
            expect(page.locator("#uploads tr")).to_have_count(3)

            upload = shops["Initech"]
            page.locator(f'#uploads tr[data-upload-id="{upload.id}"] a[data-link=detail]').click()
            expect(page).to_have_url(f"{live_server.url}/dashboard/uploads/{upload.id}/")
            expect(page.locator("table.rejects tbody tr")).to_have_count(3)
            _shot(page, "dashboard-upload.png")
            assert page.evaluate(_OVERFLOWING) == []

            page.locator("#codes a").first.click()
            expect(page).to_have_url(re.compile(r"/errors/\?code=invalid_email$"))
            expect(page.locator("h2")).to_have_text("3 rejected invalid_email rows")
        finally:
            browser.close()
