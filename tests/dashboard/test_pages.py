"""The dashboard for an operator (SPEC 13): an upload's own page, reject codes that lead to
their rows, the uploads list's filters, files still being received, the staff's summary of
every tenant, and a throughput chart at a resolution that shows real rates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.dashboard.formats import throughput_json
from apps.dashboard.selectors import Throughput, throughput_series
from apps.ingestions.engine.testing import customer_row, uid
from apps.ingestions.models import RecordBatch, Upload, UploadState
from apps.ingestions.services import session_append, session_create
from tests.dashboard.conftest import PASSWORD, _customers, _Page, _sign_in, _staff_sign_in


def _bad_emails(ndjson, name: str, count: int):
    bad = [customer_row(customer_id=uid(f"{name}-{n}"), email=f"broken-{n}") for n in range(count)]
    return _customers(ndjson, name, 1, bad)


def test_an_uploads_page_shows_its_counts_timings_rejects_and_warnings(acme_upload, acme, browser):
    """Counts, when it started and finished and how long it waited and ran, its codes
    linking to their rows, and its first rejected rows with every problem."""
    _sign_in(browser, acme[1])
    response = browser.get(f"/dashboard/uploads/{acme_upload.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "5 total: 3 inserted, 0 updated, 0 unchanged, 2 rejected, 0 pending" in html
    started = acme_upload.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    finished = acme_upload.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f'<dd id="finished">{finished} UTC, after running 2.000 s</dd>' in html
    assert f'<dd id="started">{started} UTC, after waiting ' in html
    assert f"sha256 <code>{acme_upload.sha256}</code>" in html
    errors = f"/dashboard/uploads/{acme_upload.id}/errors/"
    assert (
        f'<dd id="codes"><a href="{errors}?code=invalid_email"><code>invalid_email</code></a> 1, '
        f'<a href="{errors}?code=missing_field"><code>missing_field</code></a> 1</dd>'
    ) in html
    assert [row[:3] for row in _Page(html).tables["rejects"]] == [
        ["4", "email", "invalid_email"],
        ["5", "name", "missing_field"],
    ]
    assert "No rows with warnings." in html
    # the file's name in the uploads list leads here
    index = browser.get("/dashboard/").content.decode()
    assert (
        f'<a data-link="detail" data-cell="filename" href="/dashboard/uploads/{acme_upload.id}/">'
        in index
    )


def test_an_uploads_page_shows_its_first_rows_and_links_to_the_rest(acme, ndjson, load, browser):
    """Ten rejected rows on the upload's page, then a link to all of them."""
    upload = load(acme[0], _bad_emails(ndjson, "many", 25))
    _sign_in(browser, acme[1])
    html = browser.get(f"/dashboard/uploads/{upload.id}/").content.decode()
    assert [int(r[0]) for r in _Page(html).tables["rejects"]] == list(range(2, 12))
    assert f'<a href="/dashboard/uploads/{upload.id}/errors/">all 25</a>' in html
    assert "page 1 of" not in html


def test_a_code_on_the_errors_page_shows_only_its_rows_page_by_page(acme, ndjson, load, browser):
    """`?code=` narrows the rejected rows to one code, and the pager keeps it."""
    bad = [customer_row(customer_id=uid(f"e-{n}"), email=f"broken-{n}") for n in range(120)]
    no_name = customer_row(customer_id=uid("no-name"))
    del no_name["name"]
    upload = load(acme[0], _customers(ndjson, "mixed", 0, [no_name, *bad]))
    _sign_in(browser, acme[1])
    errors = f"/dashboard/uploads/{upload.id}/errors/"
    page = browser.get(f"{errors}?code=missing_field").content.decode()
    assert [r[:3] for r in _Page(page).tables["rejects"]] == [["1", "name", "missing_field"]]
    assert "1 rejected missing_field row" in page
    first = browser.get(f"{errors}?code=invalid_email").content.decode()
    assert {r[2] for r in _Page(first).tables["rejects"]} == {"invalid_email"}
    assert '<a href="?code=invalid_email&amp;page=2" rel="next">' in first
    second = browser.get(f"{errors}?code=invalid_email&page=2").content.decode()
    assert [int(r[0]) for r in _Page(second).tables["rejects"]] == list(range(102, 122))
    bad_code = browser.get(f"{errors}?code=nope")
    assert bad_code.status_code == 400
    assert bad_code.json()["errors"] == {"code": [bad_code.json()["errors"]["code"][0]]}
    assert "'nope' is not one of: invalid_json" in bad_code.json()["detail"]


