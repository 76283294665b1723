"""Live records on the dashboard, on the real database: batches accepted through the API and
merged as the worker merges them are listed beside the uploads with their exact counts,
the last minute's throughput and the backlog; each batch's rejects have their page; no
tenant sees another's batches, and more batches take no more queries."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.analytics.services import analytics_catch_up
from apps.dashboard.selectors import (
    UNSCOPED_ALL_TENANTS,
    batch_find,
    batch_recent,
    batch_reject_list,
    live_figures,
)
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import RecordBatch, Upload
from apps.ingestions.services import records_merge

NDJSON = "application/x-ndjson"


class _Page(HTMLParser):
    """The batch rows (`data-cell` texts by batch id), the live figures (`data-live` texts),
    the upload rows' ids and the reject table's rows of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.batches: dict[str, dict[str, str]] = {}
        self.figures: dict[str, str] = {}
        self.uploads: list[str] = []
        self.rejects: list[list[str]] = []
        self._texts: dict[str, str] | None = None
        self._name: str | None = None
        self._in_rejects = False
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("data-batch-id"):
            self._texts = self.batches.setdefault(attrs["data-batch-id"], {})
        if tag == "tr" and attrs.get("data-upload-id"):
            self.uploads.append(attrs["data-upload-id"])
        if "data-cell" in attrs and self._texts is not None:
            self._name = attrs["data-cell"]
            self._texts[self._name] = ""
        if "data-live" in attrs:
            self._texts, self._name = self.figures, attrs["data-live"]
            self.figures[self._name] = ""
        if tag == "table" and attrs.get("class") == "rejects":
            self._in_rejects = True
        if self._in_rejects and tag == "tr":
            self.rejects.append([])
        if self._in_rejects and tag == "td":
            self._cell = self.rejects[-1]
            self._cell.append("")

    def handle_endtag(self, tag):
        self._name = None
        if tag == "tr" or (tag == "dd" and self._texts is self.figures):
            self._texts = None
        if tag == "td":
            self._cell = None
        if tag == "table":
            self._in_rejects = False
            self.rejects = [row for row in self.rejects if row]

    def handle_data(self, data):
        if self._name is not None and self._texts is not None:
            self._texts[self._name] += data
        if self._cell is not None:
            self._cell[-1] += data.strip()


def _signed_in(key: str) -> Client:
    client = Client()
    assert client.post("/dashboard/login/", {"api_key": key}).status_code == 302
    return client


def _accept(api, key: str, record_type: str, rows: list) -> RecordBatch:
    """A batch through the API, as a shop sends it; 202 with the batch."""
    path = f"/api/v1/ingest/records/{record_type}/"
    response = api.as_tenant(key).generic("POST", path, ndjson_bytes(rows), content_type=NDJSON)
    assert response.status_code == 202, response.content
    return RecordBatch.objects.get(id=response.json()["id"])


def _customers(name: str, good: int) -> list[dict]:
    return [customer_row(customer_id=uid(f"{name}-{n}")) for n in range(good)]


def _bad_email(name: str) -> dict:
    return customer_row(customer_id=uid(f"{name}-bad"), email="nope")


def _no_name(name: str) -> dict:
    row = customer_row(customer_id=uid(f"{name}-nameless"))
    del row["name"]
    return row


def _merge_took(batch: RecordBatch) -> str:
    batch.refresh_from_db()
    return f"{(batch.merged_at - batch.created_at).total_seconds():.3f} s"


def _created(batch: RecordBatch) -> str:
    return batch.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def acme_batches(acme, api) -> dict[str, RecordBatch]:
    """Acme's batches: customers (3 good, a bad email) and an order whose customer is
    missing, both merged; then 2 customers, accepted 100 s ago and not merged yet."""
    tenant, key = acme
    customers = _accept(api, key, "customers", [*_customers("acme", 3), _bad_email("acme")])
    orders = _accept(api, key, "orders", [order_row(order_id=uid("o1"), customer_id=uid("nobody"))])
    assert records_merge(tenant_id=tenant.id) == 2
    waiting = _accept(api, key, "customers", _customers("acme-later", 2))
    # the backlog's age needs an old batch: as if its merge had been waiting for 100 s
    RecordBatch.objects.filter(id=waiting.id).update(
        created_at=timezone.now() - timedelta(seconds=100)
    )
    waiting.refresh_from_db()
    return {"customers": customers, "orders": orders, "waiting": waiting}


