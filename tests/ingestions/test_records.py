"""Live records (SPEC 9): the batch API, its rejects, limits, idempotency, and the merge
(called as the worker calls it) with its pending rules across batches and files."""

from __future__ import annotations

import json

import pytest

from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import Customer, Order, OrderItem, RecordBatch, Upload
from apps.ingestions.services import records_merge

pytestmark = pytest.mark.django_db

NDJSON = "application/x-ndjson"


def _post(client, path, body, content_type=NDJSON, **headers):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode() if content_type == "application/json" else body
    return client.generic("POST", path, body, content_type=content_type, **headers)


def _post_rows(client, record_type, rows, **headers):
    return _post(client, f"/api/v1/ingest/records/{record_type}/", ndjson_bytes(rows), **headers)


def test_a_batch_is_accepted_and_merged_with_its_rows_counted(client, tenant):
    """Two valid customers: 202 with the batch; merged, both inserted, the batch merged."""
    rows = [customer_row(customer_id=uid("a")), customer_row(customer_id=uid("b"))]
    response = _post_rows(client, "customers", rows)
    assert response.status_code == 202, response.content
    body = response.json()
    assert {k: body[k] for k in ("type", "state", "records", "rejected", "rejects")} == {
        "type": "customers",
        "state": "accepted",
        "records": 2,
        "rejected": 0,
        "rejects": [],
    }
    assert response["Location"] == body["url"]
    assert records_merge(tenant_id=tenant.id) == 1
    assert Customer.objects.filter(tenant=tenant).count() == 2
    shown = client.get(body["url"]).json()
    assert shown["state"] == "merged"
    assert shown["rows"] == {
        "total": 2,
        "inserted": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "pending": 0,
        "duplicates": 0,
        "warned": 0,
    }
    assert records_merge(tenant_id=tenant.id) == 0  # a second run finds nothing to do


BAD = [
    (b"{not json", "", "invalid_json"),
    (b"[1, 2]", "", "not_an_object"),
    (json.dumps(customer_row(email="nope")).encode(), "email", "invalid_email"),
    (json.dumps({**customer_row(), "customer_id": "x"}).encode(), "customer_id", "invalid_uuid"),
    (
        json.dumps({k: v for k, v in customer_row().items() if k != "name"}).encode(),
        "name",
        "missing_field",
    ),
]


@pytest.mark.parametrize(("line", "field", "code"), BAD)
def test_a_bad_record_is_rejected_in_the_answer_exactly_as_in_a_file(
    client, tenant, load, ndjson, line, field, code
):
    """The answer's reject (line = position) is the one a file of the same lines gets."""
    good = customer_row(customer_id=uid("good"))
    response = _post_rows(client, "customers", [good, line])
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["records"], body["rejected"]) == (2, 1)
    [reject] = body["rejects"]
    assert (reject["line"], reject["field"], reject["code"]) == (2, field, code)
    assert reject["errors"] == [{k: reject[k] for k in ("field", "code", "message")}]
    upload = load(tenant, ndjson("customers_x.ndjson", [good, line]))
    [as_file] = client.get(f"/api/v1/ingest/uploads/{upload.id}/errors/").json()["results"]
    assert reject == as_file
    records_merge(tenant_id=tenant.id)
    errors = client.get(body["errors_url"]).json()
    assert [e["code"] for e in errors["results"]] == [code]


def test_a_json_array_batch_keeps_decimals_exact_and_numbers_positions(client, tenant):
    """A JSON array: `line` is the 1-based position; a price sent as a number is exact."""
    rows = [product_row(product_id=uid("p9"), price=None), product_row(product_id=uid("p8"))]
    body = b"[%s,\n %s]" % (
        json.dumps(rows[0]).replace("null", "12345678.91").encode(),
        json.dumps({**rows[1], "active": "yes"}).encode(),
    )
    response = _post(client, "/api/v1/ingest/records/products/", body, "application/json")
    assert response.status_code == 202, response.content
    assert [(r["line"], r["code"]) for r in response.json()["rejects"]] == [(2, "invalid_type")]
    records_merge(tenant_id=tenant.id)
    from apps.ingestions.models import Product

    assert str(Product.objects.get(tenant=tenant).price) == "12345678.91"


