"""Tenant validation rules through the API (SPEC 10): versions (PUT adds one, DELETE ends
the current one, GET shows them), the 400 reasons, numbers kept exact, tenants apart,
writers at once; and what rules do to an upload (rejects, warnings, the version recorded)
and to a live batch (its answer, its parts, its merge)."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection

from apps.ingestions.engine.testing import (
    customer_row,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import OrderItem, Product, Upload, ValidationRule
from apps.ingestions.services import records_merge, rules_put
from apps.tenants.services import api_key_rotate

pytestmark = pytest.mark.django_db

RULES = "/api/v1/ingest/rules/"
NDJSON = "application/x-ndjson"
ITEMS_SCHEMA = {
    "properties": {
        "quantity": {"type": "integer", "minimum": 1, "maximum": 5},
        "unit_price": {"exclusiveMinimum": 0, "maximum": 100},
    }
}


def _put(client, record_type, body):
    return client.put(f"{RULES}{record_type}/", json.dumps(body), content_type="application/json")


def _rule(body: dict) -> dict:
    """A rule version as shown, without its times."""
    return {k: v for k, v in body.items() if k not in ("created_at", "ended_at")}


def test_each_put_is_a_version_and_delete_ends_the_current_one(client):
    first = _put(client, "order_items", {"schema": ITEMS_SCHEMA})
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["type"] == "order_items"
    assert body["url"].endswith("/api/v1/ingest/rules/order_items/")
    assert _rule(body["current"]) == {
        "version": 1,
        "schema": ITEMS_SCHEMA,
        "action": "reject",
        "unknown_fields": "ignore",
    }
    assert body["current"]["ended_at"] is None
    assert body["versions"] == 1
    second = _put(
        client, "order_items", {"schema": {}, "action": "warn", "unknown_fields": "reject"}
    )
    body = second.json()
    assert _rule(body["current"]) == {
        "version": 2,
        "schema": {},
        "action": "warn",
        "unknown_fields": "reject",
    }
    assert [v["version"] for v in body["history"]] == [2, 1]
    assert body["history"][1]["ended_at"] is not None
    assert client.get(f"{RULES}order_items/").json() == body
    listed = client.get(RULES).json()["rules"]
    assert listed["customers"] is None
    assert listed["order_items"] == body["current"]

    assert client.delete(f"{RULES}order_items/").status_code == 204
    ended = client.get(f"{RULES}order_items/").json()
    assert ended["current"] is None
    assert [v["version"] for v in ended["history"]] == [2, 1]
    assert all(v["ended_at"] for v in ended["history"])
    again = client.delete(f"{RULES}order_items/")
    assert again.status_code == 404
    assert again["Content-Type"] == "application/problem+json"
    assert _put(client, "order_items", {"schema": {}}).json()["current"]["version"] == 3


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (
            {"schema": {"$ref": "https://schemas.example.com/items.json"}},
            "invalid_rules",
            "the schema refers to https://schemas.example.com/items.json: remote references "
            "are not allowed",
        ),
        (
            {"schema": {"properties": {"sku": {"pattern": "(x+)\\1"}}}},
            "invalid_rules",
            "no lookaround, no backreferences",
        ),
        ({"schema": {"type": 5}}, "invalid_rules", "invalid JSON Schema at /type"),
        ({"schema": []}, "invalid_rules", "the schema must be a JSON object"),
        ({"action": "reject"}, "invalid", "schema: This field is required."),
        ({"schema": {}, "action": "drop"}, "invalid", 'action: "drop" is not a valid choice.'),
        (
            {"schema": {}, "unknown_fields": "warn"},
            "invalid",
            'unknown_fields: "warn" is not a valid choice.',
        ),
        ({"schema": {}, "extra": 1}, "invalid", "extra: Unknown field."),
    ],
)
def test_a_rule_that_cannot_be_used_is_400_with_the_reason(client, body, code, detail):
    response = _put(client, "products", body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert detail in problem["detail"]
    assert not ValidationRule.objects.exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b'{"schema": {"properties": {"sku": {"const": "a\\u0000b"}}}}',
            "the schema contains a NUL",
        ),
        (b'{"schema": {"properties": {"a\\u0000": {}}}}', "the schema contains a NUL"),
        (
            b'{"schema": {"maximum": 1e999999999999999999}}',
            "the schema holds a number out of range",
        ),
        (b'{"schema": {"minimum": 0e-99999999999}}', "the schema holds a number out of range"),
    ],
)
def test_a_schema_postgresql_cannot_store_is_400(client, body, detail):
    """jsonb refuses NUL and numbers past numeric's range: refused with the reason, not a 500."""
    response = client.put(f"{RULES}products/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_rules"
    assert detail in response.json()["detail"]


def test_bodies_and_types_that_are_not_rules(client):
    not_object = client.put(f"{RULES}products/", b"[1]", content_type="application/json")
    assert not_object.status_code == 400
    bad_json = client.put(f"{RULES}products/", b'{"schema": ', content_type="application/json")
    assert (bad_json.status_code, bad_json.json()["code"]) == (400, "parse_error")
    unknown = _put(client, "invoices", {"schema": {}})
    assert unknown.status_code == 404
    assert "the types are customers, products, orders, order_items" in unknown.json()["detail"]
    assert client.get(f"{RULES}invoices/").status_code == 404


def test_numbers_in_a_schema_are_kept_exactly(client):
    """A bound with more digits than a float holds is stored and shown as sent, and the
    rows meet it exactly."""
    text = (
        b'{"schema": {"properties": {"price": {"maximum": 19.990000000000000000001, '
        b'"multipleOf": 0.01}}}}'
    )
    response = client.put(f"{RULES}products/", text, content_type="application/json")
    assert response.status_code == 200, response.content
    assert b'"maximum":19.990000000000000000001' in response.content
    shown = client.get(f"{RULES}products/")
    assert b'"maximum":19.990000000000000000001,"multipleOf":0.01' in shown.content


def test_rules_are_the_tenants_own(client, client_for, other_tenant):
    _put(client, "customers", {"schema": {"required": ["metadata"]}})
    other = client_for(other_tenant)
    assert other.get(f"{RULES}customers/").json()["current"] is None
    assert other.delete(f"{RULES}customers/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_writers_at_once_get_one_version_each(tenant):
    """Eight PUTs at once: versions 1 to 8, each once, one of them current."""
    errors = []

    def put():
        try:
            rules_put(
                tenant=tenant,
                record_type="products",
                schema={},
                action="reject",
                unknown_fields="ignore",
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rules = ValidationRule.objects.filter(tenant=tenant, record_type="products")
    assert sorted(rules.values_list("version", flat=True)) == list(range(1, 9))
    assert list(rules.filter(ended_at__isnull=True).values_list("version", flat=True)) == [8]


@pytest.mark.django_db(transaction=True)
def test_a_put_answers_the_version_it_wrote_though_another_follows_at_once(
    tenant_client, monkeypatch
):
    """A second PUT comes in just after the first wrote its version: the first's answer
    still shows its own version as current (it used to read the rules again after its
    commit, and showed the second's)."""
    from rest_framework.test import APIClient

    from apps.ingestions.apis import rules as rules_api

    tenant, _ = tenant_client()
    key = api_key_rotate(tenant=tenant, revoke_existing=False).raw
    written, followed = threading.Event(), threading.Event()
    real = rules_api.rules_put

    def first_waits(**kwargs):
        row = real(**kwargs)
        if kwargs["schema"]["properties"]["quantity"]["maximum"] == 1:
            written.set()
            followed.wait(3)  # the second commits meanwhile, unless this holds it off
        return row

    monkeypatch.setattr(rules_api, "rules_put", first_waits)
    answers: dict[int, dict] = {}

    def put(maximum: int) -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        body = {"schema": {"properties": {"quantity": {"maximum": maximum}}}}
        try:
            answers[maximum] = client.put(f"{RULES}order_items/", body, format="json").json()
        finally:
            if maximum == 2:
                followed.set()
            connection.close()

    first = threading.Thread(target=put, args=(1,))
    first.start()
    assert written.wait(10)
    second = threading.Thread(target=put, args=(2,))
    second.start()
    first.join()
    second.join()
    current = {n: a["current"] for n, a in answers.items()}
    assert {n: c["schema"]["properties"]["quantity"]["maximum"] for n, c in current.items()} == {
        1: 1,
        2: 2,
    }
    assert (current[1]["version"], current[2]["version"]) == (1, 2)


def _parents(load, tenant, ndjson):
    load(tenant, ndjson("customers.ndjson", [customer_row()]))
    load(tenant, ndjson("products.ndjson", [product_row()]))
    load(tenant, ndjson("orders.ndjson", [order_row()]))


def test_an_upload_is_rejected_by_its_tenants_rules_and_records_the_version(
    client, tenant, ndjson, load
):
    _parents(load, tenant, ndjson)
    _put(client, "order_items", {"schema": {}})
    _put(client, "order_items", {"schema": ITEMS_SCHEMA, "unknown_fields": "reject"})
    rows = [
        order_item_row(order_item_id=uid("ok")),
        order_item_row(order_item_id=uid("many"), quantity=9, line_total="179.91"),
        {**order_item_row(order_item_id=uid("typo")), "discont": "1.00"},
        order_item_row(order_item_id=uid("free"), unit_price="0", line_total="0"),
    ]
    upload = load(tenant, ndjson("order_items.ndjson", rows))
    assert (upload.rows_inserted, upload.rows_rejected, upload.rules_version) == (1, 3, 2)
    shown = client.get(f"/api/v1/ingest/uploads/{upload.id}/").json()
    assert shown["rules_version"] == 2
    assert shown["rows"]["warned"] == 0
    rejects = client.get(f"/api/v1/ingest/uploads/{upload.id}/errors/").json()["results"]
    assert [(r["line"], r["field"], r["code"]) for r in rejects] == [
        (2, "quantity", "rule_violation"),
        (3, "discont", "unknown_field"),
        (4, "unit_price", "rule_violation"),
    ]
    assert rejects[0]["message"] == (
        "9 is greater than the maximum of 5 (rules version 2, at /properties/quantity/maximum)"
    )
    # a string price is seen as the number it is
    assert rejects[2]["message"] == (
        "0 is less than or equal to the minimum of 0 (rules version 2, at "
        "/properties/unit_price/exclusiveMinimum)"
    )
    filtered = client.get(f"/api/v1/ingest/uploads/{upload.id}/errors/", {"code": "unknown_field"})
    assert [r["line"] for r in filtered.json()["results"]] == [3]
    assert list(OrderItem.objects.filter(tenant=tenant).values_list("order_item_id", flat=True))
    assert OrderItem.objects.filter(tenant=tenant).count() == 1


def test_a_warning_rule_loads_the_row_and_lists_its_warnings(client, tenant, ndjson, load):
    _put(
        client,
        "products",
        {
            "schema": {
                "properties": {"sku": {"pattern": "^SKU-[0-9]+$"}, "price": {"maximum": 10}}
            },
            "action": "warn",
        },
    )
    rows = [
        product_row(product_id=uid("a"), sku="SKU-1", price="9.99"),
        product_row(product_id=uid("b"), sku="odd", price="19.99"),
        product_row(product_id=uid("c"), sku="SKU-2", price=12),
    ]
    upload = load(tenant, ndjson("products.ndjson", rows))
    assert Product.objects.filter(tenant=tenant).count() == 3
    shown = client.get(f"/api/v1/ingest/uploads/{upload.id}/").json()
    assert shown["state"] == "completed"
    assert shown["rows"] == {
        "total": 3,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "pending": 0,
        "duplicates": 0,
        "warned": 2,
    }
    assert shown["warnings_url"].endswith(f"/api/v1/ingest/uploads/{upload.id}/warnings/")
    page = client.get(shown["warnings_url"]).json()
    assert page["count"] == 2
    second, third = page["results"]
    assert (second["line"], second["field"], second["code"]) == (2, "sku", "rule_violation")
    assert [e["field"] for e in second["errors"]] == ["sku", "price"]
    assert third == {
        "line": 3,
        "field": "price",
        "code": "rule_violation",
        "message": "12 is greater than the maximum of 10 (rules version 1, at "
        "/properties/price/maximum)",
        "errors": [
            {
                "field": "price",
                "code": "rule_violation",
                "message": "12 is greater than the maximum of 10 (rules version 1, at "
                "/properties/price/maximum)",
            }
        ],
    }
    assert client.get(f"/api/v1/ingest/uploads/{upload.id}/warnings/", {"limit": 1}).json()["next"]


def test_a_warning_rule_warns_across_chunks(client, tenant, ndjson, load):
    """A file of several chunks (pipelined, staged over the second connection): every
    warning is stored once, under its line."""
    _put(
        client,
        "customers",
        {"schema": {"properties": {"name": {"pattern": "^[A-Z]"}}}, "action": "warn"},
    )
    rows = [
        customer_row(customer_id=uid(f"c{n}"), name="ada" if n % 1000 == 0 else "Ada")
        for n in range(5000)
    ]
    upload = load(tenant, ndjson("customers.ndjson", rows))
    upload.refresh_from_db()
    assert (upload.rows_inserted, upload.rows_warned) == (5000, 5)
    lines = client.get(f"/api/v1/ingest/uploads/{upload.id}/warnings/").json()["results"]
    assert [w["line"] for w in lines] == [1, 1001, 2001, 3001, 4001]


def test_after_delete_uploads_meet_the_contract_alone(client, tenant, ndjson, load):
    _put(client, "customers", {"schema": {"properties": {"name": {"maxLength": 2}}}})
    refused = load(tenant, ndjson("customers.ndjson", [customer_row()]))
    assert (refused.rows_rejected, refused.rules_version) == (1, 1)
    client.delete(f"{RULES}customers/")
    taken = load(tenant, ndjson("customers_again.ndjson", [customer_row(), {"x": 1}]))
    assert (taken.rows_inserted, taken.rows_rejected, taken.rules_version) == (1, 1, None)


def test_a_contract_reject_also_lists_what_the_rules_reject_it_for(client, tenant, ndjson, load):
    _put(client, "customers", {"schema": {"properties": {"name": {"maxLength": 2}}}})
    upload = load(tenant, ndjson("customers.ndjson", [customer_row(email="nope")]))
    [reject] = client.get(f"/api/v1/ingest/uploads/{upload.id}/errors/").json()["results"]
    assert reject["code"] == "invalid_email"
    assert [(e["field"], e["code"]) for e in reject["errors"]] == [
        ("email", "invalid_email"),
        ("name", "rule_violation"),
    ]


def test_a_live_batch_is_checked_against_the_rules_and_records_their_versions(client, tenant):
    _put(
        client,
        "customers",
        {"schema": {"properties": {"name": {"maxLength": 5}}}, "action": "warn"},
    )
    _put(
        client,
        "customers",
        {"schema": {"properties": {"name": {"maxLength": 5}}}, "action": "warn"},
    )
    _put(client, "products", {"schema": {"properties": {"price": {"minimum": 1}}}})
    elements = [
        {"type": "customers", "record": customer_row(customer_id=uid("long"), name="Ada Lovelace")},
        {"type": "customers", "record": customer_row(customer_id=uid("short"), name="Ada")},
        {"type": "products", "record": product_row(price="0.50")},
        {"type": "orders", "record": order_row(customer_id=uid("short"))},
    ]
    response = client.post(
        "/api/v1/ingest/records/", json.dumps(elements), content_type="application/json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["rules"] == {"customers": 2, "products": 1}
    assert [(r["line"], r["field"], r["code"]) for r in body["rejects"]] == [
        (3, "price", "rule_violation")
    ]
    assert [(w["line"], w["field"], w["code"]) for w in body["warnings"]] == [
        (1, "name", "rule_violation")
    ]
    assert body["warnings"][0]["errors"] == [
        {k: body["warnings"][0][k] for k in ("field", "code", "message")}
    ]
    assert body["rows"]["warned"] == 1
    parts = {p.record_type: p for p in Upload.objects.filter(batch_id=body["id"])}
    assert {t: (p.rules_version, p.rows_warned) for t, p in parts.items()} == {
        "customers": (2, 1),
        "orders": (None, 0),
    }
    assert records_merge(tenant_id=tenant.id) == 1
    merged = client.get(body["url"]).json()
    assert merged["state"] == "merged"
    assert merged["rows"]["warned"] == 1
    assert merged["rows"]["inserted"] == 3  # both customers and the order
    assert merged["warnings"] == body["warnings"]
    assert "warnings" not in client.get("/api/v1/ingest/records/batches/").json()["results"][0]


def test_each_change_of_the_rules_reaches_the_very_next_batch(client, tenant):
    """The rules a process kept for the tenant's serial are asked again once a PUT or a
    DELETE moves it: each batch is checked with the rules current when it was sent."""

    def send(name: str) -> dict:
        row = customer_row(customer_id=uid(name), name=name)
        response = client.post(
            "/api/v1/ingest/records/customers/", json.dumps([row]), content_type="application/json"
        )
        assert response.status_code == 202, response.content
        body = response.json()
        return {"rules": body["rules"], "rejects": [r["code"] for r in body["rejects"]]}

    short = {"schema": {"properties": {"name": {"maxLength": 3}}}}
    assert send("Grace") == {"rules": {}, "rejects": []}  # kept: no rules
    assert _put(client, "customers", short).status_code == 200
    assert send("Grace") == {"rules": {"customers": 1}, "rejects": ["rule_violation"]}
    assert send("Ada") == {"rules": {"customers": 1}, "rejects": []}
    two = {"schema": {"properties": {"name": {"maxLength": 2}}}}
    assert _put(client, "customers", two).status_code == 200
    assert send("Ada") == {"rules": {"customers": 2}, "rejects": ["rule_violation"]}
    assert client.delete(f"{RULES}customers/").status_code == 204
    assert send("Grace") == {"rules": {}, "rejects": []}
    tenant.refresh_from_db()
    assert tenant.rules_serial == 3


def test_a_dry_run_keeps_its_warnings_rejects_and_version_and_loads_nothing(
    client, tenant, ndjson, load
):
    """A dry run under rules reports what a real run would (rule rejects, warnings, the
    version) and leaves the final tables as they were."""
    _put(
        client, "products", {"schema": {"properties": {"price": {"maximum": 10}}}, "action": "warn"}
    )
    _put(
        client,
        "products",
        {
            "schema": {"properties": {"price": {"maximum": 10}}},
            "action": "warn",
            "unknown_fields": "reject",
        },
    )
    rows = [
        product_row(product_id=uid("a"), price="9.99"),
        product_row(product_id=uid("b"), price="19.99"),
        {**product_row(product_id=uid("c")), "colour": "red"},
    ]
    path = ndjson("products.ndjson", rows)
    dry = load(tenant, path, dry_run=True)
    assert Product.objects.filter(tenant=tenant).count() == 0
    real = load(tenant, ndjson("products_real.ndjson", rows))
    for upload in (dry, real):
        upload.refresh_from_db()
    assert (dry.dry_run, dry.rules_version, dry.rows_warned) == (True, 2, 1)
    assert (real.rules_version, real.rows_warned) == (2, 1)

    def report(upload):
        base = f"/api/v1/ingest/uploads/{upload.id}/"
        shown = client.get(base).json()
        warnings = client.get(f"{base}warnings/").json()["results"]
        rejects = client.get(f"{base}errors/").json()["results"]
        return shown["rows"], warnings, [(r["line"], r["code"]) for r in rejects]

    assert report(dry) == report(real)
    assert report(dry)[2] == [(3, "unknown_field")]
