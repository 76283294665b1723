"""The dashboard's pages and JSON document through Django's test client, on the real
database: sign-in and sign-out, what each viewer sees, and that no tenant ever sees another
tenant's uploads."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from apps.dashboard.selectors import UNSCOPED_ALL_TENANTS, throughput_series
from apps.ingestions.engine.testing import customer_row, uid
from apps.ingestions.models import Upload, UploadState
from apps.ingestions.services import upload_ingest_path
from apps.tenants.services import api_key_revoke
from tests.dashboard.conftest import (
    PASSWORD,
    _customers,
    _Page,
    _sign_in,
    _staff_sign_in,
)


def _expected_cells(upload: Upload, **cells: str) -> dict[str, str]:
    return {
        "created": upload.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "filename": upload.filename,
        "type": "customers",
        "dry_run": "",
        "error": "",
        "progress": "100%",
        "bytes": f"{upload.size_bytes} B of {upload.size_bytes} B",
        "rows_per_second": "2.5",  # 5 rows in 2 s
        "updated": "0",
        "unchanged": "0",
        "pending": "0",
        "warned": "0",
        "rules": "contract only",
        **cells,
    }


def test_a_visitor_who_is_not_signed_in_is_sent_to_the_sign_in_form(db, client):
    """Pages redirect to the sign-in form (and back after it); the JSON document is 401."""
    upload_id = uid("any")
    response = client.get(f"/dashboard/uploads/{upload_id}/errors/?page=2")
    assert response.status_code == 302
    assert (
        response["Location"]
        == f"/dashboard/login/?next=%2Fdashboard%2Fuploads%2F{upload_id}%2Ferrors%2F%3Fpage%3D2"
    )
    response = client.get("/dashboard/data/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Sign in first.",
        "code": "not_signed_in",
        "request_id": response["X-Request-Id"],
    }


def test_signing_in_with_an_api_key_keeps_the_tenant_id_and_never_the_key(acme, browser):
    """The session holds the tenant id and the key's public prefix; the key is nowhere."""
    tenant, key = acme
    response = _sign_in(browser, key)
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    assert dict(browser.session.items()) == {
        "dashboard_tenant_id": str(tenant.id),
        "dashboard_key_prefix": key.split("_")[1],
    }
    stored = Session.objects.get(session_key=browser.session.session_key)
    assert key not in json.dumps(stored.get_decoded())
    assert key.split("_", 2)[2] not in stored.session_data
    page = browser.get("/dashboard/")
    assert page.status_code == 200
    assert "Tenant: Acme" in page.content.decode()
    assert page["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert page["X-Frame-Options"] == "DENY"


def test_signing_in_goes_back_to_the_page_asked_for_but_never_off_site(acme, browser):
    """`next` is followed when it is on this site, and ignored when it is not."""
    _, key = acme
    response = _sign_in(browser, key, next="/dashboard/?window=6h")
    assert response["Location"] == "/dashboard/?window=6h"
    response = _sign_in(Client(enforce_csrf_checks=True), key, next="https://evil.example/")
    assert response["Location"] == "/dashboard/"


@pytest.mark.parametrize("key", ["ck_000000000000_wrong", "not a key at all"])
def test_a_wrong_key_is_refused_on_the_form(acme, browser, key):
    """A wrong key re-shows the form with a message and signs nobody in."""
    response = _sign_in(browser, key)
    assert response.status_code == 200
    assert '<p class="error" role="alert">The API key is unknown or revoked.</p>' in (
        response.content.decode()
    )
    assert "dashboard_tenant_id" not in browser.session
    assert browser.get("/dashboard/").status_code == 302


def test_the_sign_in_form_refuses_a_post_without_its_csrf_token(acme, browser):
    """CSRF protection: a forged form post is refused and signs nobody in."""
    response = browser.post("/dashboard/login/", {"api_key": acme[1]})
    assert response.status_code == 403
    assert "dashboard_tenant_id" not in browser.session
    _sign_in(browser, acme[1])
    assert browser.post("/dashboard/logout/").status_code == 403  # no token: still signed in
    assert browser.get("/dashboard/").status_code == 200


def test_revoking_the_key_ends_its_dashboard_sessions(acme, browser):
    """A session lives only as long as the key it was opened with."""
    tenant, key = acme
    _sign_in(browser, key)
    assert browser.get("/dashboard/").status_code == 200
    api_key_revoke(tenant=tenant)
    assert browser.get("/dashboard/").status_code == 302
    assert browser.get("/dashboard/data/").status_code == 401


def test_signing_out_ends_the_session(acme, browser):
    """Sign out is a CSRF-protected POST (the form on every page) that flushes the session."""
    _sign_in(browser, acme[1])
    assert browser.get("/dashboard/logout/").status_code == 405
    html = browser.get("/dashboard/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)[1]
    response = browser.post("/dashboard/logout/", {"csrfmiddlewaretoken": token})
    assert (response.status_code, response["Location"]) == (302, "/dashboard/login/")
    assert dict(browser.session.items()) == {}
    assert browser.get("/dashboard/").status_code == 302


def test_the_page_lists_the_tenants_uploads_with_their_counts(acme_upload, acme, browser):
    """Each upload's row shows its state, progress and exact counts."""
    _sign_in(browser, acme[1])
    page = _Page(browser.get("/dashboard/").content.decode())
    assert page.uploads == {
        str(acme_upload.id): _expected_cells(
            acme_upload,
            state="completed_with_errors",
            rows_done="5 rows",
            inserted="3",
            rejected="2",
        )
    }
    assert page.tables["codes"] == [["invalid_email", "1"], ["missing_field", "1"]]


def test_the_json_document_carries_what_the_page_shows(acme_upload, acme, browser):
    """The polled document: the uploads with their cells, rejects by code, throughput."""
    _sign_in(browser, acme[1])
    data = browser.get("/dashboard/data/?window=6h").json()
    assert data["uploads"] == [
        {
            "id": str(acme_upload.id),
            "state": "completed_with_errors",
            "percent": 100,
            "url": f"/dashboard/uploads/{acme_upload.id}/",
            "errors_url": f"/dashboard/uploads/{acme_upload.id}/errors/",
            "warnings_url": f"/dashboard/uploads/{acme_upload.id}/warnings/",
            "rules_version": None,
            "rows": {
                "total": 5,
                "inserted": 3,
                "updated": 0,
                "unchanged": 0,
                "rejected": 2,
                "pending": 0,
                "duplicates": 0,
                "warned": 0,
            },
            "progress": {
                "bytes_done": acme_upload.size_bytes,
                "rows_done": 5,
                "rows_per_second": 2.5,
            },
            "cells": _expected_cells(
                acme_upload,
                state="completed_with_errors",
                tenant="Acme",
                total="5",
                rows_done="5 rows",
                inserted="3",
                rejected="2",
            ),
        }
    ]
    assert data["reject_codes"] == [
        {
            "code": "invalid_email",
            "count": 1,
            "label": "1",
            "url": "/dashboard/rejects/?code=invalid_email",
        },
        {
            "code": "missing_field",
            "count": 1,
            "label": "1",
            "url": "/dashboard/rejects/?code=missing_field",
        },
    ]
    throughput = data["throughput"]
    assert (throughput["bucket_seconds"], len(throughput["rows_per_second"])) == (60, 360)
    assert sum(throughput["rows_per_second"]) * 60 == pytest.approx(5, abs=0.5)
    assert data["receiving"] == []
    assert data["tenants"] is None  # a tenant's own page has no tenants' summary


def test_a_tenant_never_sees_another_tenants_uploads(acme_upload, globex_upload, acme, browser):
    """Not in the list, the codes, the chart or the JSON; its errors page is 404."""
    _sign_in(browser, acme[1])
    for path in ("/dashboard/", f"/dashboard/?tenant={globex_upload.tenant_id}"):
        html = browser.get(path).content.decode()
        assert list(_Page(html).uploads) == [str(acme_upload.id)]
        assert str(globex_upload.id) not in html
        assert "customers_globex.ndjson" not in html
        assert "invalid_uuid" not in html
        assert "Globex" not in html
    data = browser.get(f"/dashboard/data/?tenant={globex_upload.tenant_id}").json()
    assert [u["id"] for u in data["uploads"]] == [str(acme_upload.id)]
    assert [c["code"] for c in data["reject_codes"]] == ["invalid_email", "missing_field"]
    assert sum(data["throughput"]["rows_per_second"]) * 10 == pytest.approx(5, abs=0.5)
    response = browser.get(f"/dashboard/uploads/{globex_upload.id}/errors/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert browser.get(f"/dashboard/uploads/{acme_upload.id}/errors/").status_code == 200


def test_staff_see_every_tenant_and_can_filter_by_one(acme_upload, globex_upload, browser):
    """A staff sign-in shows all tenants (with a tenant column) and filters by one."""
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    response = _staff_sign_in(browser, "ops")
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")
    html = browser.get("/dashboard/").content.decode()
    assert "Staff: ops (all tenants)" in html
    uploads = _Page(html).uploads
    assert list(uploads) == [str(globex_upload.id), str(acme_upload.id)]
    assert [row["tenant"] for row in uploads.values()] == ["Globex", "Acme"]
    assert _Page(html).tables["codes"] == [
        ["invalid_email", "1"],
        ["invalid_uuid", "1"],
        ["missing_field", "1"],
    ]
    filtered = _Page(browser.get(f"/dashboard/?tenant={globex_upload.tenant_id}").content.decode())
    assert list(filtered.uploads) == [str(globex_upload.id)]
    assert filtered.tables["codes"] == [["invalid_uuid", "1"]]
    data = browser.get(f"/dashboard/data/?tenant={acme_upload.tenant_id}").json()
    assert [u["id"] for u in data["uploads"]] == [str(acme_upload.id)]
    assert browser.get(f"/dashboard/?tenant={uid('nobody')}").status_code == 404
    errors = browser.get(f"/dashboard/uploads/{globex_upload.id}/errors/")
    assert errors.status_code == 200
    assert _Page(errors.content.decode()).tables["rejects"][0][:3] == [
        "3",
        "customer_id",
        "invalid_uuid",
    ]


def test_a_user_who_is_not_staff_cannot_sign_in_as_staff(db, browser):
    """Only staff accounts get the all-tenants view."""
    get_user_model().objects.create_user("clerk", password=PASSWORD, is_staff=False)
    response = _staff_sign_in(browser, "clerk")
    assert response.status_code == 200
    assert (
        "This account is not a staff account; sign in with an API key instead."
        in response.content.decode()
    )
    assert browser.get("/dashboard/").status_code == 302


def test_the_errors_page_lists_every_reject_page_by_page(acme, ndjson, load, browser):
    """Line, field, code, message and raw of each rejected row, 100 to a page."""
    bad = [customer_row(customer_id=uid(f"bad-{n}"), email=f"broken-{n}") for n in range(1, 131)]
    upload = load(acme[0], _customers(ndjson, "many", 1, bad))
    _sign_in(browser, acme[1])
    first = browser.get(f"/dashboard/uploads/{upload.id}/errors/")
    html = first.content.decode()
    rows = _Page(html).tables["rejects"]
    assert [int(r[0]) for r in rows] == list(range(2, 102))
    assert rows[0] == [
        "2",
        "email",
        "invalid_email",
        "email is not a valid email address: 'broken-1'",
        json.dumps(bad[0]),
    ]
    assert "130 rejected rows" in html
    assert "<span>page 1 of 2</span>" in html
    codes = f'<a href="/dashboard/uploads/{upload.id}/errors/?code=invalid_email">'
    assert f'<dd id="codes">{codes}<code>invalid_email</code></a> 130</dd>' in html
    second = _Page(browser.get(f"/dashboard/uploads/{upload.id}/errors/?page=2").content.decode())
    assert [int(r[0]) for r in second.tables["rejects"]] == list(range(102, 132))
    assert second.tables["rejects"][-1][3] == "email is not a valid email address: 'broken-130'"


def test_the_errors_page_shows_every_problem_of_a_row(acme, ndjson, load, browser):
    """A row with three problems: its line and raw once, each problem on a row of its own
    under the first; a row with one problem is one row."""
    several = customer_row(customer_id="nope", name=5, email="x")
    one = customer_row(customer_id=uid("one"), email="y")
    upload = load(acme[0], _customers(ndjson, "several", 1, [several, one]))
    _sign_in(browser, acme[1])
    html = browser.get(f"/dashboard/uploads/{upload.id}/errors/").content.decode()
    assert _Page(html).tables["rejects"] == [
        [
            "2",
            "customer_id",
            "invalid_uuid",
            "customer_id is not a valid UUID: 'nope'",
            json.dumps(several),
        ],
        ["name", "invalid_type", "name must be a string, got number"],
        ["email", "invalid_email", "email is not a valid email address: 'x'"],
        ["3", "email", "invalid_email", "email is not a valid email address: 'y'", json.dumps(one)],
    ]
    assert '<td class="num" rowspan="3">2</td>' in html
    assert "2 rejected rows" in html


def test_an_upload_without_rejects_says_so(acme, ndjson, load, browser):
    """The errors page of a clean upload shows no table."""
    upload = load(acme[0], _customers(ndjson, "clean", 2, []))
    _sign_in(browser, acme[1])
    html = browser.get(f"/dashboard/uploads/{upload.id}/errors/").content.decode()
    assert "rejects" not in _Page(html).tables
    assert '<p class="muted">No rejected rows.</p>' in html
    assert browser.get("/dashboard/uploads/not-a-uuid/errors/").status_code == 404


def test_a_dry_run_is_marked_on_the_page_and_on_its_errors_page(acme, ndjson, browser):
    """A dry run's row and errors page say that its counts loaded nothing."""
    path = _customers(ndjson, "check", 2, [customer_row(customer_id="bad")])
    upload = upload_ingest_path(tenant=acme[0], path=path, dry_run=True).upload
    _sign_in(browser, acme[1])
    page = _Page(browser.get("/dashboard/").content.decode())
    assert page.uploads[str(upload.id)]["dry_run"] == "dry run: nothing loaded"
    assert page.uploads[str(upload.id)]["inserted"] == "2"
    html = browser.get(f"/dashboard/uploads/{upload.id}/errors/").content.decode()
    assert '<span class="muted">(dry run: nothing loaded)</span>' in html
    assert "rejects" in _Page(html).tables


def _upload(tenant, name: str, **fields) -> Upload:
    return Upload.objects.create(
        tenant=tenant, record_type="customers", filename=name, sha256=uid(name), **fields
    )


def test_throughput_spreads_each_uploads_rows_over_the_time_it_ran(acme, globex):
    """Rows per second per bucket: finished uploads over start..finish, running ones up to
    their last progress write; other tenants and older uploads stay out."""
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    t = datetime(2026, 1, 1, 11, 56, tzinfo=UTC)  # start of the 5-minute window
    done = _upload(
        acme[0],
        "done",
        state=UploadState.COMPLETED,
        rows_done=1200,  # 10 rows/s for 120 s from 11:56:30
        started_at=t + timedelta(seconds=30),
        finished_at=t + timedelta(seconds=150),
    )
    running = _upload(
        acme[0],
        "running",
        state=UploadState.PROCESSING,
        rows_done=400,  # 10 rows/s for 40 s from 11:59:40
        started_at=t + timedelta(seconds=220),
    )
    Upload.objects.filter(id=running.id).update(updated_at=t + timedelta(seconds=260))
    _upload(
        acme[0],
        "older",
        state=UploadState.COMPLETED,
        rows_done=999,
        started_at=t - timedelta(hours=1),
        finished_at=t - timedelta(seconds=1),
    )
    _upload(
        globex[0],
        "other tenant",
        state=UploadState.COMPLETED,
        rows_done=6000,
        started_at=t,
        finished_at=t + timedelta(seconds=60),
    )
    series = throughput_series(tenant=acme[0], window=timedelta(minutes=5), buckets=5, now=now)
    assert (series.start, series.end, series.bucket_seconds) == (t, t + timedelta(minutes=5), 60)
    assert series.rows_per_second == pytest.approx([5, 10, 5, 10 / 3, 10 / 3])
    everyone = throughput_series(
        tenant=UNSCOPED_ALL_TENANTS, window=timedelta(minutes=5), buckets=5, now=now
    )
    assert everyone.rows_per_second == pytest.approx([105, 10, 5, 10 / 3, 10 / 3])
    assert done.rows_done == 1200


def test_a_selector_without_a_scope_refuses_to_run(db):
    """Forgetting the tenant is an error, not a silent read of every tenant."""
    with pytest.raises(TypeError, match="needs a tenant or UNSCOPED_ALL_TENANTS"):
        throughput_series(tenant=None, window=timedelta(hours=1), buckets=60, now=datetime.now(UTC))


def test_the_dashboards_static_files_are_served(db, client):
    """WhiteNoise serves the script and the stylesheet (under gunicorn as well)."""
    script = client.get("/static/dashboard/dashboard.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("text/javascript")
    assert b"INTERVAL_MS = 2000" in b"".join(script.streaming_content)
    script.close()
    style = client.get("/static/dashboard/dashboard.css")
    assert (style.status_code, style["Content-Type"]) == (200, 'text/css; charset="utf-8"')
    style.close()


def test_an_upload_whose_progress_stopped_says_since_when_and_claims_no_rate(
    acme_upload, acme, browser
):
    """Processing, its progress last written more than a minute ago (its worker killed):
    the page says since when, and shows no rate (it showed the last one, 115,540 rows/s,
    for minutes). Moving again, it is shown as before."""
    _sign_in(browser, acme[1])
    last = timezone.now() - timedelta(minutes=3)
    Upload.objects.filter(id=acme_upload.id).update(
        state="processing", started_at=last - timedelta(seconds=2), updated_at=last, rows_done=1
    )
    [stalled] = browser.get("/dashboard/data/").json()["uploads"]
    since = last.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert stalled["cells"]["progress"] == f"100%, no progress since {since}"
    assert (stalled["cells"]["rows_per_second"], stalled["cells"]["rows_done"]) == ("", "1 row")
    Upload.objects.filter(id=acme_upload.id).update(updated_at=timezone.now())
    [moving] = browser.get("/dashboard/data/").json()["uploads"]
    assert moving["cells"]["progress"] == "100%"
    assert moving["cells"]["rows_per_second"] != ""


def test_expired_sign_ins_are_purged_by_the_hourly_job(db, settings):
    """Each sign-in leaves a session row; the hourly job deletes those past their expiry
    (nothing else did), and keeps the others."""
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from apps.dashboard.tasks import dashboard_sessions_purge_task

    entry = settings.CELERY_BEAT_SCHEDULE["dashboard-sessions-purge"]
    assert entry["task"] == dashboard_sessions_purge_task.name
    now = timezone.now()
    Session.objects.create(session_key="a" * 32, session_data="", expire_date=now - timedelta(1))
    Session.objects.create(session_key="b" * 32, session_data="", expire_date=now + timedelta(1))
    assert dashboard_sessions_purge_task() == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == ["b" * 32]