def test_a_code_in_the_codes_card_leads_to_its_rows_in_every_listed_upload(
    acme, globex, ndjson, load, browser
):
    """The codes card's link lists the rows of that code, each with its file; another
    tenant's rows never appear."""
    first = load(acme[0], _bad_emails(ndjson, "first", 2))
    second = load(acme[0], _bad_emails(ndjson, "second", 1))
    load(globex[0], _bad_emails(ndjson, "globex", 3))
    _sign_in(browser, acme[1])
    data = browser.get("/dashboard/data/").json()
    assert data["reject_codes"][0]["url"] == "/dashboard/rejects/?code=invalid_email"
    html = browser.get("/dashboard/rejects/?code=invalid_email").content.decode()
    assert "3 rows rejected as <code>invalid_email</code>" in html
    rows = _Page(html).tables["rejects"]
    assert [r[:3] for r in rows] == [
        ["customers_second.ndjson", "2", "email"],
        ["customers_first.ndjson", "2", "email"],
        ["customers_first.ndjson", "3", "email"],
    ]
    assert f'href="/dashboard/uploads/{first.id}/"' in html
    assert f'href="/dashboard/uploads/{second.id}/"' in html
    assert "globex" not in html
    no_code = browser.get("/dashboard/rejects/")  # a 400 that says what it takes
    assert no_code.status_code == 400
    assert "invalid_email, invalid_currency" in no_code.content.decode()
    assert browser.get("/dashboard/rejects/?code=orphan").status_code == 200


def test_the_uploads_list_filters_by_state_type_and_file_name(acme, ndjson, load, browser):
    """Each filter narrows the list and the polled document alike; a value a filter does
    not take is a 400 naming it."""
    clean = load(acme[0], _customers(ndjson, "spring", 2, []))
    broken = load(acme[0], _bad_emails(ndjson, "autumn", 1))
    _sign_in(browser, acme[1])

    def listed(query: str) -> list[str]:
        page = list(_Page(browser.get(f"/dashboard/?{query}").content.decode()).uploads)
        data = [u["id"] for u in browser.get(f"/dashboard/data/?{query}").json()["uploads"]]
        assert page == data
        return page

    assert listed("") == [str(broken.id), str(clean.id)]
    assert listed("state=completed") == [str(clean.id)]
    assert listed("state=completed_with_errors") == [str(broken.id)]
    assert listed("type=orders") == []
    assert listed("type=customers&file=SPR") == [str(clean.id)]
    assert listed("file=nothing-like-it") == []
    html = browser.get("/dashboard/?state=completed&file=spr").content.decode()
    assert '<option value="completed" selected>' in html
    assert 'value="spr"' in html
    assert 'data-source="/dashboard/data/?window=1h&amp;state=completed&amp;file=spr"' in html
    for query, name in (("state=done", "state"), ("type=people", "type"), ("file=a%00b", "file")):
        response = browser.get(f"/dashboard/?{query}")
        assert response.status_code == 400, query
        assert list(response.json()["errors"]) == [name]