def test_a_mixed_batch_loads_parents_first_and_rejects_bad_elements(client, tenant):
    """Mixed elements: an item, its order and customer and product, in any order; a bad
    element (unknown type, no record) is rejected with its position."""
    elements = [
        {"type": "order_items", "record": order_item_row()},
        {"type": "orders", "record": order_row()},
        {"type": "customers", "record": customer_row()},
        {"type": "products", "record": product_row()},
        {"type": "invoices", "record": {}},
        {"type": "orders"},
        7,
    ]
    response = _post(client, "/api/v1/ingest/records/", elements, "application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["type"] == "mixed"
    assert [(r["line"], r["field"], r["code"]) for r in body["rejects"]] == [
        (5, "type", "invalid_type"),
        (6, "record", "missing_field"),
        (7, "", "not_an_object"),
    ]
    records_merge(tenant_id=tenant.id)
    assert OrderItem.objects.filter(tenant=tenant).count() == 1
    rows = client.get(body["url"]).json()["rows"]
    assert (rows["total"], rows["inserted"], rows["rejected"], rows["pending"]) == (7, 4, 3, 0)


def test_a_mixed_ndjson_batch_is_accepted(client, tenant):
    """Mixed elements as NDJSON lines."""
    lines = [
        {"type": "customers", "record": customer_row()},
        {"type": "orders", "record": order_row()},
    ]
    response = _post(client, "/api/v1/ingest/records/", ndjson_bytes(lines))
    assert response.status_code == 202, response.content
    records_merge(tenant_id=tenant.id)
    assert Order.objects.filter(tenant=tenant).count() == 1


def test_an_order_before_its_customer_is_held_then_loaded_by_a_later_batch(client, tenant):
    """An order whose customer comes in a later batch is pending, then inserted."""
    first = _post_rows(client, "orders", [order_row()]).json()
    records_merge(tenant_id=tenant.id)
    assert client.get(first["url"]).json()["rows"]["pending"] == 1
    _post_rows(client, "customers", [customer_row()])
    records_merge(tenant_id=tenant.id)
    rows = client.get(first["url"]).json()["rows"]
    assert (rows["pending"], rows["inserted"]) == (0, 1)
    assert Order.objects.filter(tenant=tenant).count() == 1


def test_held_records_and_files_resolve_each_other_in_both_directions(client, tenant, load, ndjson):
    """A batch's order waits for a file's customer; a file's order for a batch's customer."""
    _post_rows(client, "orders", [order_row()])
    records_merge(tenant_id=tenant.id)
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    assert Order.objects.filter(tenant=tenant).count() == 1
    c2 = uid("c2")
    file_upload = load(
        tenant, ndjson("orders_2.ndjson", [order_row(order_id=uid("o2"), customer_id=c2)])
    )
    assert file_upload.rows_pending == 1
    _post_rows(client, "customers", [customer_row(customer_id=c2)])
    records_merge(tenant_id=tenant.id)
    file_upload.refresh_from_db()
    assert (file_upload.rows_pending, file_upload.rows_inserted) == (0, 1)
    assert Order.objects.filter(tenant=tenant).count() == 2


def test_a_later_batch_wins_for_the_same_id(client, tenant):
    """Merged in the order accepted: the later batch's name stays."""
    _post_rows(client, "customers", [customer_row(name="first")])
    _post_rows(client, "customers", [customer_row(name="second")])
    records_merge(tenant_id=tenant.id)
    assert Customer.objects.get(tenant=tenant).name == "second"


def test_live_parts_are_not_listed_as_uploads(client, tenant):
    """The batch's stored parts are no uploads of the API."""
    _post_rows(client, "customers", [customer_row()])
    assert Upload.objects.filter(tenant=tenant).count() == 1
    assert client.get("/api/v1/ingest/uploads/").json()["results"] == []


def test_over_the_record_or_byte_limit_is_413_and_nothing_is_stored(client, tenant, settings):
    """More records or bytes than the limits: 413, no batch."""
    settings.LIVE_MAX_RECORDS = 2
    rows = [customer_row(customer_id=uid(f"c{n}")) for n in range(3)]
    assert _post_rows(client, "customers", rows).status_code == 413
    settings.LIVE_MAX_RECORDS = 10
    settings.LIVE_MAX_BYTES = 100
    assert _post_rows(client, "customers", rows).status_code == 413
    assert not RecordBatch.objects.exists()


def test_an_empty_batch_or_unknown_type_is_400(client, tenant):
    """Nothing to accept, or no such record type."""
    assert _post(client, "/api/v1/ingest/records/customers/", b"\n").status_code == 400
    assert _post(client, "/api/v1/ingest/records/invoices/", b"{}\n").status_code == 400
    # a GET of a path under /records/ that names no type is no resource: 404, not 405
    assert client.get("/api/v1/ingest/records/uploads/").status_code == 404
    assert client.get("/api/v1/ingest/records/customers/").status_code == 405
    # OPTIONS too: it described the create endpoint for a type there is none of (200)
    assert client.options("/api/v1/ingest/records/bogus/").status_code == 404
    assert client.options("/api/v1/ingest/records/customers/").status_code == 200
    assert (
        _post(client, "/api/v1/ingest/records/customers/", b"{", "application/json").status_code
        == 400
    )


def test_idempotency_key_replays_refuses_another_request(client, tenant):
    """Same key, same batch: replayed, one batch; same key, other batch: 422."""
    first = _post_rows(client, "customers", [customer_row()], HTTP_IDEMPOTENCY_KEY="k1")
    again = _post_rows(client, "customers", [customer_row()], HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert RecordBatch.objects.count() == 1
    other = _post_rows(client, "customers", [customer_row(name="x")], HTTP_IDEMPOTENCY_KEY="k1")
    assert other.status_code == 422


def test_idempotency_key_in_flight_is_409(client, tenant, key_in_flight):
    """The same key while the first request is still in flight: 409."""
    key_in_flight(tenant, "k2")
    response = _post_rows(client, "customers", [customer_row()], HTTP_IDEMPOTENCY_KEY="k2")
    assert response.status_code == 409


def test_another_tenant_sees_no_batch(client, client_for, other_tenant):
    """Another tenant's batch is 404, and not listed."""
    url = _post_rows(client, "customers", [customer_row()]).json()["url"]
    other = client_for(other_tenant)
    assert other.get(url).status_code == 404
    assert other.get(url + "errors/").status_code == 404
    assert other.get("/api/v1/ingest/records/batches/").json()["results"] == []
    assert len(client.get("/api/v1/ingest/records/batches/").json()["results"]) == 1


def test_batches_are_listed_by_type_and_an_unknown_type_is_400(client):
    """`?type=` keeps one type's batches (or the mixed ones); a type that is none is 400."""
    _post_rows(client, "customers", [customer_row()])
    _post_rows(client, "orders", [order_row()])
    listed = "/api/v1/ingest/records/batches/"
    by_type = {
        kind: [batch["type"] for batch in client.get(f"{listed}?type={kind}").json()["results"]]
        for kind in ("customers", "orders", "products", "mixed")
    }
    assert by_type == {
        "customers": ["customers"],
        "orders": ["orders"],
        "products": [],
        "mixed": [],
    }
    refused = client.get(f"{listed}?type=invoices")
    assert (refused.status_code, list(refused.json()["errors"])) == (400, ["type"])


def test_a_backlog_over_the_limit_is_429_with_retry_after_and_nothing_dropped(
    client, tenant, settings
):
    """Past the unmerged backlog limit: 429 with Retry-After; accepted batches still merge."""
    settings.LIVE_BACKLOG_LIMIT = 2
    rows = [customer_row(customer_id=uid(f"c{n}")) for n in range(2)]
    assert _post_rows(client, "customers", rows).status_code == 202
    refused = _post_rows(client, "customers", [customer_row(customer_id=uid("c9"))])
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(settings.LIVE_RETRY_AFTER_SECONDS)
    assert refused["Content-Type"].startswith("application/problem+json")
    records_merge(tenant_id=tenant.id)
    assert Customer.objects.filter(tenant=tenant).count() == 2
    assert _post_rows(client, "customers", [customer_row(customer_id=uid("c9"))]).status_code == 202


def test_a_mixed_batch_is_stored_as_one_part_per_type_read_back_through_the_models(client, tenant):
    """What the one-statement store writes is what the models describe: the batch as the
    202 shows it (and its detail), one part per type with each accepted row at its line,
    blank lines elsewhere, its sha256 and size; a refused batch stores nothing."""
    import hashlib

    elements = [
        {"type": "orders", "record": order_row(order_id=uid("o1"), customer_id=uid("c1"))},
        {"type": "customers", "record": customer_row(customer_id=uid("c1"))},
        {"type": "nope", "record": {}},
        {"type": "orders", "record": order_row(order_id=uid("o2"), customer_id=uid("c1"))},
    ]
    answer = _post(client, "/api/v1/ingest/records/", elements, content_type="application/json")
    assert answer.status_code == 202, answer.content
    batch = RecordBatch.objects.get(id=answer.json()["id"])
    assert (batch.tenant_id, batch.record_type, batch.state) == (tenant.id, "mixed", "accepted")
    assert (batch.records, batch.rejected, batch.accepted) == (4, 1, 3)
    assert [(r["line"], r["code"]) for r in batch.rejects] == [(3, "invalid_type")]
    assert client.get(answer.json()["url"]).json() == answer.json()

    parts = {p.record_type: p for p in Upload.objects.filter(batch=batch)}
    assert sorted(parts) == ["customers", "orders"]
    for record_type, lines in (("customers", [2]), ("orders", [1, 4])):
        part = parts[record_type]
        body = bytes(part.body)
        assert (part.tenant_id, part.state, part.source, part.blob_id) == (
            tenant.id,
            "received",
            "live",
            None,
        )
        assert part.filename == f"batch_{batch.id}_{record_type}.ndjson"
        assert (part.sha256, part.size_bytes) == (hashlib.sha256(body).hexdigest(), len(body))
        written = body.decode().split("\n")[:-1]
        assert [n for n, line in enumerate(written, start=1) if line] == lines
        for n in lines:
            assert json.loads(written[n - 1]) == json.loads(json.dumps(elements[n - 1]["record"]))


def test_a_batch_refused_for_the_backlog_stores_neither_batch_nor_part(client, settings):
    settings.LIVE_BACKLOG_LIMIT = 1
    assert _post_rows(client, "customers", [customer_row(customer_id=uid("c1"))]).status_code == 202
    before = (RecordBatch.objects.count(), Upload.objects.count())
    refused = _post_rows(client, "customers", [customer_row(customer_id=uid("c2"))])
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("1 accepted records are waiting")
    assert (RecordBatch.objects.count(), Upload.objects.count()) == before


# --- GET /ingest/records/batches/{id}/errors/: as an upload's errors ------------------------


@pytest.fixture
def rejected_batch(client, tenant) -> dict:
    """A batch of four orders: lines 1 and 3 rejected at once, lines 2 and 4 held for
    customers that never come, merged, then expired into orphans."""
    from datetime import timedelta

    from apps.ingestions.services import pending_expire

    rows = [
        b"{oops",
        order_row(order_id=uid("o2"), customer_id=uid("never-2")),
        {**order_row(order_id=uid("o3")), "customer_id": "x"},
        order_row(order_id=uid("o4"), customer_id=uid("never-4")),
    ]
    batch = _post_rows(client, "orders", rows).json()
    records_merge(tenant_id=tenant.id)
    assert pending_expire(retention=timedelta(0)) == 2
    return batch


def _lines_and_codes(rejects) -> list[tuple[int, str]]:
    return [(r["line"], r["code"]) for r in rejects]


def test_a_batchs_errors_are_its_rejects_and_orphans_paginated_in_line_order(
    client, rejected_batch
):
    """JSON pages of {line, field, code, message, errors, raw}: the batch's rejects at acceptance
    and its merge's orphans, by line; `limit`/`offset` as for an upload's errors."""
    url = rejected_batch["errors_url"]
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (4, None, None)
    assert _lines_and_codes(body["results"]) == [
        (1, "invalid_json"),
        (2, "orphan"),
        (3, "invalid_uuid"),
        (4, "orphan"),
    ]
    assert set(body["results"][1]) == {"line", "field", "code", "message", "errors", "raw"}
    assert json.loads(body["results"][1]["raw"])["order_id"] == uid("o2")  # the line as sent
    page = client.get(url, {"limit": 2, "offset": 1}).json()
    assert (page["count"], page["results"]) == (4, body["results"][1:3])
    assert page["next"] == f"{url}?limit=2&offset=3"
    assert client.get(url, {"limit": 0}).status_code == 400


@pytest.mark.parametrize("how", ["accept", "format"])
def test_a_batchs_errors_are_streamed_as_ndjson(client, rejected_batch, how):
    """`Accept: application/x-ndjson` or `?format=ndjson`: every reject, one per line, the
    same objects as the JSON pages."""
    url = rejected_batch["errors_url"]
    if how == "accept":
        response = client.get(url, HTTP_ACCEPT="application/x-ndjson")
    else:
        response = client.get(url, {"format": "ndjson"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Last-Modified"]
    content = b"".join(response.streaming_content).decode()
    assert content.endswith("\n")
    streamed = [json.loads(line) for line in content.splitlines()]
    assert streamed == client.get(url).json()["results"]


def test_a_batchs_errors_filter_by_code_and_refuse_an_unknown_one(client, rejected_batch):
    """`?code=` keeps that code's rejects (acceptance or merge), in JSON and NDJSON; an
    unknown code is a 400 naming the codes there are."""
    url = rejected_batch["errors_url"]
    orphans = client.get(url, {"code": "orphan"}).json()
    assert (orphans["count"], _lines_and_codes(orphans["results"])) == (
        2,
        [(2, "orphan"), (4, "orphan")],
    )
    stream = client.get(url, {"code": "invalid_json", "format": "ndjson"})
    content = b"".join(stream.streaming_content).decode()
    assert _lines_and_codes(map(json.loads, content.splitlines())) == [(1, "invalid_json")]
    assert client.get(url, {"code": "line_too_long"}).json()["count"] == 0
    refused = client.get(url, {"code": "nope"})
    assert refused.status_code == 400
    assert refused["Content-Type"].startswith("application/problem+json")
    assert "orphan" in json.dumps(refused.json())
    assert client.get(url, {"code": ["orphan", "invalid_json"]}).status_code == 400


def test_a_clean_batchs_errors_are_empty_and_another_tenant_gets_404(
    client, client_for, other_tenant
):
    """No rejects: an empty page, an empty stream; another tenant's: 404 in both forms."""
    url = _post_rows(client, "customers", [customer_row()]).json()["errors_url"]
    assert client.get(url).json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert b"".join(client.get(url, {"format": "ndjson"}).streaming_content) == b""
    other = client_for(other_tenant)
    assert other.get(url, HTTP_ACCEPT="application/x-ndjson").status_code == 404
    assert other.get(url, {"format": "ndjson"}).status_code == 404


def test_the_batch_list_counts_rejects_and_leaves_them_to_the_detail(client):
    """A listed batch has the detail's fields but `rejects` (one per bad record, up to the
    batch size), which it does not even read, and `warnings`: `rejected` and `errors_url`
    lead to the rejects; the detail keeps them. Listing more batches takes no more queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def listed() -> tuple[list[dict], list[str]]:
        with CaptureQueriesContext(connection) as queries:
            results = client.get("/api/v1/ingest/records/batches/").json()["results"]
        return results, [q["sql"] for q in queries.captured_queries]

    posted = _post_rows(client, "customers", [b"{oops", customer_row(), b"[1]"]).json()
    _, fewer = listed()
    _post_rows(client, "customers", [customer_row(customer_id=uid("c2"))])
    _post_rows(client, "customers", [customer_row(customer_id=uid("c3"))])
    batches, queries = listed()
    assert len(queries) == len(fewer)
    assert not [q for q in queries if '"record_batches"."rejects"' in q]
    assert [b["id"] for b in batches] == [posted["id"] + 2, posted["id"] + 1, posted["id"]]
    detail = client.get(posted["url"]).json()
    assert batches[2] == {k: v for k, v in detail.items() if k not in ("rejects", "warnings")}
    assert (batches[2]["rejected"], batches[2]["errors_url"]) == (2, posted["errors_url"])
    assert [r["line"] for r in detail["rejects"]] == [1, 3]


def test_a_new_batchs_answer_reads_none_of_its_parts_back(client, tenant):
    """The 202 is built from what was stored: the key, the rules, the one statement that
    stores the batch and the merge request's read; never a read of its parts. Its counts,
    records warned by the tenant's rules included, are those of its detail."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.ingestions.services import rules_put

    rules_put(
        tenant=tenant,
        record_type="customers",
        schema={"properties": {"name": {"maxLength": 3}}},
        action="warn",
        unknown_fields="ignore",
    )
    rows = [
        customer_row(customer_id=uid("w1"), name="Long name"),
        customer_row(customer_id=uid("w2"), name="Ada"),
        b"{oops",
    ]
    with CaptureQueriesContext(connection) as queries:
        answer = _post_rows(client, "customers", rows)
    assert answer.status_code == 202, answer.content
    # (the key's last use is written at most once a minute: not counted)
    sql = [q["sql"] for q in queries.captured_queries if "UPDATE api_keys" not in q["sql"]]
    assert not [q for q in sql if 'FROM "uploads"' in q], sql
    assert len(sql) <= 4, [q[:60] for q in sql]
    body = answer.json()
    assert body["rows"] == {
        "total": 3,
        "inserted": 0,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "pending": 0,
        "duplicates": 0,
        "warned": 1,
    }
    assert client.get(body["url"]).json()["rows"] == body["rows"]


def test_a_merge_takes_one_micro_batch_unless_more_were_waiting(client, tenant, settings):
    """Five batches waiting, two records a transaction: three transactions in one merge.
    Then one batch: one transaction, and the merge returns (what arrives later sends the
    next merge)."""
    settings.LIVE_MERGE_RECORDS = 2
    for n in range(5):
        assert (
            _post_rows(client, "customers", [customer_row(customer_id=uid(f"m{n}"))]).status_code
            == 202
        )
    assert records_merge(tenant_id=tenant.id) == 5
    merged = RecordBatch.objects.filter(tenant=tenant, state="merged")
    assert merged.values("merged_at").distinct().count() == 3
    assert (
        _post_rows(client, "customers", [customer_row(customer_id=uid("late"))]).status_code == 202
    )
    assert records_merge(tenant_id=tenant.id) == 1
    assert Customer.objects.filter(tenant=tenant).count() == 6
