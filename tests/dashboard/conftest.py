"""Fixtures of the dashboard tests: two tenants, each with the raw key to sign in with, an
upload of each, a client that behaves as a browser; and helpers that sign in and read a
page's tables."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone

from apps.ingestions.engine.testing import customer_row, uid
from apps.ingestions.models import Upload
from apps.tenants.services import tenant_create


@pytest.fixture
def acme(db):
    tenant, issued = tenant_create(name="Acme")
    return tenant, issued.raw


@pytest.fixture
def globex(db):
    tenant, issued = tenant_create(name="Globex")
    return tenant, issued.raw


PASSWORD = "a-staff-password-1"  # noqa: S105 - a test user's


@pytest.fixture
def browser() -> Client:
    """A client that, like a browser, must send the CSRF token its forms carry."""
    return Client(enforce_csrf_checks=True)


def _csrf(client: Client, path: str) -> str:
    assert client.get(path).status_code == 200
    return client.cookies["csrftoken"].value


def _sign_in(client: Client, key: str, **extra: str):
    token = _csrf(client, "/dashboard/login/")
    return client.post("/dashboard/login/", {"api_key": key, "csrfmiddlewaretoken": token, **extra})


def _staff_sign_in(client: Client, username: str):
    token = _csrf(client, "/dashboard/staff/login/")
    return client.post(
        "/dashboard/staff/login/",
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )


class _Page(HTMLParser):
    """The upload rows (`data-cell` texts by upload id) and table rows of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.uploads: dict[str, dict[str, str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._upload = self._cell = self._table = None
        self._row: list[str] | None = None
        self._in_td = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("data-upload-id"):
            self._upload = self.uploads.setdefault(attrs["data-upload-id"], {})
        if "data-cell" in attrs and self._upload is not None:
            self._cell = attrs["data-cell"]
            self._upload[self._cell] = ""
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        if tag == "tr" and self._table is not None:
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append("")
            self._in_td = True

    def handle_endtag(self, tag):
        if self._cell is not None:
            self._cell = None
        if tag == "td":
            self._in_td = False
        if tag == "tr" and self._row is not None:
            if self._row:
                self._table.append(self._row)
            self._row = None
            self._upload = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._upload[self._cell] += data
        if self._in_td and self._row:
            self._row[-1] += data.strip()


def _customers(ndjson, name: str, good: int, bad: list[dict]):
    rows = [
        customer_row(customer_id=uid(f"{name}-{n}"), email=f"c{n}@example.com") for n in range(good)
    ]
    return ndjson(f"customers_{name}.ndjson", [*rows, *bad])


def _ran_for_2s(upload: Upload) -> Upload:
    """Give a synchronous test load the run times a worker records (its progress writer's
    own connection cannot see a row of the test's open transaction)."""
    finished = timezone.now() - timedelta(seconds=1)
    Upload.objects.filter(id=upload.id).update(
        started_at=finished - timedelta(seconds=2), finished_at=finished
    )
    upload.refresh_from_db()
    return upload


@pytest.fixture
def acme_upload(acme, ndjson, load) -> Upload:
    """Acme's customers: 3 good rows, then a bad email on line 4 and no name on line 5."""
    bad_email = customer_row(customer_id=uid("acme-bad-1"), email="nope")
    no_name = customer_row(customer_id=uid("acme-bad-2"))
    del no_name["name"]
    return _ran_for_2s(load(acme[0], _customers(ndjson, "acme", 3, [bad_email, no_name])))


@pytest.fixture
def globex_upload(globex, ndjson, load) -> Upload:
    """Globex's customers: 2 good rows and a bad UUID on line 3."""
    bad = customer_row(customer_id="not-a-uuid")
    return _ran_for_2s(load(globex[0], _customers(ndjson, "globex", 2, [bad])))