@pytest.fixture
def globex_batch(globex, api) -> RecordBatch:
    """Globex's one batch: 5 customers and a nameless one, merged."""
    tenant, key = globex
    batch = _accept(api, key, "customers", [*_customers("globex", 5), _no_name("globex")])
    records_merge(tenant_id=tenant.id)
    return batch


def test_the_page_lists_the_tenants_live_batches_with_their_counts(acme_batches, acme):
    """Newest first: each batch's type, state, records and counts as an upload's, and the
    time from accepting it to its merge (none while it waits)."""
    page = _Page(_signed_in(acme[1]).get("/dashboard/").content.decode())
    customers, orders, waiting = (acme_batches[k] for k in ("customers", "orders", "waiting"))
    assert list(page.batches) == [str(waiting.id), str(orders.id), str(customers.id)]
    counts = ("records", "inserted", "updated", "unchanged", "rejected", "pending")

    def row(batch, state, *numbers, took=""):
        cells = dict(zip(counts, numbers, strict=True))
        return {"created": _created(batch), "id": str(batch.id), "type": batch.record_type}, {
            "state": state,
            **cells,
            "merge_seconds": took,
        }

    for batch, expected in (
        (waiting, row(waiting, "accepted", "2", "0", "0", "0", "0", "0")),
        (orders, row(orders, "merged", "1", "0", "0", "0", "0", "1", took=_merge_took(orders))),
        (
            customers,
            row(customers, "merged", "4", "3", "0", "0", "1", "0", took=_merge_took(customers)),
        ),
    ):
        assert page.batches[str(batch.id)] == {**expected[0], **expected[1]}
    assert page.uploads == []  # a batch's parts are its batch, never uploads


def test_the_live_figures_are_the_last_minutes_throughput_and_the_backlog(acme_batches, acme, api):
    """Accepted, merged and rejected records of the last minute (and per second), the
    records waiting and how long the oldest has waited; the JSON document the same."""
    client = _signed_in(acme[1])
    figures = _Page(client.get("/dashboard/").content.decode()).figures
    lag = figures.pop("lag")
    assert figures == {
        "accepted": "4 (0.1/s)",  # 3 + 1: the waiting batch was accepted 100 s ago
        "merged": "4 (0.1/s)",
        "rejected": "1",
        "backlog": "2 records in 1 batch",
    }
    assert lag in {"100 s", "101 s"}
    live = client.get("/dashboard/data/").json()["live"]
    assert 100 <= live.pop("lag_seconds") < 102
    assert live.pop("cells")["backlog"] == "2 records in 1 batch"
    assert live == {
        "window_seconds": 60,
        "accepted": 4,
        "rejected": 1,
        "merged": 4,
        "backlog": 2,
        "backlog_batches": 1,
    }
    records_merge(tenant_id=acme[0].id)
    figures = _Page(client.get("/dashboard/").content.decode()).figures
    assert (figures["merged"], figures["backlog"], figures["lag"]) == (
        "6 (0.1/s)",
        "0 records in 0 batches",
        "nothing waiting",
    )
    _accept(api, acme[1], "customers", _customers("one-more", 1))
    figures = _Page(client.get("/dashboard/").content.decode()).figures
    assert figures["backlog"] == "1 record in 1 batch"


