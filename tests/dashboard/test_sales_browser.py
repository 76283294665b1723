"""The sales card in a real browser (headless Chromium, as tests/dashboard/test_browser.py):
the charts are drawn by the page's own script, one currency at a time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from apps.tenants.services import tenant_create
from scripts.stack import ROOT, running_stack
from tests.conftest import CHROMIUM, needs_chromium
from tests.factories import database_url_of_tests, shop_load

SCREENSHOTS = ROOT / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    needs_chromium,
]


def test_a_tenant_sees_revenue_per_day_and_top_products_and_switches_currency(tmp_path: Path):
    """EUR first: one bar (2024-03-01, 35.01 EUR) and two products; USD: one bar and Pen."""
    tenant, issued = tenant_create(name="Sales Shop")
    shop_load(tenant, tmp_path)
    env = {"DATABASE_URL": database_url_of_tests(), "DJANGO_DEBUG": "false"}
    env["DJANGO_SECRET_KEY"] = "sales-browser-test-secret"
    with (
        running_stack(env=env, workers=1, log_dir=tmp_path) as base,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/dashboard/login/")
            page.get_by_label("API key").fill(issued.raw)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(f"{base}/dashboard/")

            currency = page.get_by_label("Currency")
            expect(currency).to_have_value("EUR")
            bars = page.locator("#revenue-chart rect.bar")
            expect(bars).to_have_count(1)
            assert bars.locator("title").text_content() == "2024-03-01: 35.01 EUR"
            ranking = page.locator("#products-chart text.axis")
            expect(ranking).to_have_text(
                ["Ink (INK)", "30.01 EUR · 3 units", "Pen (PEN)", "5.00 EUR · 2 units"]
            )
            expect(page.locator("#sales-caption")).to_have_text(
                "30 days to 2024-03-05 (UTC, by order date)"
            )
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.locator("#sales").screenshot(path=str(SCREENSHOTS / "sales-eur.png"))

            currency.select_option("USD")
            expect(bars).to_have_count(1)
            expect(bars.locator("title")).to_have_text("2024-03-05: 5.00 USD")
            expect(ranking).to_have_text(["Pen (PEN)", "5.00 USD · 2 units"])
            expect(page.locator("[data-sales=currency]")).to_have_text("USD")
            page.locator("#sales").screenshot(path=str(SCREENSHOTS / "sales-usd.png"))
            assert re.fullmatch(r"Updated .* UTC", page.locator("#live").text_content())
        finally:
            browser.close()
