"""A tenant's validation rules and its rows' warnings on the dashboard, through Django's test
client on the real database, with rules set through the API as a shop sets them: the rules
card (current version or "contract only", the schema escaped), the JSON document's copy of
it, the upload row's warned count, the warnings page, a live batch's warnings, and that no
tenant ever sees another's rules or warnings."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.dashboard.selectors import UNSCOPED_ALL_TENANTS, rules_by_type, warning_list
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import RecordBatch, Upload, ValidationRule

NDJSON = "application/x-ndjson"
STAFF_PASSWORD = "a-staff-password-1"  # noqa: S105 - a test user's

# Warn about names shorter than 5 characters and emails outside example.com.
WARN_CUSTOMERS = {
    "schema": {
        "properties": {
            "name": {"minLength": 5},
            "email": {"pattern": "@example\\.com$"},
        }
    },
    "action": "warn",
}


class _Page(HTMLParser):
    """The rules card's rows (`data-cell` texts by type, and whether the schema is hidden),
    the upload rows' cells, each table's rows by class, and the links of the upload rows."""

    def __init__(self, html: str):
        super().__init__()
        self.rules: dict[str, dict[str, str]] = {}
        self.schema_hidden: dict[str, bool] = {}
        self.uploads: dict[str, dict[str, str]] = {}
        self.links: dict[str, dict[str, tuple[str, bool]]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._row_cells: dict[str, str] | None = None
        self._row_id: str | None = None
        self._cell: str | None = None
        self._table: list[list[str]] | None = None
        self._in_td = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("data-rules"):
            self._row_id = attrs["data-rules"]
            self._row_cells = self.rules.setdefault(self._row_id, {})
        if tag == "tr" and attrs.get("data-upload-id"):
            self._row_id = attrs["data-upload-id"]
            self._row_cells = self.uploads.setdefault(self._row_id, {})
        if tag == "details" and self._row_cells is not None:
            self.schema_hidden[self._row_id] = "hidden" in attrs
        if tag == "a" and "data-link" in attrs and self._row_id in self.uploads:
            link = (attrs["href"], "hidden" in attrs)
            self.links.setdefault(self._row_id, {})[attrs["data-link"]] = link
        if "data-cell" in attrs and self._row_cells is not None:
            self._cell = attrs["data-cell"]
            self._row_cells[self._cell] = ""
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", ""), [])
        if tag == "tr" and self._table is not None:
            self._table.append([])
        if tag == "td" and self._table is not None:
            self._table[-1].append("")
            self._in_td = True

    def handle_endtag(self, tag):
        if tag in ("td", "pre", "span", "small"):
            self._cell = None
        if tag == "td":
            self._in_td = False
        if tag == "tr":
            self._row_cells = self._row_id = None
        if tag == "table" and self._table is not None:
            self._table[:] = [row for row in self._table if row]
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._row_cells[self._cell] += data
        if self._in_td and self._table:
            self._table[-1][-1] += data.strip()


def _signed_in(key: str) -> Client:
    client = Client()
    assert client.post("/dashboard/login/", {"api_key": key}).status_code == 302
    return client


def _put_rules(api, key: str, record_type: str, body: dict | str) -> None:
    """Rules through the API, as a shop sets them (a string body is sent as it is: JSON
    with numbers a float cannot hold)."""
    text = body if isinstance(body, str) else json.dumps(body)
    response = api.as_tenant(key).put(
        f"/api/v1/ingest/rules/{record_type}/", text, content_type="application/json"
    )
    assert response.status_code == 200, response.content


def _end_rules(api, key: str, record_type: str) -> None:
    response = api.as_tenant(key).delete(f"/api/v1/ingest/rules/{record_type}/")
    assert response.status_code == 204, response.content


def _pretty(rule: ValidationRule) -> str:
    """A schema as the card shows it (a decimal, which JSON cannot hold here, as a string)."""
    return json.dumps(rule.schema, indent=2, ensure_ascii=False, default=str)


def _when(rule: ValidationRule) -> str:
    return rule.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _contract_only(record_type: str, versions: str = "0 versions") -> dict[str, str]:
    return {
        "type": record_type,
        "rules": "contract only",
        "action": "",
        "unknown_fields": "",
        "created": "",
        "versions": versions,
        "schema": "",
    }


@pytest.fixture
def acme_rules(acme, api) -> dict[str, ValidationRule]:
    """Acme: customers at version 2 (version 1 rejected; version 2 warns), orders' one
    version ended, no rules for products or order items."""
    _, key = acme
    _put_rules(api, key, "customers", {"schema": {"required": ["email"]}})
    _put_rules(
        api,
        key,
        "customers",
        '{"schema": {"properties": {"name": {"minLength": 5}, '
        '"credit": {"maximum": 19.990000000000000000001}}}, "action": "warn"}',
    )
    _put_rules(api, key, "orders", {"schema": {"required": ["status"]}})
    _end_rules(api, key, "orders")
    rules = ValidationRule.objects.filter(tenant=acme[0], ended_at=None)
    return {rule.record_type: rule for rule in rules}


def test_the_rules_card_shows_each_types_current_rules_or_contract_only(acme_rules, acme):
    """Customers: version 2 of 2 with its action, unknown-field policy, time and schema
    (numbers exactly as sent); orders, whose rules ended: contract only, 1 version; the
    others: contract only, no versions. The JSON document carries the same texts."""
    customers = acme_rules["customers"]
    client = _signed_in(acme[1])
    page = _Page(client.get("/dashboard/").content.decode())
    expected = {
        "customers": {
            "type": "customers",
            "rules": "version 2",
            "action": "warn",
            "unknown_fields": "ignore",
            "created": _when(customers),
            "versions": "2 versions",
            "schema": _pretty(customers).replace(
                '"19.990000000000000000001"', "19.990000000000000000001"
            ),
        },
        "products": _contract_only("products"),
        "orders": _contract_only("orders", "1 version"),
        "order_items": _contract_only("order_items"),
    }
    assert page.rules == expected
    assert '"maximum": 19.990000000000000000001' in page.rules["customers"]["schema"]
    assert page.schema_hidden == {
        "customers": False,
        "products": True,
        "orders": True,
        "order_items": True,
    }
    rules = client.get("/dashboard/data/").json()["rules"]
    assert [r["cells"] for r in rules] == list(expected.values())
    assert rules[0] == {
        "type": "customers",
        "versions": 2,
        "current": {
            "version": 2,
            "action": "warn",
            "unknown_fields": "ignore",
            "created_at": customers.created_at.isoformat(),
        },
        "cells": expected["customers"],
    }
    assert [(r["type"], r["versions"], r["current"]) for r in rules[1:]] == [
        ("products", 0, None),
        ("orders", 1, None),
        ("order_items", 0, None),
    ]


def test_a_tenant_never_sees_another_tenants_rules(acme_rules, acme, globex, api):
    """Globex's rules are in neither Acme's card nor its document, `?tenant=` or not."""
    _put_rules(api, globex[1], "products", {"schema": {"description": "globex-secret-rule"}})
    _put_rules(api, globex[1], "customers", {"schema": {"description": "globex-secret-rule"}})
    client = _signed_in(acme[1])
    for query in ("", f"?tenant={globex[0].id}"):
        html = client.get(f"/dashboard/{query}").content.decode()
        assert "globex-secret-rule" not in html
        page = _Page(html)
        assert page.rules["products"] == _contract_only("products")
        assert page.rules["customers"]["rules"] == "version 2"
        data = client.get(f"/dashboard/data/{query}").content.decode()
        assert "globex-secret-rule" not in data
    assert "globex-secret-rule" not in str(rules_by_type(tenant=acme[0]))
    assert rules_by_type(tenant=globex[0])[1].current.schema == {
        "description": "globex-secret-rule"
    }


def test_staff_see_a_tenants_rules_once_they_choose_it(acme_rules, acme, globex):
    """Every tenant at once has no rules card (rules are each tenant's own) and a null in
    the document; with `?tenant=` the card shows that tenant's."""
    get_user_model().objects.create_user("ops", password=STAFF_PASSWORD, is_staff=True)
    client = Client()
    assert client.login(username="ops", password=STAFF_PASSWORD)
    html = client.get("/dashboard/").content.decode()
    assert "choose a tenant above to see its rules" in html
    assert _Page(html).rules == {}
    assert client.get("/dashboard/data/").json()["rules"] is None
    assert rules_by_type(tenant=UNSCOPED_ALL_TENANTS) is None
    page = _Page(client.get(f"/dashboard/?tenant={acme[0].id}").content.decode())
    assert page.rules["customers"]["rules"] == "version 2"
    page = _Page(client.get(f"/dashboard/?tenant={globex[0].id}").content.decode())
    assert {r["rules"] for r in page.rules.values()} == {"contract only"}


def test_a_schema_is_shown_escaped(acme, api):
    """Markup in a schema is text: escaped in the card's <pre>, and `\\u003C` in the page's
    JSON script, which it cannot close early."""
    markup = "</script><b>bold</b><script>alert(1)</script>"
    _put_rules(api, acme[1], "products", {"schema": {"description": markup, "title": "<i>"}})
    html = _signed_in(acme[1]).get("/dashboard/").content.decode()
    assert "<b>" not in html
    assert "<i>" not in html
    assert "alert(1)</script>" not in html
    assert "&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("</script>") == 2  # the document's JSON, the page's script
    script = re.search(
        r'<script id="dashboard-initial" type="application/json">(.*?)</script>', html, re.S
    )[1]
    assert "\\u003C/script\\u003E\\u003Cb\\u003E" in script
    schema = json.loads(script)["rules"][1]["cells"]["schema"]
    assert json.loads(schema) == {"description": markup, "title": "<i>"}
    assert _Page(html).rules["products"]["schema"] == schema


def _warned_customers(acme, api, ndjson, load) -> Upload:
    """Acme's customers under a warning rule: line 1 clean, line 2 a short name, line 3 a
    short name and an email elsewhere, line 4 a bad email (a reject)."""
    _put_rules(api, acme[1], "customers", WARN_CUSTOMERS)
    rows = [
        customer_row(customer_id=uid("w1"), name="Alice Example", email="a@example.com"),
        customer_row(customer_id=uid("w2"), name="Bo", email="b@example.com"),
        customer_row(customer_id=uid("w3"), name="<b>", email="c@elsewhere.org"),
        customer_row(customer_id=uid("w4"), email="nope"),
    ]
    return load(acme[0], ndjson("customers_warned.ndjson", rows))


def test_an_uploads_row_shows_its_warned_rows_and_the_rules_it_was_checked_with(
    acme, api, ndjson, load
):
    """The row: the warned count, the rules version, a link to the warnings; the JSON
    document the same."""
    upload = _warned_customers(acme, api, ndjson, load)
    assert (upload.rows_warned, upload.rows_rejected, upload.rules_version) == (2, 1, 1)
    client = _signed_in(acme[1])
    page = _Page(client.get("/dashboard/").content.decode())
    cells = page.uploads[str(upload.id)]
    assert (cells["type"], cells["rules"], cells["warned"], cells["rejected"]) == (
        "customers",
        "rules v1",
        "2",
        "1",
    )
    warnings_url = f"/dashboard/uploads/{upload.id}/warnings/"
    assert page.links[str(upload.id)]["warnings"] == (warnings_url, False)
    shown = client.get("/dashboard/data/").json()["uploads"][0]
    assert (shown["warnings_url"], shown["rules_version"], shown["rows"]["warned"]) == (
        warnings_url,
        1,
        2,
    )
    assert (shown["cells"]["warned"], shown["cells"]["rules"]) == ("2", "rules v1")
    errors = client.get(f"/dashboard/uploads/{upload.id}/errors/").content.decode()
    assert '<dd id="warned">2 loaded with warnings</dd>' in errors
    assert '<dd id="rules">rules v1</dd>' in errors
    assert f'<a href="{warnings_url}">its rows with warnings</a>' in errors


def test_an_upload_without_rules_is_checked_against_the_contract_only(acme, ndjson, load):
    """No rules: "contract only", nothing warned, the warnings link hidden, and a warnings
    page without a table."""
    upload = load(acme[0], ndjson("customers_plain.ndjson", [customer_row(customer_id=uid("p"))]))
    client = _signed_in(acme[1])
    page = _Page(client.get("/dashboard/").content.decode())
    cells = page.uploads[str(upload.id)]
    assert (cells["rules"], cells["warned"]) == ("contract only", "0")
    warnings_url = f"/dashboard/uploads/{upload.id}/warnings/"
    assert page.links[str(upload.id)]["warnings"] == (warnings_url, True)
    html = client.get(warnings_url).content.decode()
    assert "warnings" not in _Page(html).tables
    assert '<p class="muted">No rows with warnings.</p>' in html
    assert '<dd id="rules">contract only</dd>' in html


def test_the_warnings_page_lists_every_warning_of_each_row(acme, api, ndjson, load):
    """Line, field, code and message of each warning, a row's further warnings under its
    first; markup in a value stays text."""
    upload = _warned_customers(acme, api, ndjson, load)
    client = _signed_in(acme[1])
    html = client.get(f"/dashboard/uploads/{upload.id}/warnings/").content.decode()
    short = "is shorter than 5 characters (rules version 1, at /properties/name/minLength)"
    elsewhere = 'does not match "@example\\.com$" (rules version 1, at /properties/email/pattern)'
    assert _Page(html).tables["warnings"] == [
        ["2", "name", "rule_violation", f'"Bo" {short}'],
        ["3", "name", "rule_violation", f'"<b>" {short}'],
        ["email", "rule_violation", f'"c@elsewhere.org" {elsewhere}'],  # line 3's second
    ]
    stored = warning_list(tenant=acme[0], upload=upload)
    assert [(w.line, len(w.errors)) for w in stored] == [(2, 1), (3, 2)]
    assert '<td class="num" rowspan="2">3</td>' in html
    assert "2 rows with warnings" in html
    assert "<b>" not in html
    assert "&quot;&lt;b&gt;&quot; is shorter" in html  # the short name, quoted in its message
    assert '<dd id="rules">rules v1</dd>' in html


def test_the_warnings_page_shows_100_a_page(acme, api, ndjson, load):
    """130 warned rows: 100 on the first page, 30 on the second."""
    _put_rules(api, acme[1], "customers", WARN_CUSTOMERS)
    rows = [customer_row(customer_id=uid(f"many-{n}"), name="Bo") for n in range(1, 131)]
    upload = load(acme[0], ndjson("customers_many.ndjson", rows))
    client = _signed_in(acme[1])
    first = client.get(f"/dashboard/uploads/{upload.id}/warnings/").content.decode()
    assert [int(r[0]) for r in _Page(first).tables["warnings"]] == list(range(1, 101))
    assert "130 rows with warnings" in first
    assert "<span>page 1 of 2</span>" in first
    second = client.get(f"/dashboard/uploads/{upload.id}/warnings/?page=2").content.decode()
    assert [int(r[0]) for r in _Page(second).tables["warnings"]] == list(range(101, 131))
    assert client.get(f"/dashboard/uploads/{upload.id}/warnings/?page=0").status_code == 400


def test_another_tenants_warnings_are_not_found(acme, globex, api, ndjson, load):
    """Globex's upload's warnings page is 404 for Acme, as an unknown upload's is."""
    upload = _warned_customers(globex, api, ndjson, load)
    client = _signed_in(acme[1])
    for upload_id in (upload.id, uid("nothing")):
        response = client.get(f"/dashboard/uploads/{upload_id}/warnings/")
        assert (response.status_code, response["Content-Type"]) == (
            404,
            "application/problem+json",
        )
    assert list(warning_list(tenant=acme[0], upload=upload)) == []
    assert len(warning_list(tenant=globex[0], upload=upload)) == 2
    assert _signed_in(globex[1]).get(f"/dashboard/uploads/{upload.id}/warnings/").status_code == 200


def test_a_live_batchs_errors_page_lists_its_warnings(acme, api):
    """A batch accepted under a warning rule: its warned records below its rejects, and the
    rules version it was checked with."""
    _put_rules(api, acme[1], "customers", WARN_CUSTOMERS)
    rows = [
        customer_row(customer_id=uid("b1")),
        customer_row(customer_id=uid("b2"), name="Bo"),
        customer_row(customer_id=uid("b3"), email="nope"),
    ]
    response = api.as_tenant(acme[1]).generic(
        "POST", "/api/v1/ingest/records/customers/", ndjson_bytes(rows), content_type=NDJSON
    )
    assert response.status_code == 202, response.content
    batch = RecordBatch.objects.get(id=response.json()["id"])
    assert batch.rules == {"customers": 1}
    html = _signed_in(acme[1]).get(f"/dashboard/batches/{batch.id}/errors/").content.decode()
    page = _Page(html)
    assert page.tables["warnings"] == [
        [str(w["line"]), w["field"], w["code"], w["message"]] for w in batch.warnings
    ]
    assert [(w["line"], w["field"]) for w in batch.warnings] == [(2, "name")]
    assert [r[:3] for r in page.tables["rejects"]] == [["3", "email", "invalid_email"]]
    assert "1 record with warnings" in html
    assert '<dd id="rules">customers rules v1</dd>' in html
    assert '<dd id="warned">1 record accepted with warnings (<a href="#warnings">below</a>)' in html