def test_the_json_document_carries_each_batch_as_the_page_shows_it(acme_batches, acme):
    """A batch in the polled document: id, state, its errors page, counts and cells."""
    customers = acme_batches["customers"]
    data = _signed_in(acme[1]).get("/dashboard/data/").json()
    assert [b["id"] for b in data["batches"]] == [
        acme_batches[k].id for k in ("waiting", "orders", "customers")
    ]
    shown = data["batches"][2]
    took = shown.pop("merge_seconds")
    assert f"{took:.3f} s" == _merge_took(customers)
    assert shown == {
        "id": customers.id,
        "state": "merged",
        "errors_url": f"/dashboard/batches/{customers.id}/errors/",
        "rows": {
            "total": 4,
            "inserted": 3,
            "updated": 0,
            "unchanged": 0,
            "rejected": 1,
            "pending": 0,
            "duplicates": 0,
            "warned": 0,
        },
        "cells": {
            "created": _created(customers),
            "tenant": "Acme",
            "id": str(customers.id),
            "type": "customers",
            "state": "merged",
            "records": "4",
            "inserted": "3",
            "updated": "0",
            "unchanged": "0",
            "rejected": "1",
            "pending": "0",
            "merge_seconds": _merge_took(customers),
        },
    }
    assert data["uploads"] == []


def test_a_batchs_errors_page_lists_its_rejects(acme, api):
    """Line, field, code, message and raw of each rejected record, with the batch's facts;
    a clean batch says it has none."""
    tenant, key = acme
    rows = [*_customers("errors", 1), _bad_email("errors"), *_customers("errors-2", 1)]
    rows.append(_no_name("errors"))
    batch = _accept(api, key, "customers", rows)
    clean = _accept(api, key, "customers", _customers("clean", 1))
    records_merge(tenant_id=tenant.id)
    client = _signed_in(key)
    html = client.get(f"/dashboard/batches/{batch.id}/errors/").content.decode()
    assert _Page(html).rejects == [
        ["2", "email", "invalid_email", "email is not a valid email address: 'nope'"]
        + [json.dumps(rows[1])],
        ["4", "name", "missing_field", "name is required", json.dumps(rows[3])],
    ]
    assert "2 rejected records" in html
    assert f"Rejected records of live batch {batch.id}</h1>" in html
    assert "<dd>4 total: 2 inserted, 0 updated, 0 unchanged, 2 rejected, 0 pending</dd>" in html
    assert '<dd id="codes"><code>invalid_email</code> 1, <code>missing_field</code> 1</dd>' in (
        html
    )
    clean_html = client.get(f"/dashboard/batches/{clean.id}/errors/").content.decode()
    assert '<p class="muted">No rejected records.</p>' in clean_html
    assert client.get("/dashboard/batches/999999999/errors/").status_code == 404
    assert client.get(f"/dashboard/batches/{batch.id}/errors/?page=x").status_code == 400


def test_a_batchs_errors_page_shows_every_problem_of_a_record(acme, api):
    """A record with two problems: each on a row of its own, the first with its line and
    raw."""
    tenant, key = acme
    record = {**_no_name("several"), "email": "nope"}
    batch = _accept(api, key, "customers", [*_customers("several", 1), record])
    html = _signed_in(key).get(f"/dashboard/batches/{batch.id}/errors/").content.decode()
    assert _Page(html).rejects == [
        ["2", "name", "missing_field", "name is required", json.dumps(record)],
        ["email", "invalid_email", "email is not a valid email address: 'nope'"],
    ]
    assert "1 rejected record" in html


def test_a_tenant_never_sees_another_tenants_batches(acme_batches, globex_batch, acme):
    """Not in the list, the figures or the JSON (a `?tenant=` changes nothing); its errors
    page is 404."""
    client = _signed_in(acme[1])
    for path in ("/dashboard/", f"/dashboard/?tenant={globex_batch.tenant_id}"):
        page = _Page(client.get(path).content.decode())
        assert str(globex_batch.id) not in page.batches
        assert len(page.batches) == 3
        assert page.figures["accepted"] == "4 (0.1/s)"  # globex's 6 are not in it
    data = client.get(f"/dashboard/data/?tenant={globex_batch.tenant_id}").json()
    assert globex_batch.id not in [b["id"] for b in data["batches"]]
    assert (data["live"]["accepted"], data["live"]["rejected"]) == (4, 1)
    response = client.get(f"/dashboard/batches/{globex_batch.id}/errors/")
    assert (response.status_code, response["Content-Type"]) == (404, "application/problem+json")
    assert batch_find(tenant=acme[0], batch_id=globex_batch.id) is None
    assert batch_reject_list(tenant=acme[0], batch=globex_batch) == []