def test_files_still_being_received_are_listed_with_how_far_they_are(acme, globex, browser):
    """An open session shows its file, type and bytes received; complete or another
    tenant's sessions do not."""
    open_session = session_create(tenant=acme[0], filename="orders_big.ndjson", size=4096)
    session_append(
        tenant=acme[0],
        token=open_session.token,
        offset=0,
        stream=_Stream(b"x" * 1024),
        content_length=1024,
    )
    session_create(tenant=globex[0], filename="globex_secret.ndjson", size=10)
    _sign_in(browser, acme[1])
    data = browser.get("/dashboard/data/").json()
    assert [s["cells"]["filename"] for s in data["receiving"]] == ["orders_big.ndjson"]
    assert data["receiving"][0]["percent"] == 25
    assert data["receiving"][0]["cells"]["bytes"] == "1.0 KiB of 4.0 KiB"
    assert data["receiving"][0]["cells"]["type"] == "decided at the end"
    html = browser.get("/dashboard/").content.decode()
    assert "orders_big.ndjson" in html
    assert "globex_secret" not in html
    assert '<section class="card" id="receiving-card">' in html


class _Stream:
    """A chunk's body as the web server gives it: read in parts."""

    def __init__(self, data: bytes):
        self._data = data

    def read(self, n: int = -1) -> bytes:
        part, self._data = (self._data, b"") if n < 0 else (self._data[:n], self._data[n:])
        return part


def test_staff_see_a_summary_of_every_tenant(acme_upload, globex_upload, acme, globex, browser):
    """One row a tenant: its uploads, rows loaded, rejected and pending, its live backlog;
    each name leads to that tenant's own view, which has no summary."""
    RecordBatch.objects.create(
        tenant=globex[0], record_type="customers", records=7, accepted=7, rejected=0
    )
    Upload.objects.create(
        tenant=acme[0],
        record_type="orders",
        filename="q.ndjson",
        sha256=uid("q"),
        state=UploadState.QUEUED,
    )
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    _staff_sign_in(browser, "ops")
    data = browser.get("/dashboard/data/").json()
    rows = {t["cells"]["tenant"]: t["cells"] for t in data["tenants"]}
    assert rows["Acme"] | {"last_upload": ""} == {
        "tenant": "Acme",
        "uploads": "2",
        "active": "1",
        "failed": "0",
        "last_upload": "",
        "loaded": "3",
        "rejected": "2",
        "pending": "0",
        "backlog": "0",
    }
    assert rows["Globex"]["loaded"] == "2"
    assert rows["Globex"]["backlog"] == "7"
    html = browser.get("/dashboard/").content.decode()
    table = _Page(html).tables["tenants"]
    assert [r[0] for r in table] == ["Acme", "Globex"]
    assert f'href="/dashboard/?tenant={acme[0].id}"' in html
    one = browser.get(f"/dashboard/data/?tenant={acme[0].id}").json()
    assert one["tenants"] is None
    # a tenant never gets the summary
    tenant_browser = Client(enforce_csrf_checks=True)
    _sign_in(tenant_browser, acme[1])
    assert tenant_browser.get("/dashboard/data/").json()["tenants"] is None


def test_the_throughput_chart_shows_real_rates_with_round_time_ticks(db):
    """A 1-million-row upload that ran 17 s shows as the rate it ran at, not averaged over
    minutes; ticks fall on round times and the ends carry their dates."""
    start = datetime(2026, 12, 4, 19, 30, tzinfo=UTC)
    rates = [0.0] * 360
    rates[100:102] = [58_823.5, 41_176.5]
    series = Throughput(
        start=start,
        end=start + timedelta(hours=1),
        bucket_seconds=10,
        rows_per_second=rates,
        fastest=58_823.5,
    )
    shown = throughput_json(series)
    assert shown["caption"] == (
        "1,000,000 rows; peak 58,824 rows/s (each bar: 10 s); fastest upload 58,824 rows/s"
    )
    assert [t["label"] for t in shown["ticks"]] == ["19:40", "19:50", "20:00", "20:10", "20:20"]
    assert shown["ticks"][0]["at"] == pytest.approx(1 / 6, abs=1e-4)
    assert (shown["start_label"], shown["end_label"]) == (
        "2026-12-04 19:30",
        "2026-12-04 20:30 UTC",
    )
    day = Throughput(
        start=start,
        end=start + timedelta(days=1),
        bucket_seconds=300,
        rows_per_second=[0.0] * 288,
    )
    labels = [t["label"] for t in throughput_json(day)["ticks"]]
    assert labels == ["21:00", "00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00"]
    assert throughput_json(day)["end_label"] == "2026-12-05 19:30 UTC"
    json.dumps(shown)  # the document polls it as JSON


def test_the_throughput_chart_counts_live_records_in_the_bucket_they_were_merged_in(acme, globex):
    """Live batches merged in the window count their accepted records in the bucket of
    their merge, beside an upload's rows spread over its run; another tenant's and those
    merged before the window do not. Live records were missing from the chart (their
    parts never start as an upload does)."""
    now = datetime(2026, 12, 4, 20, 29, 55, tzinfo=UTC)
    start = datetime(2026, 12, 4, 19, 30, tzinfo=UTC)  # the window's first bucket

    def batch(tenant, seconds: float, accepted: int) -> None:
        merged = start + timedelta(seconds=seconds)
        RecordBatch.objects.create(
            tenant=tenant, record_type="customers", state="merged", records=accepted + 1,
            rejected=1, accepted=accepted, merged_at=merged,
        )  # fmt: skip

    batch(acme[0], 12.5, 300)
    batch(acme[0], 19.9, 200)  # the same 10 s bucket: 500 records
    batch(acme[0], 3599.0, 70)  # the last bucket
    batch(acme[0], -0.5, 9_000)  # before the window
    batch(globex[0], 12.5, 4_000)  # another tenant's
    Upload.objects.create(
        tenant=acme[0], record_type="customers", filename="c.ndjson", sha256="0" * 64,
        size_bytes=1, state=UploadState.COMPLETED, rows_done=1_000,
        started_at=start + timedelta(seconds=20), finished_at=start + timedelta(seconds=30),
    )  # fmt: skip
    series = throughput_series(tenant=acme[0], window=timedelta(hours=1), buckets=360, now=now)
    assert series.start == start
    assert [r * 10 for r in series.rows_per_second[:4]] == [0, 500, 1_000, 0]
    assert series.rows_per_second[-1] * 10 == 70
    assert sum(series.rows_per_second) * 10 == 1_570


def test_a_rejected_lines_hidden_characters_are_shown_as_escapes(acme, browser, ndjson, load):
    """A raw line with a right-to-left override and control characters: each shown as its
    escape on the errors page and the code's page (as sent, the override turned the text
    after it around, "gnp.exe" for "exe.png", and the controls are not valid HTML)."""
    line = "not json \u202egnp.exe\x01\x7f <b>&"
    upload = load(acme[0], ndjson("customers_odd.ndjson", [line]))
    _sign_in(browser, acme[1])
    shown = "not json \\u202egnp.exe\\x01\\x7f &lt;b&gt;&amp;"
    for url in (f"/dashboard/uploads/{upload.id}/errors/", "/dashboard/rejects/?code=invalid_json"):
        page = browser.get(url).content.decode()
        assert shown in page, url
        assert not {"\u202e", "\x01", "\x7f"} & set(page)


def test_a_file_name_stored_with_a_right_to_left_override_is_shown_as_its_escape(
    acme_upload, acme, browser
):
    """A name stored before names were cleaned of such characters: "customers_\\u202egpj"
    would read "customers_jpg" on screen; the list, the page and its title write the
    escape."""
    Upload.objects.filter(id=acme_upload.id).update(filename="customers_\u202egpj.ndjson")
    _sign_in(browser, acme[1])
    for path in ("/dashboard/", f"/dashboard/uploads/{acme_upload.id}/"):
        html = browser.get(path).content.decode()
        assert "\u202e" not in html
        assert "customers_\\u202egpj.ndjson" in html