def test_staff_see_every_tenants_batches_and_can_filter_by_one(acme_batches, globex_batch):
    """All tenants' batches with a tenant column and summed figures; `?tenant=` one's."""
    get_user_model().objects.create_user("ops", password="a-staff-password-1", is_staff=True)  # noqa: S106
    client = Client()
    client.login(username="ops", password="a-staff-password-1")  # noqa: S106
    page = _Page(client.get("/dashboard/").content.decode())
    assert list(page.batches)[0] == str(globex_batch.id)
    assert [b["tenant"] for b in page.batches.values()] == ["Globex", "Acme", "Acme", "Acme"]
    assert page.figures["accepted"] == "9 (0.1/s)"
    assert page.figures["rejected"] == "2"
    filtered = _Page(client.get(f"/dashboard/?tenant={globex_batch.tenant_id}").content.decode())
    assert list(filtered.batches) == [str(globex_batch.id)]
    assert filtered.figures["backlog"] == "0 records in 0 batches"
    html = client.get(f"/dashboard/batches/{globex_batch.id}/errors/").content.decode()
    assert _Page(html).rejects[0][:3] == ["6", "name", "missing_field"]


def test_more_batches_take_no_more_queries(acme, api):
    """The page and its document read the batches and their parts in a fixed number of
    queries, however many batches (each with parts) are listed."""
    tenant, key = acme
    client = _signed_in(key)

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    _accept(api, key, "customers", _customers("q0", 2))
    _accept(api, key, "orders", [order_row(order_id=uid("qo0"), customer_id=uid("q0-0"))])
    records_merge(tenant_id=tenant.id)
    analytics_catch_up(tenant_id=tenant.id)  # as the refresh the merge sends does
    few = (queries("/dashboard/"), queries("/dashboard/data/"))
    for n in range(1, 6):
        _accept(api, key, "customers", [*_customers(f"q{n}", 2), _bad_email(f"q{n}")])
        _accept(api, key, "orders", [order_row(order_id=uid(f"qo{n}"), customer_id=uid("q0-0"))])
    records_merge(tenant_id=tenant.id)
    analytics_catch_up(tenant_id=tenant.id)
    assert len(batch_recent(tenant=tenant)) == 12
    assert (queries("/dashboard/"), queries("/dashboard/data/")) == few


def test_a_live_part_is_never_shown_as_an_upload(acme_batches, acme):
    """The uploads a batch is stored as are not in the list, and have no errors page."""
    part = Upload.objects.filter(batch=acme_batches["customers"]).get()
    client = _signed_in(acme[1])
    assert client.get("/dashboard/data/").json()["uploads"] == []
    assert client.get(f"/dashboard/uploads/{part.id}/errors/").status_code == 404


@pytest.mark.parametrize(
    "read",
    [
        lambda: batch_recent(tenant=None),
        lambda: live_figures(tenant=None, window=timedelta(minutes=1), now=timezone.now()),
        lambda: batch_find(tenant=None, batch_id=1),
    ],
)
def test_a_batch_selector_without_a_scope_refuses_to_run(db, read):
    """Forgetting the tenant is an error, not a silent read of every tenant's batches."""
    with pytest.raises(TypeError, match="needs a tenant or UNSCOPED_ALL_TENANTS"):
        read()


def test_live_figures_count_every_tenant_for_staff(acme_batches, globex_batch):
    """UNSCOPED_ALL_TENANTS: every tenant's batches in one sum."""
    figures = live_figures(
        tenant=UNSCOPED_ALL_TENANTS, window=timedelta(minutes=1), now=timezone.now()
    )
    assert (figures.accepted, figures.rejected, figures.merged, figures.backlog) == (9, 2, 9, 2)
